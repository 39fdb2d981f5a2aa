package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/recovery"
)

func init() {
	register(func() *cobra.Command {
		var (
			opts      recovery.DrillOptions
			conf, max string
			shard     shardSpec
			report    string
			pushgw    string
			asJSON    bool
			quiet     bool
			force     bool
		)
		cmd := &cobra.Command{
			Use:   "drill --lose R [--all-surviving] [--open FILE...] [--data N|all] [--report PATH]",
			Short: "Rehearse losing region R: prove every record opens in a surviving region",
			Long: `drill behaves as if region R were gone. No client for R is built, and every request to R's
endpoints is refused and counted: a drill that needed R reports it (isolation, must be 0).

It reads the records from a surviving region's table (the home region's, or --scan-region) and
proves each decrypts in at least one surviving region on its own (every surviving region with
--all-surviving), opens the given envelope files end to end, and measures records checked,
recoverable, unrecoverable (with the IDs and why), the recovery point (the replication work
outstanding: events still queued plus records lacking a wrap in some required region; as a time,
RPO: the age of the oldest of it), the recovery time (RTO: how long the surviving regions took
to open everything) and the duration.

Every report is audit evidence: schema version, envdr version and commit, host, the caller's
identity and account (STS GetCallerIdentity in the scan region), start and end times, RPO and RTO
in seconds, the thresholds it was judged by (--min-recoverable, --max-rpo), one line per check,
and a SHA-256 digest of the JSON that envdr drill verify-report FILE checks.

For tables too large for a full pass within a KMS budget: --sample N drills a uniform random
sample of N records and reports the exact upper bound on the fraction of the table the
surviving regions cannot open (at --confidence, default 99.9%); --confidence P --max-defect Q
sizes the sample (n = ln(1-P)/ln(1-Q)) and passes only when that bound is at most Q.
--shard i/N reads this process's part of one scan split N ways (see envdr verify --help).

--data N|all opens objects of the S3 data path end to end from each surviving region's bucket
replica (regions[].bucket), with that region's endpoints alone: every object, or a uniform random
sample of N. The objects are every survivor's bucket listed, plus those the records name
(data_uri) that no survivor holds. The report says, per surviving region, the objects opened, the
objects missing from its replica (data RPO: not replicated there yet), the objects it holds but
holds no wrap for (key RPO) and those that failed to open, the plaintext bytes authenticated, and
names each object that was not opened. Its check "data" passes when no object failed to open and
--min-recoverable of the envelope objects checked opened in some surviving region.

--report s3://bucket/prefix writes the three as objects prefix.json, prefix.md and prefix.html,
through a surviving region's S3 endpoint (the bucket's own region unless it is R), each refused
if it exists unless --force.

--report PATH writes PATH.json, PATH.md and PATH.html (a page to hand an auditor: evidence,
checks, region x outcome matrix, failures, timings, configuration). On the local stand-in, lose
the region for real first: envdr local down R.

Exit status: 0 every check passed (by default: every record and file recoverable and R never
contacted), 1 a check failed (named, with the unrecoverable records), 2 bad usage or config.`,
			Example: `  envdr --config local/envdr.yaml local down eu-west-1
  envdr --config local/envdr.yaml drill --lose eu-west-1 --report drills/eu-west-1
  envdr --config local/envdr.yaml local up eu-west-1

  envdr drill --lose us-east-1 --all-surviving --open backup.tar.envdr --json
  envdr drill --lose eu-west-1 --max-rpo 15m --min-recoverable 99.99 --report drills/eu
  envdr drill verify-report drills/eu.json
  envdr drill --lose us-east-1 --confidence 99.9% --max-defect 0.1% --report drills/sampled
  envdr drill --lose us-east-1 --data all --report drills/with-data`,
			Args: noArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				if opts.Lose == "" {
					return usageError("drill: --lose REGION is required")
				}
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				// A scan's live heap is small and flat: collect less often (as envdr run does).
				tuneGC()
				if _, ok := cfg.Region(opts.Lose); !ok {
					return usageError("--lose %s is not configured (configured: %v)", opts.Lose, cfg.RegionNames())
				}
				if opts.ScanRegion != "" {
					if _, ok := cfg.Region(opts.ScanRegion); !ok || opts.ScanRegion == opts.Lose {
						return usageError("--scan-region %s must be a configured surviving region", opts.ScanRegion)
					}
				}
				if opts.MinRecoverable <= 0 || opts.MinRecoverable > 100 {
					return usageError("--min-recoverable %v: use a percentage above 0 up to 100", opts.MinRecoverable)
				}
				if opts.MaxRPO < 0 {
					return usageError("--max-rpo %s: use a positive duration such as 15m (0: no limit)", opts.MaxRPO)
				}
				if err := sampleFlags(&opts.Sampling, "", conf, max, shard); err != nil {
					return err
				}
				if opts.Data != 0 && opts.Sampling.Shard.String() != "" {
					return usageError("--data with --shard: the data check is not split between shards; run it in one drill without --shard")
				}
				if err := checkReportTarget(c.Context(), cfg, report, force, c.CommandPath(), opts.Lose, false); err != nil {
					return err
				}
				v := buildVersion()
				opts.Envdr = recovery.Build{Version: v.Version, Commit: v.Commit}
				p := recovery.NewProgress(c.ErrOrStderr(), "drill (lose "+opts.Lose+")", quiet)
				opts.Progress, opts.Total = p.Add, p.SetTotal
				rep, err := recovery.Drill(c.Context(), cfg, opts)
				p.Finish()
				if err != nil {
					return withCode(exitFailure, err)
				}
				if report != "" {
					paths, err := writeReport(c.Context(), cfg, report, force, opts.Lose, rep)
					if err != nil {
						return withCode(exitFailure, err)
					}
					for _, p := range paths {
						fmt.Fprintf(c.ErrOrStderr(), "report: %s\n", p)
					}
				}
				if pushgw != "" {
					if err := recovery.PushDrill(c.Context(), pushgw, rep); err != nil {
						return withCode(exitFailure, err)
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
		f.Var((*dataFlag)(&opts.Data), "data", "open N sampled objects, or all, from each surviving region's bucket replica (S3 data path)")
		f.StringVar(&report, "report", "", "write PATH.md, PATH.html and PATH.json, or to S3 with s3://bucket/prefix (never over existing files without --force)")
		f.BoolVar(&force, "force", false, "overwrite existing --report files")
		f.StringVar(&pushgw, "pushgateway", os.Getenv("ENVDR_PUSHGATEWAY"), "push envdr_drill_* metrics to this Prometheus Pushgateway URL (job envdr_drill, group lost_region); env ENVDR_PUSHGATEWAY")
		f.StringVar(&opts.ScanRegion, "scan-region", "", "surviving region whose table is read (default: home, else the first surviving)")
		f.IntVar(&opts.Segments, "segments", recovery.DefaultSegments, "parallel scan segments")
		f.IntVar(&opts.Workers, "workers", recovery.DefaultWorkers, "records checked at once")
		f.IntVar(&opts.MaxFailures, "max-failures", recovery.DefaultMaxFailures, "unrecoverable records listed (the rest are counted)")
		addOutputFlag(cmd, &asJSON)
		f.BoolVar(&quiet, "quiet", false, "no progress output on stderr")
		f.Float64Var(&opts.MinRecoverable, "min-recoverable", 100, "lowest percentage of records recoverable that passes")
		addSampleFlags(cmd, &opts.Sampling, &conf, &max, &shard)
		f.DurationVar(&opts.MaxRPO, "max-rpo", 0, "fail when the recovery point (age of the oldest outstanding replication) is older, e.g. 15m (0: no limit)")
		addTrustAnyKeyFlag(cmd, &opts.Regions.TrustAnyKey)
		cmd.AddCommand(verifyReportCmd())
		return cmd
	})
}

// verifyReportResult is drill verify-report's --output json result (docs/OUTPUT.md).
type verifyReportResult struct {
	File     string `json:"file"`
	DigestOK bool   `json:"digest_ok"`
	SHA256   string `json:"sha256,omitempty"`
	Kind     string `json:"kind,omitempty"` // "drill", "verify" or "gameday"
	Lost     string `json:"lost,omitempty"`
	// Passed is the verdict the report carries (its checks), not the digest's.
	Passed    bool   `json:"passed"`
	StartedAt string `json:"started_at,omitempty"`
	Envdr     string `json:"envdr_version,omitempty"`
	Caller    string `json:"caller,omitempty"`
	Error     string `json:"error,omitempty"`
}

func verifyReportCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify-report FILE.json",
		Short: "Check a drill, verify or game day report's SHA-256 digest: was the JSON changed after envdr wrote it?",
		Long: `verify-report recomputes the SHA-256 digest of a drill, verify or game day report's JSON (drill
--report, verify --report, gameday --report, or envdr report merge; the file with its own
"sha256" value left empty) and compares it with the digest the file carries. A single changed
byte anywhere fails. The digest proves integrity, not origin: anyone who can run envdr can write
a report with a matching digest, so keep reports where they cannot be rewritten (an S3 bucket
with Object Lock, for example).

--output json prints {"file", "digest_ok", "sha256", "kind", "lost", "passed", "started_at",
"envdr_version", "caller", "error"} (docs/OUTPUT.md), also when the digest does not match.

FILE may be s3://bucket/key.json: the object is read through the bucket's region (the --config's
regions[].bucket), which needs s3:GetObject there.

Exit status: 0 the digest matches (the verdict and digest are printed), 1 it does not, or the
file is not a report of this schema, 2 bad usage.`,
		Example: `  envdr drill verify-report drills/eu-west-1.json
  envdr drill verify-report s3://acme-envdr-reports/scans/verify-2026-12-07T03:00:00Z/merged.json`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			b, err := (&reportFiles{}).read(c.Context(), args[0])
			if err != nil {
				return readFailure(err)
			}
			if recovery.ReportKind(b) == recovery.GamedayReportKind {
				gr, err := recovery.VerifyGamedayReport(b)
				if err != nil {
					if asJSON {
						_ = writeJSON(c.OutOrStdout(), verifyReportResult{File: args[0], Kind: recovery.GamedayReportKind, Error: err.Error()})
					}
					return withCode(exitFailure, fmt.Errorf("%s: %w", args[0], err))
				}
				if asJSON {
					return writeJSON(c.OutOrStdout(), verifyReportResult{File: args[0], DigestOK: true, SHA256: gr.SHA256, Kind: recovery.GamedayReportKind, Lost: gr.Lost,
						Passed: gr.Passed, StartedAt: gr.StartedAt.Format("2006-01-02T15:04:05Z"), Envdr: gr.Envdr.Version, Caller: callerName(gr.Caller)})
				}
				fmt.Fprintf(c.OutOrStdout(), "%s: digest OK (sha256 %s): game day lose %s %s, %d envelopes, %s, envdr %s, caller %s\n",
					args[0], gr.SHA256, gr.Lost, verdict(gr.Passed), gr.Sealed, gr.StartedAt.Format("2006-01-02T15:04:05Z"), gr.Envdr.Version, callerName(gr.Caller))
				return nil
			}
			if recovery.ReportKind(b) == "verify" {
				vr, err := recovery.VerifyVerifyReport(b)
				if err != nil {
					if asJSON {
						_ = writeJSON(c.OutOrStdout(), verifyReportResult{File: args[0], Kind: "verify", Error: err.Error()})
					}
					return withCode(exitFailure, fmt.Errorf("%s: %w", args[0], err))
				}
				what := "verify"
				if len(vr.MergedFrom) > 0 {
					what = fmt.Sprintf("verify merged from %d shards", len(vr.MergedFrom))
				}
				if asJSON {
					return writeJSON(c.OutOrStdout(), verifyReportResult{File: args[0], DigestOK: true, SHA256: vr.SHA256, Kind: "verify",
						Passed: vr.Passed, StartedAt: vr.StartedAt.Format("2006-01-02T15:04:05Z"), Envdr: vr.Envdr.Version})
				}
				fmt.Fprintf(c.OutOrStdout(), "%s: digest OK (sha256 %s): %s %s, %d records, %s, envdr %s\n",
					args[0], vr.SHA256, what, verdict(vr.Passed), vr.Records, vr.StartedAt.Format("2006-01-02T15:04:05Z"), vr.Envdr.Version)
				return nil
			}
			rep, err := recovery.VerifyDrillReport(b)
			if err != nil {
				if asJSON {
					_ = writeJSON(c.OutOrStdout(), verifyReportResult{File: args[0], Error: err.Error()})
				}
				return withCode(exitFailure, fmt.Errorf("%s: %w", args[0], err))
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), verifyReportResult{File: args[0], DigestOK: true, SHA256: rep.SHA256, Kind: "drill", Lost: rep.Lost,
					Passed: rep.Passed, StartedAt: rep.StartedAt.Format("2006-01-02T15:04:05Z"), Envdr: rep.Envdr.Version, Caller: callerName(rep.Caller)})
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: digest OK (sha256 %s): drill lose %s %s, %s, envdr %s, caller %s\n",
				args[0], rep.SHA256, rep.Lost, verdict(rep.Passed), rep.StartedAt.Format("2006-01-02T15:04:05Z"), rep.Envdr.Version, callerName(rep.Caller))
			return nil
		},
	}
	addOutputFlag(cmd, &asJSON)
	return cmd
}

