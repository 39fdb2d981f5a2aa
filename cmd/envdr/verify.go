package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

func init() {
	register(func() *cobra.Command {
		var (
			opts   recovery.VerifyOptions
			asJSON bool
			quiet  bool
		)
		cmd := &cobra.Command{
			Use:   "verify [--region R] [--id ID]",
			Short: "Prove that every required region can open every record on its own",
			Long: `verify scans the records table (parallel scan segments, streaming: memory stays flat) and,
for each record and each region, reads the record from that region's own table, decrypts that
region's wrap with that region's KMS and the record's encryption context, and checks the key
commitment. The data key is wiped at once; nothing secret is printed.

Each region that opened a record gets its verified_at updated, only if the wrap checked is
still the record's; failures are reported, never written to the table. These writes are batched: up to
--stamp-batch items (one per region stamped, default 100, DynamoDB's limit) in one transaction
of conditional writes on the versions the scan read; a record changed meanwhile by another
writer is written again on its own from a fresh read. --no-write makes the run read-only.

With --region R only R is checked and only R's endpoints are used (R's table is scanned).

A lost region: without --region, each region's table replica is probed first (bounded by
--region-timeout); a region that is unreachable, silent or answers 5xx is skipped, not counted
as failing and not required, and verify says so (stderr, "skipped" in the JSON). When it is the
home region, the table is read in the next region that answers. --strict checks it anyway, so
its records fail.

--require-current also fails every wrap that opens but is not under its region's current key
(the configured key; an alias resolved now): the gate before an old key may be retired
(docs/DRILLS.md). It is on by default when a region lists previous_keys or names its key by an
alias; --require-current=false turns it off.

--output json prints the report with "passed" (true or false) first (docs/OUTPUT.md).

Exit status: 0 every record opened in every required region (skipped regions aside), 1 some
did not (the records are named, up to --max-failures), 2 bad usage or config.`,
			Example: `  envdr --config local/envdr.yaml verify
  envdr --config local/envdr.yaml verify --region eu-west-1 --json
  envdr verify --id 3f2a9c...`,
			Args: noArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				if opts.Region != "" {
					if _, ok := cfg.Region(opts.Region); !ok {
						return usageError("--region %s is not configured (configured: %v)", opts.Region, cfg.RegionNames())
					}
				}
				if opts.RegionTimeout <= 0 {
					return usageError("--region-timeout %s: use a positive duration such as 5s", opts.RegionTimeout)
				}
				if !c.Flags().Changed("require-current") {
					opts.RequireCurrent = recovery.RequireCurrentByDefault(cfg)
				}
				p := recovery.NewProgress(c.ErrOrStderr(), "verify", quiet || opts.ID != "")
				opts.Progress, opts.Total = p.Add, p.SetTotal
				rep, err := recovery.Verify(c.Context(), cfg, opts)
				p.Finish()
				if err != nil {
					if opts.Region == "" && regions.IsConnError(err) {
						err = fmt.Errorf("%w (to check the regions that still answer, run verify --region R for each)", err)
					}
					return withCode(exitFailure, fmt.Errorf("verify: %w", err))
				}
				for _, s := range rep.Skipped {
					fmt.Fprintf(c.ErrOrStderr(), "envdr: verify: region %s skipped (%s): not checked, not required; --strict to count it as failing\n", s.Region, s.Reason)
				}
				if asJSON {
					if err := writeJSON(c.OutOrStdout(), verifyResult{Passed: rep.Passed(), VerifyReport: rep}); err != nil {
						return withCode(exitFailure, err)
					}
				} else {
					writeVerifySummary(c.OutOrStdout(), rep)
				}
				if !rep.Passed() {
					return withCode(exitFindings, verifyError(rep))
				}
				return nil
			},
		}
		f := cmd.Flags()
		f.StringVar(&opts.Region, "region", "", "check this region alone, using only its endpoints")
		f.StringVar(&opts.ID, "id", "", "check this record only")
		f.IntVar(&opts.Segments, "segments", recovery.DefaultSegments, "parallel scan segments")
		f.IntVar(&opts.Workers, "workers", recovery.DefaultWorkers, "records checked at once")
		f.IntVar(&opts.MaxFailures, "max-failures", recovery.DefaultMaxFailures, "failure details kept (the rest are counted)")
		f.BoolVar(&opts.NoWrite, "no-write", false, "read-only: do not update verified_at")
		f.BoolVar(&opts.RequireCurrent, "require-current", false, "fail wraps not under the region's current key (default on when a region lists previous_keys or names its key by an alias)")
		f.IntVar(&opts.StampBatch, "stamp-batch", replicate.MaxTransactItems, "items (one per region stamped) written in one transaction; 1 writes each record on its own")
		addOutputFlag(cmd, &asJSON)
		f.BoolVar(&quiet, "quiet", false, "no progress output on stderr")
		f.BoolVar(&opts.Strict, "strict", false, "check a region that does not answer anyway: its records fail instead of it being skipped")
		f.DurationVar(&opts.RegionTimeout, "region-timeout", recovery.DefaultRegionTimeout, "how long a region's table replica may take to answer the probe before it is skipped")
		addTrustAnyKeyFlag(cmd, &opts.Regions.TrustAnyKey)
		return cmd
	})
}

