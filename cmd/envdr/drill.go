package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/recovery"
)

func init() {
	register(func() *cobra.Command {
		var (
			opts   recovery.DrillOptions
			report string
			asJSON bool
			quiet  bool
		)
		cmd := &cobra.Command{
			Use:   "drill --lose R [--all-surviving] [--open FILE...] [--report PATH]",
			Short: "Rehearse losing region R: prove every record opens in a surviving region",
			Long: `drill behaves as if region R were gone. No client for R is built, and every request to R's
endpoints is refused and counted: a drill that needed R reports it (isolation, must be 0).

It reads the records from a surviving region's table (the home region's, or --scan-region) and
proves each decrypts in at least one surviving region on its own (every surviving region with
--all-surviving), opens the given envelope files end to end, and measures records checked,
recoverable, unrecoverable (with the IDs and why), the recovery point (events still queued plus
records not yet replicated to a surviving region) and the duration.

--report PATH writes PATH.md, PATH.html (a page to hand an auditor: region x outcome matrix,
failures, timings, configuration) and PATH.json. On the local stand-in, lose the region for real
first: envdr local down R.

Exit status: 0 every record and file recoverable and R never contacted, 1 otherwise (the
unrecoverable records are named), 2 bad usage or config.`,
			Example: `  envdr --config local/envdr.yaml local down eu-west-1
  envdr --config local/envdr.yaml drill --lose eu-west-1 --report drills/eu-west-1
  envdr --config local/envdr.yaml local up eu-west-1

  envdr drill --lose us-east-1 --all-surviving --open backup.tar.envdr --json`,
			Args: noArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				if opts.Lose == "" {
					return usageError("drill: --lose REGION is required")
				}
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				if _, ok := cfg.Region(opts.Lose); !ok {
					return usageError("--lose %s is not configured (configured: %v)", opts.Lose, cfg.RegionNames())
				}
				if opts.ScanRegion != "" {
					if _, ok := cfg.Region(opts.ScanRegion); !ok || opts.ScanRegion == opts.Lose {
						return usageError("--scan-region %s must be a configured surviving region", opts.ScanRegion)
					}
				}
				p := recovery.NewProgress(c.ErrOrStderr(), "drill (lose "+opts.Lose+")", quiet)
				opts.Progress, opts.Total = p.Add, p.SetTotal
				rep, err := recovery.Drill(c.Context(), cfg, opts)
				p.Finish()
				if err != nil {
					return withCode(exitFailure, err)
				}
				if report != "" {
					paths, err := rep.WriteFiles(report)
					if err != nil {
						return withCode(exitFailure, err)
					}
					for _, p := range paths {
						fmt.Fprintf(c.ErrOrStderr(), "report: %s\n", p)
					}
				}
				if asJSON {
					if err := rep.WriteJSON(c.OutOrStdout()); err != nil {
						return withCode(exitFailure, err)
					}
				} else {
					writeDrillSummary(c.OutOrStdout(), rep)
				}
				if !rep.Passed {
					return withCode(exitFindings, drillError(rep))
				}
				return nil
			},
		}
		f := cmd.Flags()
		f.StringVar(&opts.Lose, "lose", "", "the region to behave as if it were gone (required)")
		f.BoolVar(&opts.AllSurviving, "all-surviving", false, "require every surviving region to open every record")
		f.StringArrayVar(&opts.Open, "open", nil, "envelope file to open end to end through a surviving region (repeatable)")
		f.StringVar(&report, "report", "", "write PATH.md, PATH.html and PATH.json")
		f.StringVar(&opts.ScanRegion, "scan-region", "", "surviving region whose table is read (default: home, else the first surviving)")
		f.IntVar(&opts.Segments, "segments", recovery.DefaultSegments, "parallel scan segments")
		f.IntVar(&opts.Workers, "workers", recovery.DefaultWorkers, "records checked at once")
		f.IntVar(&opts.MaxFailures, "max-failures", recovery.DefaultMaxFailures, "unrecoverable records listed (the rest are counted)")
		f.BoolVar(&asJSON, "json", false, "print the report as JSON on stdout")
		f.BoolVar(&quiet, "quiet", false, "no progress output on stderr")
		addTrustAnyKeyFlag(cmd, &opts.Regions.TrustAnyKey)
		return cmd
	})
}