func verdict(pass bool) string {
	if pass {
		return "PASSED"
	}
	return "FAILED"
}

func callerName(c recovery.Caller) string {
	if c.Error != "" || c.ARN == "" {
		return "unknown"
	}
	return c.ARN
}

func writeDrillSummary(w io.Writer, r *recovery.DrillReport) {
	status := verdict(r.Passed)
	queued := "unknown"
	if r.RecoveryPoint.QueuedEvents != nil {
		queued = fmt.Sprint(*r.RecoveryPoint.QueuedEvents)
	}
	fmt.Fprintf(w, "drill lose %s %s: %d records, %d recoverable (%.2f%%), replicated records %d/%d recoverable (%.2f%%), %d unrecoverable (%d no surviving wrap, %d decrypt failed), %d not yet replicated\n",
		r.Lost, status, r.Records, r.Recoverable, r.RecoverablePercent, r.ReplicatedRecoverable, r.Replicated, r.ReplicatedRecoverablePercent,
		r.Unrecoverable, r.NoSurvivingWrap, r.DecryptFailed, r.NotReplicated)
	atLeast := ""
	if r.RecoveryPoint.RPOLowerBound {
		atLeast = ">="
	}
	fmt.Fprintf(w, "recovery point: %d at risk (%s events queued + %d records not replicated), RPO %s%.1fs; RTO %.1fs; %.1fs, %.0f records/s; requests to %s: %d\n",
		r.RecoveryPoint.AtRisk, queued, r.RecoveryPoint.NotReplicated, atLeast, r.RecoveryPoint.RPOSeconds, r.RTOSeconds,
		r.DurationSeconds, r.Timings.RecordsPerSec, r.Lost, r.Isolation.LostRegionRequests)
	for _, c := range r.FailedChecks() {
		fmt.Fprintf(w, "  check %s FAILED: %s\n", c.Name, c.Detail)
	}
	if r.Shard != "" {
		fmt.Fprintf(w, "shard %s: this run read its part of the scan only\n", r.Shard)
	}
	if sm := r.Sample; sm != nil {
		fmt.Fprintf(w, "sample: %d records (seed %d): %d unrecoverable; at %s confidence at most %s of the table is unrecoverable (%s)\n",
			sm.Drawn, sm.Seed, sm.Regions[0].Defects, pct(sm.Confidence), pct(sm.WorstUpperBound), sm.Method)
	}
	t := newTable(w, "REGION", "STATE", "WRAPS", "OPENED", "NO-WRAP", "FAILED", "UNAVAILABLE", "SKIPPED")
	for _, m := range r.Matrix {
		state := "surviving"
		if m.Lost {
			state = "lost"
		}
		t.row(m.Region, state, m.WrapsHeld, m.OK, m.NoWrap, m.Failed, m.Unavailable, m.Skipped)
	}
	_ = t.flush()
	for _, f := range r.Files {
		if f.OK {
			fmt.Fprintf(w, "  file %s (record %s): opened through %s, %d bytes\n", f.Path, f.ID, f.Region, f.Bytes)
		} else {
			fmt.Fprintf(w, "  file %s: FAILED: %s\n", f.Path, f.Error)
		}
	}
	if d := r.Data; d != nil {
		fmt.Fprintf(w, "data: %d of %d objects checked (%s), %d opened in a surviving region, %d not; %d bytes authenticated; "+
			"data RPO %d missing from a replica (oldest %.1fs), key RPO %d without a wrap, %d failed, %d not envelopes\n",
			d.Checked, d.Objects, d.Requested, d.Recoverable, d.Unrecoverable, d.BytesChecked, d.MissingObjects, d.DataRPOSeconds,
			d.MissingWraps, d.Failed, d.NotEnvelopes)
		for _, dr := range d.Regions {
			fmt.Fprintf(w, "  data %s (s3://%s): %d opened, %d missing objects, %d missing wraps, %d failed, %d bytes\n",
				dr.Region, dr.Bucket, dr.Opened, dr.MissingObjects, dr.MissingWraps, dr.Failed, dr.Bytes)
		}
		for _, p := range d.Problems {
			fmt.Fprintf(w, "  object %s in %s: %s: %s\n", p.Key, p.Region, p.Outcome, p.Reason)
		}
		if d.ProblemsOmit > 0 {
			fmt.Fprintf(w, "  ... %d more objects not listed\n", d.ProblemsOmit)
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
	var failed []string
	for _, c := range r.FailedChecks() {
		failed = append(failed, c.Name)
	}
	return fmt.Errorf("%w (failed checks: %s)", drillCause(r), strings.Join(failed, ", "))
}

func drillCause(r *recovery.DrillReport) error {
	for _, c := range r.FailedChecks() {
		if c.Name == "rpo" || c.Name == "recoverable" && r.Unrecoverable == 0 {
			return errors.New("drill lose " + r.Lost + ": " + c.Detail)
		}
	}
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
	for _, c := range r.FailedChecks() {
		if c.Name == "data" {
			return errors.New("drill lose " + r.Lost + ": data: " + c.Detail)
		}
	}
	return fmt.Errorf("drill lose %s failed", r.Lost)
}

// dataFlag is --data N|all: a sample of N objects, or recovery.DataAll.
type dataFlag int

func (d *dataFlag) String() string {
	switch {
	case *d == recovery.DataAll:
		return "all"
	case *d > 0:
		return strconv.Itoa(int(*d))
	}
	return ""
}

func (d *dataFlag) Set(v string) error {
	if v == "all" {
		*d = recovery.DataAll
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a positive number of objects, or all")
	}
	*d = dataFlag(n)
	return nil
}

func (d *dataFlag) Type() string { return "N|all" }
