package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws/admin"
	"github.com/envdr/envdr/recovery"
)

func init() {
	register(func() *cobra.Command {
		var (
			opts      recovery.GamedayOptions
			report    string
			asJSON    bool
			noControl bool
			force     bool
		)
		cmd := &cobra.Command{
			Use:   "gameday --lose R [--rate N | --envelopes N] [--before D] [--during D] [--report PATH]",
			Short: "Live drill: keep sealing while region R is lost; measure RPO, RTO and the catch-up",
			Long: `gameday is a live failover drill. With the deployment's daemons running in every region
(envdr run --region R), it seals and enqueues envelopes (--rate per second) for --before, loses
region R, keeps sealing for --during (seal falls over by itself when R was the first sealing
region), and checks, as it goes, that each envelope opens in every surviving region alone (the
record from that region's table, its wrap decrypted with that region's KMS, the commitment
checked). While R is still lost it also opens an envelope sealed before the loss and one sealed
during it as plain envdr open does, without --region, and reports which region served. Then it
restores R and waits until everything opens in R alone.

It reports, in the terminal and in PATH.md, PATH.html and PATH.json (--report):
  RPO         envelopes sealed and enqueued that no surviving region could open alone by the end
              of the outage (target 0);
  RTO         seconds from the loss until new envelopes were open in every surviving region alone;
  catch-up    seconds from R's return until every envelope opened in R alone;
  protection  per envelope, seconds from its seal until it opened alone in every required region
              (R included) and in every surviving region: p50, p99, p99.9, p99.99 and max.
--envelopes N seals N envelopes in all (10,000 or more for a meaningful p99.99).

The JSON report carries the schema version, envdr version, host, caller (STS GetCallerIdentity)
and a SHA-256 digest that envdr drill verify-report checks; the HTML page draws the loss window,
the RTO, each envelope's protection time and the catch-up as inline SVG charts.

On the local stand-in (a config with local.admin) gameday takes R down and back itself. Against
AWS, block R's endpoints first (network policy, VPC endpoint policy) and pass --no-control:
gameday then never contacts R and measures RPO and RTO only.

Exit status: 0 passed (RPO 0, every seal and enqueue succeeded, R caught up), 1 failed, 2 bad usage.`,
			Example: `  envdr --config local/envdr.yaml gameday --lose us-east-1 --report drills/gameday-us-east-1
  envdr gameday --lose eu-west-1 --no-control --during 10m --rate 5
  envdr --config local/envdr.yaml gameday --lose us-east-1 --envelopes 10000 --before 30s --during 60s --report drills/gd
  envdr drill verify-report drills/gd.json`,
			Args: noArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				if opts.Lose == "" {
					return usageError("--lose REGION is required (see envdr gameday --help)")
				}
				if _, ok := cfg.Region(opts.Lose); !ok {
					return usageError("--lose %s: not among the configured regions %v", opts.Lose, cfg.RegionNames())
				}
				if !noControl {
					if cfg.Local == nil || cfg.Local.Admin == "" {
						return usageError("this config has no local.admin (not the local stand-in): block %s's endpoints yourself and pass --no-control", opts.Lose)
					}
					opts.Control = admin.NewClient(cfg.Local.Admin)
				}
				if err := checkReportTarget(c.Context(), cfg, report, force, c.CommandPath(), opts.Lose, false); err != nil {
					return err
				}
				if opts.Envelopes < 0 {
					return usageError("--envelopes %d: use a positive count (0: seal at --rate for --before and --during)", opts.Envelopes)
				}
				v := buildVersion()
				opts.Envdr = recovery.Build{Version: v.Version, Commit: v.Commit}
				opts.Log = func(s string) { fmt.Fprintf(c.ErrOrStderr(), "gameday: %s\n", s) }
				opts.Open = openWithoutRegion(cfg, opts.SealTimeout)
				rep, err := recovery.Gameday(c.Context(), cfg, opts)
				if err != nil {
					return withCode(exitFailure, fmt.Errorf("gameday: %w", err))
				}
				if report != "" {
					paths, err := writeReport(c.Context(), cfg, report, force, opts.Lose, rep)
					if err != nil {
						return err
					}
					for _, p := range paths {
						fmt.Fprintf(c.ErrOrStderr(), "report: %s\n", p)
					}
				}
				if asJSON {
					err = rep.WriteJSON(c.OutOrStdout())
				} else {
					err = rep.WriteMarkdown(c.OutOrStdout())
				}
				if err != nil {
					return err
				}
				if !rep.Passed {
					hint := ""
					if rep.Sealed > 0 && rep.RPOEnvelopes == rep.Sealed {
						hint = " (not one envelope was protected: is envdr run --region R running for the surviving regions?)"
					}
					return withCode(exitFindings, fmt.Errorf("gameday lose %s: FAILED: RPO %d envelopes, %d seal and %d enqueue failures, %d not caught up%s",
						rep.Lost, rep.RPOEnvelopes, rep.SealFailures, rep.EnqueueFails, rep.NotCaughtUp, hint))
				}
				return nil
			},
		}
		f := cmd.Flags()
		f.StringVar(&opts.Lose, "lose", "", "the region to lose")
		f.Float64Var(&opts.Rate, "rate", 2, "envelopes sealed and enqueued per second")
		f.BoolVar(&opts.Objects, "objects", false, "during the loss, put each envelope in its sealing region's bucket (regions[].bucket) instead of enqueueing it: the S3 event source must protect it")
		f.IntVar(&opts.Envelopes, "envelopes", 0, "seal this many envelopes in all (e.g. 10000), shared by --before and --during at the rate that takes; overrides --rate")
		f.DurationVar(&opts.Before, "before", 5*time.Second, "how long to seal before the loss")
		f.DurationVar(&opts.During, "during", 20*time.Second, "how long to seal while the region is lost")
		f.DurationVar(&opts.Within, "within", 2*time.Minute, "how long to wait for protection after sealing stops, and for the catch-up")
		f.DurationVar(&opts.SealTimeout, "region-timeout", 5*time.Second, "how long one region may take to make a data key before seal falls over")
		f.StringVar(&report, "report", "", "write PATH.md, PATH.html and PATH.json, or to S3 with s3://bucket/prefix (never over existing files without --force)")
		f.BoolVar(&force, "force", false, "overwrite existing --report files")
		addOutputFlag(cmd, &asJSON)
		f.BoolVar(&noControl, "no-control", false, "do not take the region down and back (AWS: you block its endpoints); R is never contacted")
		return cmd
	})
}

// openWithoutRegion opens a whole envelope as `envdr open IN OUT` does without --region (the
// sealing region first, then seal order, skipping regions that are out), discarding the
// plaintext; the game day shows with it that the plain command works during the loss.
func openWithoutRegion(cfg *config.Config, timeout time.Duration) func(context.Context, []byte) (string, []string, error) {
	return func(ctx context.Context, file []byte) (string, []string, error) {
		hdr, src, err := readHeaderKeep(bytes.NewReader(file))
		if err != nil {
			return "", nil, err
		}
		rd := &readers{cfg: cfg, hdr: hdr, timeout: timeout}
		got, err := rd.fallOver(ctx)
		if err != nil {
			return "", nil, err
		}
		defer envelope.Wipe(got.dek)
		var skipped []string
		for _, s := range got.skipped {
			skipped = append(skipped, s.Region)
		}
		if _, err := envelope.Open(ctx, io.Discard, src, heldDEK(got.dek), envelope.OpenOptions{Wrap: got.wrap}); err != nil {
			return got.region, skipped, fmt.Errorf("record %s through region %s: %w", hdr.RecordID(), got.region, err)
		}
		return got.region, skipped, nil
	}
}