// verifyResult is verify's --output json result: the report with its verdict (docs/OUTPUT.md).
type verifyResult struct {
	Passed bool `json:"passed"`
	*recovery.VerifyReport
}

func writeVerifySummary(w io.Writer, r *recovery.VerifyReport) {
	status := "PASSED"
	if !r.Passed() {
		status = "FAILED"
	}
	fmt.Fprintf(w, "verify %s: %d records, %d ok, %d failed, %d unreadable in %.1fs (%.0f records/s); table %s read in %s\n",
		status, r.Records, r.OK, r.Failed, r.Unreadable, r.DurationSeconds, r.RecordsPerSec, r.Table, r.ScanRegion)
	t := newTable(w, "REGION", "OK", "NO-WRAP", "NO-RECORD", "FAILED", "NOT-CURRENT", "UNAVAILABLE", "KMS-MEAN")
	for _, g := range r.PerRegion {
		t.row(g.Region, g.OK, g.NoWrap, g.NoRecord, g.Failed, g.NotCurrent, g.Unavailable, fmt.Sprintf("%.1fms", g.MeanMillis))
	}
	_ = t.flush()
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "  region %s SKIPPED (not checked, not required): %s\n", s.Region, s.Reason)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  record %s region %s: %s: %s\n", f.ID, f.Region, f.Outcome, f.Reason)
	}
	if r.FailuresOmitted > 0 {
		fmt.Fprintf(w, "  ... %d more failures not listed\n", r.FailuresOmitted)
	}
}

// verifyError is the one-line error: counts and the first records named.
func verifyError(r *recovery.VerifyReport) error {
	if r.Interrupted {
		return fmt.Errorf("verify interrupted after %d records", r.Records)
	}
	return fmt.Errorf("verify: %d of %d records cannot be opened in every required region (%s): %s",
		r.Failed+r.Unreadable, r.Records, strings.Join(r.Required, ", "), failureNames(r.Failures, r.FailuresOmitted))
}

// failureNames lists up to five records with their region.
func failureNames(fs []recovery.Failure, omitted int64) string {
	var parts []string
	seen := map[string]bool{}
	for _, f := range fs {
		if seen[f.ID] {
			continue
		}
		seen[f.ID] = true
		if len(parts) == 5 {
			parts = append(parts, "...")
			break
		}
		s := "record " + f.ID
		if f.Region != "" {
			s += " in " + f.Region
		}
		parts = append(parts, s+" ("+f.Outcome+")")
	}
	if omitted > 0 && (len(parts) == 0 || parts[len(parts)-1] != "...") {
		parts = append(parts, "...")
	}
	return strings.Join(parts, ", ")
}
