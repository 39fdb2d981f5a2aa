package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sethvargo/go-retry"
	"github.com/spf13/cobra"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
)

func init() {
	register(func() *cobra.Command {
		cmd := &cobra.Command{
			Use:   "report",
			Short: "Work with drill and verify reports (merge shards)",
			Args:  noArgs,
		}
		cmd.AddCommand(reportMergeCmd())
		return cmd
	})
}

// mergeResult is report merge's --output json result.
type mergeResult struct {
	Out    string   `json:"out"`
	Files  []string `json:"files"`
	Kind   string   `json:"kind"`
	Shards int      `json:"shards"`
	SHA256 string   `json:"sha256"`
	Passed bool     `json:"passed"`
}

func reportMergeCmd() *cobra.Command {
	var (
		out    string
		force  bool
		asJSON bool
		wait   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "merge --out PATH FILE.json...",
		Short: "Combine the reports of the shards of one verify or drill into the report of the whole table",
		Long: `merge reads the JSON reports of envdr verify --shard i/N (or drill --lose R --shard i/N),
i = 1 ... N, checks each one's SHA-256 digest, and writes the report of the whole scan: counts,
per-region tallies and failures added up, the shards' earliest start and latest end, judged again
(drill: by the first shard's thresholds), with a digest of its own and the shards' digests under
"merged_from". envdr drill verify-report checks it like any report.

The files must be exactly the shards 1/N ... N/N of one scan (one table, the same regions; for a
drill, the same lost region): a missing, repeated or foreign shard is refused.

--out PATH writes PATH.json (a drill also PATH.md and PATH.html); an existing file is never
overwritten without --force.

Reports on S3: a FILE may be s3://bucket/key.json (the shards of the ECS module's scheduled scan
write theirs there with --report s3://...), and --out s3://bucket/prefix files the merged report
as prefix.json (and .md, .html) with conditional PUTs. Each bucket is reached through its region
in the --config (regions[].bucket; else the home region); merging needs s3:GetObject on the
shards' reports and s3:PutObject on the merged one.

--wait DURATION first waits, up to DURATION, until every named file exists: the merge step of
a sharded run that starts with the shards (the Helm chart's scan Job, the ECS module's merge
task), so it needs nothing to run it after them. Each shard writes its report through a rename
(on S3, one PUT), so a report that exists is whole. A report still missing at the end is a
failure that names it.

Exit status: 0 merged and the whole scan passed, 1 merged and it failed (the report is still
written), or a report's digest did not match, 2 bad usage or not one scan's shards.`,
		Example: `  # four shards of one verify, e.g. a Kubernetes Indexed Job with completions: 4
  for i in 1 2 3 4; do envdr verify --shard $i/4 --segments 8 --report shards/verify-$i & done; wait
  envdr report merge --out reports/verify shards/verify-*.json
  envdr drill verify-report reports/verify.json
  # the ECS module's scan: four shards' reports on S3, merged beside them
  P=s3://acme-envdr-reports/scans/verify-2026-12-07T03:00:00Z
  envdr report merge --wait 12h --out $P/merged $P/shard-1.json $P/shard-2.json $P/shard-3.json $P/shard-4.json`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError("name the shards' report files")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if out == "" {
				return usageError("--out PATH is required")
			}
			if wait < 0 {
				return usageError("--wait %s: use a positive duration such as 24h", wait)
			}
			ctx := c.Context()
			files := &reportFiles{}
			_, _, js := recovery.ReportPaths(out)
			if wait > 0 {
				if err := waitForFiles(ctx, files, args, wait); err != nil {
					return readFailure(err)
				}
			}
			var kinds []string
			var bodies [][]byte
			for _, f := range args {
				b, err := files.read(ctx, f)
				if err != nil {
					return readFailure(err)
				}
				bodies = append(bodies, b)
				kinds = append(kinds, recovery.ReportKind(b))
			}
			for i, k := range kinds {
				if k == recovery.GamedayReportKind {
					return usageError("%s is a game day report: game days are not sharded, there is nothing to merge", args[i])
				}
				if k != kinds[0] {
					return usageError("%s is a %s report and %s a %s report: merge one kind at a time", args[0], kinds[0], args[i], k)
				}
			}
			var cfg *config.Config
			if regions.IsS3URI(out) {
				var err error
				if cfg, err = files.config(); err != nil {
					return err
				}
			}
			if err := checkReportTarget(ctx, cfg, out, force, c.CommandPath(), "", kinds[0] == "verify"); err != nil {
				return err
			}
			res := mergeResult{Out: js, Files: args, Kind: kinds[0], Shards: len(args)}
			switch kinds[0] {
			case "verify":
				var parts []*recovery.VerifyResult
				for i, b := range bodies {
					r, err := recovery.VerifyVerifyReport(b)
					if err != nil {
						return withCode(exitFailure, fmt.Errorf("%s: %w", args[i], err))
					}
					parts = append(parts, r)
				}
				m, err := recovery.MergeVerify(parts)
				if err != nil {
					return usageError("%v", err)
				}
				b, err := m.JSON()
				if err != nil {
					return withCode(exitFailure, err)
				}
				if _, err := writeVerifyReport(ctx, cfg, out, force, b); err != nil {
					return withCode(exitFailure, err)
				}
				res.SHA256, res.Passed = m.SHA256, m.Passed
				if !asJSON {
					writeVerifySummary(c.OutOrStdout(), m.VerifyReport)
				}
			default:
				var parts []*recovery.DrillReport
				for i, b := range bodies {
					r, err := recovery.VerifyDrillReport(b)
					if err != nil {
						return withCode(exitFailure, fmt.Errorf("%s: %w", args[i], err))
					}
					parts = append(parts, r)
				}
				m, err := recovery.MergeDrill(parts)
				if err != nil {
					return usageError("%v", err)
				}
				if _, err := writeReport(ctx, cfg, out, force, "", m); err != nil {
					return withCode(exitFailure, err)
				}
				res.SHA256, res.Passed = m.SHA256, m.Passed
				if !asJSON {
					writeDrillSummary(c.OutOrStdout(), m)
				}
			}
			fmt.Fprintf(c.ErrOrStderr(), "report: %s (merged from %d shards, sha256 %s)\n", js, len(args), res.SHA256)
			if asJSON {
				if err := writeJSON(c.OutOrStdout(), res); err != nil {
					return withCode(exitFailure, err)
				}
			}
			if !res.Passed {
				return withCode(exitFindings, fmt.Errorf("report merge: the whole %s FAILED (see %s)", res.Kind, js))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "write the merged report to PATH.json (a drill also PATH.md, PATH.html)")
	f.BoolVar(&force, "force", false, "overwrite existing --out files")
	f.DurationVar(&wait, "wait", 0, "wait up to this long for every named file to exist (the shards still running), then merge")
	addOutputFlag(cmd, &asJSON)
	return cmd
}

// waitPoll is how often merge --wait looks for the shards' reports: a shard runs for minutes to
// days, so a few seconds late is nothing, and a stat every few seconds costs nothing.
var waitPoll = 5 * time.Second

// waitForFiles returns when every file (or s3:// object) exists, or an error naming those still
// missing after max (or when ctx ends: SIGTERM).
func waitForFiles(ctx context.Context, rf *reportFiles, files []string, max time.Duration) error {
	var missing []string
	check := func(ctx context.Context) error {
		missing = missing[:0]
		for _, f := range files {
			ok, err := rf.present(ctx, f)
			if err != nil {
				return err // unreadable, not absent: waiting would not help
			}
			if !ok {
				missing = append(missing, f)
			}
		}
		if len(missing) > 0 {
			return retry.RetryableError(fmt.Errorf("%d of %d reports missing", len(missing), len(files)))
		}
		return nil
	}
	err := retry.Do(ctx, retry.WithMaxDuration(max, retry.NewConstant(waitPoll)), check)
	if err != nil && len(missing) > 0 {
		hint := ""
		if rf.denied {
			hint = " (S3 answered 403 AccessDenied: a missing object without s3:ListBucket on the bucket, or one this identity may not s3:GetObject)"
		}
		return fmt.Errorf("report merge: after waiting %s, still no %s%s", max, strings.Join(missing, ", "), hint)
	}
	return err
}
