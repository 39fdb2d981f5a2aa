package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

func init() {
	register(func() *cobra.Command {
		var (
			opts      recovery.VerifyOptions
			asJSON    bool
			quiet     bool
			shard     shardSpec
			conf, max string
			report    string
			force     bool
			cpuProf   string
		)
		cmd := &cobra.Command{
			Use:   "verify [--region R] [--id ID] [--sample N | --confidence P --max-defect Q] [--shard i/N]",
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

Statistical verify, for tables too large for a full pass within a KMS budget: --sample N
checks a uniform random sample of N records (random scan segments: DynamoDB places records
in segments by the hash of their key) and reports, per region, the records it could not open
and the exact (Clopper-Pearson) upper bound on the fraction of the table it cannot open, at
--confidence (default 99.9%). --confidence P --max-defect Q draws n = ln(1-P)/ln(1-Q) records
and passes only when every required region's bound is at most Q (with no failure in the sample,
that is exactly the confidence P that less than Q of the table fails). A sample larger than
the table checks every record (exact fractions).

--shard i/N splits one parallel scan of --segments x N segments across N processes (a
Kubernetes Indexed Job, N ECS tasks): each reads its own segments only, so the N runs together
read every record exactly once. Give every shard the same --segments.

--output json prints the report with "passed" (true or false) first (docs/OUTPUT.md); it ends
with a "sha256" digest of the JSON, as --report PATH writes it to PATH.json (--report
s3://bucket/prefix: the object prefix.json, through the bucket's region, never over an existing
one without --force): envdr drill verify-report checks it, and envdr report merge combines the
reports of --shard 1/N ... N/N into the report of the whole table.

Exit status: 0 every record opened in every required region (skipped regions aside), 1 some
did not (the records are named, up to --max-failures), 2 bad usage or config.`,
			Example: `  envdr --config local/envdr.yaml verify
  envdr --config local/envdr.yaml verify --region eu-west-1 --json
  envdr verify --id 3f2a9c...
  # 99.9% confidence that less than 0.1% of the records fail in any region (6,905 records)
  envdr verify --confidence 99.9% --max-defect 0.1%
  # the second of four shards of one full scan
  envdr verify --shard 2/4 --segments 8 --output json`,
			Args: noArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				// A scan's live heap is small and flat: collect less often (as envdr run does).
				tuneGC()
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
				if err := sampleFlags(&opts.Sampling, opts.ID, conf, max, shard); err != nil {
					return err
				}
				if report != "" {
					if err := checkReportTarget(c.Context(), cfg, report, force, c.CommandPath(), "", true); err != nil {
						return err
					}
				}
				if cpuProf != "" {
					stop, err := startCPUProfile(cpuProf)
					if err != nil {
						return err
					}
					defer stop()
				}
				v := buildVersion()
				opts.Envdr = recovery.Build{Version: v.Version, Commit: v.Commit}
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
				res := recovery.NewVerifyResult(rep)
				js, err := res.JSON()
				if err != nil {
					return withCode(exitFailure, err)
				}
				if report != "" {
					path, err := writeVerifyReport(c.Context(), cfg, report, force, js)
					if err != nil {
						return withCode(exitFailure, err)
					}
					fmt.Fprintf(c.ErrOrStderr(), "report: %s\n", path)
				}
				if asJSON {
					if _, err := c.OutOrStdout().Write(js); err != nil {
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
		addSampleFlags(cmd, &opts.Sampling, &conf, &max, &shard)
		f.StringVar(&report, "report", "", "also write the report, with its SHA-256 digest, to PATH.json, or to the object prefix.json for s3://bucket/prefix (envdr drill verify-report checks it; envdr report merge combines shards')")
		f.BoolVar(&force, "force", false, "overwrite an existing --report file")
		f.StringVar(&cpuProf, "cpu-profile", "", "write a pprof CPU profile of the run to this file (go tool pprof; make scale-bench)")
		f.BoolVar(&opts.Strict, "strict", false, "check a region that does not answer anyway: its records fail instead of it being skipped")
		f.DurationVar(&opts.RegionTimeout, "region-timeout", recovery.DefaultRegionTimeout, "how long a region's table replica may take to answer the probe before it is skipped")
		addTrustAnyKeyFlag(cmd, &opts.Regions.TrustAnyKey)
		return cmd
	})
}

// shardSpec is --shard i/N with --shard-base: where i counts from.
type shardSpec struct {
	spec string
	base int
}

// parse turns the spec into a shard (the zero Shard without --shard). A base of 0 is for
// schedulers that number their workers from 0, such as a Kubernetes Indexed Job's
// JOB_COMPLETION_INDEX: "$(JOB_COMPLETION_INDEX)/N" with --shard-base 0 is shard index+1 of N, and
// the reports name it as the 1-based i/N that envdr report merge expects.
func (s shardSpec) parse() (recovery.Shard, error) {
	spec := s.spec
	switch s.base {
	case 1:
	case 0:
		a, b, ok := strings.Cut(spec, "/")
		i, err := strconv.Atoi(a)
		if !ok || err != nil || i < 0 {
			return recovery.Shard{}, fmt.Errorf("--shard %q with --shard-base 0: want i/N with 0 <= i < N, e.g. 1/4", s.spec)
		}
		spec = strconv.Itoa(i+1) + "/" + b
	default:
		return recovery.Shard{}, fmt.Errorf("--shard-base %d: want 1 (i counts 1 ... N) or 0 (0 ... N-1)", s.base)
	}
	sh, err := recovery.ParseShard(spec)
	if err != nil && s.base == 0 {
		return recovery.Shard{}, fmt.Errorf("--shard %q with --shard-base 0: want i/N with 0 <= i < N <= 1000, e.g. 1/4", s.spec)
	}
	return sh, err
}

// addSampleFlags adds --sample, --confidence, --max-defect, --shard, --shard-base and --seed
// (verify, drill).
func addSampleFlags(cmd *cobra.Command, opts *recovery.Sampling, conf, maxDefect *string, shard *shardSpec) {
	f := cmd.Flags()
	f.IntVar(&opts.Sample, "sample", 0, "check a uniform random sample of this many records and report the upper bound on the fraction that cannot be opened")
	f.StringVar(conf, "confidence", "", "confidence of the sample's bound, e.g. 99.9% (default 99.9%); with --max-defect, sizes the sample")
	f.StringVar(maxDefect, "max-defect", "", "with --confidence: the largest fraction of records that may fail to open, e.g. 0.1%")
	f.StringVar(&shard.spec, "shard", "", "i/N: read this process's part of one scan split N ways (the same --segments in every shard)")
	f.IntVar(&shard.base, "shard-base", 1, "where --shard's i counts from: 1 (1/N ... N/N) or 0 (0/N ... N-1/N, a Kubernetes Indexed Job's $(JOB_COMPLETION_INDEX))")
	f.Uint64Var(&opts.Seed, "seed", 0, "the sample's random seed (0: a fresh one; the report names it, to draw the same sample again)")
}

// sampleFlags checks --sample, --confidence, --max-defect and --shard into opts (id: --id, which
// takes none of them).
func sampleFlags(opts *recovery.Sampling, id, conf, maxDefect string, shard shardSpec) error {
	if opts.Sample < 0 {
		return usageError("--sample %d: want a number of records, 1 or more", opts.Sample)
	}
	if conf != "" {
		v, err := recovery.ParsePercent(conf)
		if err != nil {
			return usageError("--confidence %v", err)
		}
		opts.Confidence = v
	}
	if maxDefect != "" {
		v, err := recovery.ParsePercent(maxDefect)
		if err != nil {
			return usageError("--max-defect %v", err)
		}
		if conf == "" {
			return usageError("--max-defect needs --confidence (the sample size follows from both)")
		}
		if opts.Sample > 0 {
			return usageError("--sample and --max-defect: pick one (--confidence with --max-defect sizes the sample)")
		}
		opts.MaxDefect = v
	} else if conf != "" && opts.Sample == 0 {
		return usageError("--confidence needs --sample N or --max-defect Q")
	}
	sampling := opts.Sample > 0 || opts.MaxDefect > 0
	if sampling && id != "" {
		return usageError("--id checks one record; a sample takes no --id")
	}
	if shard.spec != "" {
		s, err := shard.parse()
		if err != nil {
			return usageError("%v", err)
		}
		if sampling {
			return usageError("--shard splits a full scan; a sample is drawn from the whole table")
		}
		if id != "" {
			return usageError("--shard splits a full scan; --id checks one record")
		}
		opts.Shard = s
	}
	return nil
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
	if r.Shard != "" {
		fmt.Fprintf(w, "shard %s: this run read its part of the scan only; merge the shards' reports for the whole table\n", r.Shard)
	}
	if sm := r.Sample; sm != nil {
		what := fmt.Sprintf("a uniform random sample of %d records (seed %d)", sm.Drawn, sm.Seed)
		if sm.Exhaustive {
			what = fmt.Sprintf("every record: the table holds %d, fewer than the %d asked for (exact fractions)", sm.Drawn, sm.Requested)
		}
		fmt.Fprintf(w, "sample: %s; at %s confidence each region fails to open at most this fraction of the table:\n", what, pct(sm.Confidence))
		for _, b := range sm.Regions {
			fmt.Fprintf(w, "  %-16s %s  (%d of %d sampled failed)\n", b.Region, pct(b.UpperBound), b.Defects, sm.Drawn)
		}
		if sm.MaxDefect > 0 {
			verdict := "within"
			if sm.WorstUpperBound > sm.MaxDefect {
				verdict = "ABOVE"
			}
			fmt.Fprintf(w, "max defect %s: the worst required region's bound %s is %s it\n", pct(sm.MaxDefect), pct(sm.WorstUpperBound), verdict)
		}
		fmt.Fprintf(w, "method: %s\n", sm.Method)
	}
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

// pct renders a fraction as a percentage with enough digits for small bounds.
func pct(f float64) string {
	return strconv.FormatFloat(100*f, 'g', 4, 64) + "%"
}
