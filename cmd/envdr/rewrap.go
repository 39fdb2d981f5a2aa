package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/recovery"
)

func init() {
	register(func() *cobra.Command {
		var (
			opts       recovery.RewrapOptions
			since      string
			asJSON     bool
			quiet      bool
			checkpoint string
			check      bool
			shard      shardSpec
		)
		cmd := &cobra.Command{
			Use:   "rewrap [--region R] [--to-key ARN] [--dry-run | --check] [--shard i/N]",
			Short: "Re-wrap data keys after a key rotation, a key change, or a new region (backfill)",
			Long: `rewrap re-makes region R's wrap of every record that needs it:

  - after a rotation of R's key: wraps made before the key's latest rotation (ListKeyRotations;
    override with --since) move to the new key material;
  - when moving R to another key (--to-key, a key or alias ARN in R): wraps under any other key;
  - after adding R to the config: records with no wrap for R are backfilled.

For multi-Region keys the new wrap is made with ReEncrypt inside KMS in R, so the data key never
leaves KMS; for independent keys a backfill decrypts once in a region that holds a wrap and
encrypts in R, wiping the data key at once. Every new wrap is decrypted once in R and its key
commitment checked before a conditional write replaces the old one.

Progress is saved per scan page in a checkpoint file (--checkpoint; default under
$XDG_STATE_HOME/envdr or ~/.local/state/envdr): an interrupted run resumes where it stopped, and
because a re-made wrap no longer needs re-making, every record is re-wrapped exactly once. The
checkpoint is removed when the run finishes. KMS calls obey the region's kms_rate; --rate caps
records per second further.

--shard i/N re-makes the wraps of this process's part of one parallel scan of --segments x N
segments, so N processes (a Kubernetes Indexed Job, N ECS tasks) rewrap a region together and
between them read every record once. Give every shard the same --segments. Each shard keeps its
own checkpoint (default rewrap-TABLE-REGION-shard-i-of-N.json; a --checkpoint path must differ
per shard), so each resumes on its own; a checkpoint of another shard, or of a whole scan, is
refused. kms_rate and --rate are per process: N shards spend N times the rate.

A wrap that opens to another data key than the record's commitment names (a bad wrap) counts
as none: it is replaced from another region's good wrap, never re-wrapped.

--check counts, without any KMS call or write, the records whose wrap in R still needs
rewrapping (missing, under another key than the target, or made before its latest rotation),
and exits 1 if there are any: with verify --require-current, the gate before an old key is
retired (docs/DRILLS.md).

Without --region every configured region is rewrapped in turn. Exit status: 0 done (--check:
nothing left to rewrap), 1 some records failed (named), the run was interrupted, or --check
found records to rewrap, 2 bad usage or config.`,
			Example: `  # after aws kms rotate-key-on-demand on the primary
  envdr --config local/envdr.yaml rewrap --region eu-west-1
  # preview only
  envdr rewrap --region eu-west-1 --dry-run
  # the retirement gate: exit 1 while any wrap in eu-west-1 still needs rewrapping
  envdr rewrap --region eu-west-1 --check
  # move a region to another key
  envdr rewrap --region eu-west-1 --to-key arn:aws:kms:eu-west-1:111122223333:key/1234abcd-...
  # backfill a region just added to the config
  envdr rewrap --region us-west-2
  # the second of four processes rewrapping eu-west-1 together (each resumes on its own)
  envdr rewrap --region eu-west-1 --shard 2/4 --segments 8`,
			Args: noArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				// A scan's live heap is small and flat: collect less often (as envdr run does).
				tuneGC()
				if since != "" {
					t, err := time.Parse(time.RFC3339, since)
					if err != nil {
						return usageError("--since %q: want an RFC 3339 time, e.g. 2026-01-02T15:04:05Z", since)
					}
					opts.Since = t
				}
				if shard.spec != "" {
					s, err := shard.parse()
					if err != nil {
						return usageError("%v", err)
					}
					opts.Shard = s
				}
				if check {
					if opts.DryRun {
						return usageError("--check and --dry-run: pick one (--check is a dry run that fails when anything is left)")
					}
					opts.DryRun = true
				}
				targets := cfg.RegionNames()
				if opts.Region != "" {
					if _, ok := cfg.Region(opts.Region); !ok {
						return usageError("--region %s is not configured (configured: %v)", opts.Region, cfg.RegionNames())
					}
					targets = []string{opts.Region}
				} else if opts.ToKey != "" || checkpoint != "" {
					return usageError("--to-key and --checkpoint need --region (they belong to one region)")
				}
				var reports []*recovery.RewrapReport
				var failed int64
				for _, region := range targets {
					o := opts
					o.Region, o.Checkpoint = region, checkpoint
					p := recovery.NewProgress(c.ErrOrStderr(), "rewrap "+region, quiet)
					o.Progress, o.Total = p.Add, p.SetTotal
					rep, err := recovery.Rewrap(c.Context(), cfg, o)
					p.Finish()
					if err != nil {
						return withCode(exitFailure, err)
					}
					reports = append(reports, rep)
					if !asJSON {
						writeRewrapSummary(c.OutOrStdout(), rep)
					}
					failed += rep.Failed
					if rep.Interrupted {
						break
					}
				}
				if asJSON {
					enc := json.NewEncoder(c.OutOrStdout())
					enc.SetIndent("", "  ")
					if err := enc.Encode(reports); err != nil {
						return withCode(exitFailure, err)
					}
				}
				last := reports[len(reports)-1]
				switch {
				case last.Interrupted:
					return withCode(exitFailure, fmt.Errorf("rewrap %s interrupted after %d records; run the same command again to resume from %s",
						last.Region, last.Records, last.Checkpoint))
				case failed > 0:
					var all []recovery.Failure
					for _, r := range reports {
						all = append(all, r.Failures...)
					}
					return withCode(exitFindings, fmt.Errorf("rewrap: %d records failed: %s", failed, failureNames(all, 0)))
				case check:
					var left int64
					var where []string
					for _, r := range reports {
						if r.Changed > 0 {
							left += r.Changed
							where = append(where, fmt.Sprintf("%s: %d", r.Region, r.Changed))
						}
					}
					if left > 0 {
						return withCode(exitFindings, fmt.Errorf("rewrap --check: %d records still need rewrapping (%s); run envdr rewrap without --check",
							left, strings.Join(where, ", ")))
					}
				}
				return nil
			},
		}
		f := cmd.Flags()
		f.StringVar(&opts.Region, "region", "", "region whose wraps are re-made (default: every region in turn)")
		f.StringVar(&opts.ToKey, "to-key", "", "target key or alias ARN in the region (default: the configured key)")
		f.StringVar(&since, "since", "", "re-make wraps made before this RFC 3339 time (default: the key's latest rotation)")
		f.BoolVar(&opts.DryRun, "dry-run", false, "count what would change; no KMS call, no write")
		f.BoolVar(&check, "check", false, "a dry run that exits 1 while any record still needs rewrapping (the key-retirement gate)")
		f.StringVar(&checkpoint, "checkpoint", "", "checkpoint file (default: $XDG_STATE_HOME/envdr/rewrap-TABLE-REGION.json, or rewrap-TABLE-REGION-shard-i-of-N.json with --shard)")
		f.StringVar(&shard.spec, "shard", "", "i/N: rewrap this process's part of one scan split N ways (the same --segments in every shard; a checkpoint per shard)")
		f.IntVar(&shard.base, "shard-base", 1, "where --shard's i counts from: 1 (1/N ... N/N) or 0 (0/N ... N-1/N, a Kubernetes Indexed Job's $(JOB_COMPLETION_INDEX))")
		f.Float64Var(&opts.Rate, "rate", 0, "records per second at most (0: only the region's kms_rate)")
		f.IntVar(&opts.Segments, "segments", recovery.DefaultSegments, "parallel scan segments (a resumed run keeps the checkpoint's)")
		f.IntVar(&opts.Workers, "workers", recovery.DefaultWorkers, "records re-wrapped at once")
		f.IntVar(&opts.MaxFailures, "max-failures", recovery.DefaultMaxFailures, "failure details kept (the rest are counted)")
		addOutputFlag(cmd, &asJSON)
		f.BoolVar(&quiet, "quiet", false, "no progress output on stderr")
		addTrustAnyKeyFlag(cmd, &opts.Regions.TrustAnyKey)
		return cmd
	})
}

func writeRewrapSummary(w io.Writer, r *recovery.RewrapReport) {
	verb := "changed"
	if r.DryRun {
		verb = "would change"
	}
	state := "done"
	switch {
	case r.Interrupted:
		state = "INTERRUPTED"
	case r.Resumed:
		state = "done (resumed)"
	}
	since := "never rotated"
	if !r.Since.IsZero() {
		since = r.Since.UTC().Format(time.RFC3339)
	}
	region := r.Region
	if r.Shard != "" {
		region += " shard " + r.Shard
	}
	fmt.Fprintf(w, "rewrap %s %s: %d records, %s %d, unchanged %d, failed %d in %.1fs (%.0f records/s); key %s, since %s\n",
		region, state, r.Records, verb, r.Changed, r.Unchanged, r.Failed, r.DurationSeconds, r.RecordsPerSec, r.TargetKey, since)
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  record %s: %s\n", f.ID, f.Reason)
	}
}