func writeDrillSummary(w io.Writer, r *recovery.DrillReport) {
	status := "PASSED"
	if !r.Passed {
		status = "FAILED"
	}
	queued := "unknown"
	if r.RecoveryPoint.QueuedEvents != nil {
		queued = fmt.Sprint(*r.RecoveryPoint.QueuedEvents)
	}
	fmt.Fprintf(w, "drill lose %s %s: %d records, %d recoverable (%.2f%%), replicated records %d/%d recoverable (%.2f%%), %d unrecoverable (%d no surviving wrap, %d decrypt failed), %d not yet replicated\n",
		r.Lost, status, r.Records, r.Recoverable, r.RecoverablePercent, r.ReplicatedRecoverable, r.Replicated, r.ReplicatedRecoverablePercent,
		r.Unrecoverable, r.NoSurvivingWrap, r.DecryptFailed, r.NotReplicated)
	fmt.Fprintf(w, "recovery point: %d at risk (%s events queued + %d records not replicated); %.1fs, %.0f records/s; requests to %s: %d\n",
		r.RecoveryPoint.AtRisk, queued, r.RecoveryPoint.NotReplicated, r.DurationSeconds, r.Timings.RecordsPerSec, r.Lost, r.Isolation.LostRegionRequests)
	fmt.Fprintf(w, "%-16s %-9s %10s %8s %8s %7s %11s %8s\n", "REGION", "STATE", "WRAPS", "OPENED", "NO-WRAP", "FAILED", "UNAVAILABLE", "SKIPPED")
	for _, m := range r.Matrix {
		state := "surviving"
		if m.Lost {
			state = "lost"
		}
		fmt.Fprintf(w, "%-16s %-9s %10d %8d %8d %7d %11d %8d\n", m.Region, state, m.WrapsHeld, m.OK, m.NoWrap, m.Failed, m.Unavailable, m.Skipped)
	}
	for _, f := range r.Files {
		if f.OK {
			fmt.Fprintf(w, "  file %s (record %s): opened through %s, %d bytes\n", f.Path, f.ID, f.Region, f.Bytes)
		} else {
			fmt.Fprintf(w, "  file %s: FAILED: %s\n", f.Path, f.Error)
		}
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  unrecoverable record %s: %s: %s\n", f.ID, f.Outcome, f.Reason)
	}
	for _, p := range r.Pending {
		fmt.Fprintf(w, "  not yet replicated: record %s lacks %v (recoverable now: %v)\n", p.ID, p.Missing, p.Recoverable)
	}
	if r.PendingOmitted > 0 {
		fmt.Fprintf(w, "  ... %d more not-yet-replicated records not listed\n", r.PendingOmitted)
	}
	if r.FailuresOmitted > 0 {
		fmt.Fprintf(w, "  ... %d more not listed\n", r.FailuresOmitted)
	}
}

func drillError(r *recovery.DrillReport) error {
	switch {
	case r.Interrupted:
		return fmt.Errorf("drill lose %s: interrupted after %d records", r.Lost, r.Records)
	case r.Isolation.LostRegionRequests > 0:
		return fmt.Errorf("drill lose %s: %d requests tried to reach the lost region %s (a bug: report it)", r.Lost, r.Isolation.LostRegionRequests, r.Lost)
	case r.Unrecoverable+r.Unreadable > 0:
		return fmt.Errorf("drill lose %s: %d of %d records unrecoverable from %v: %s", r.Lost, r.Unrecoverable+r.Unreadable, r.Records, r.Surviving, failureNames(r.Failures, r.FailuresOmitted))
	}
	for _, f := range r.Files {
		if !f.OK {
			return fmt.Errorf("drill lose %s: file %s: %s", r.Lost, f.Path, f.Error)
		}
	}
	return fmt.Errorf("drill lose %s failed", r.Lost)
}
