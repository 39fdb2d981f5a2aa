package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// regionStatus counts records by their state in one region.
type regionStatus struct {
	Region   string `json:"region"`
	Wrapped  int    `json:"wrapped"`
	Verified int    `json:"verified"`
	Failing  int    `json:"failing"` // no wrap (or unverified) with a last error
	Missing  int    `json:"missing"` // no wrap
}

type statusReport struct {
	// Region is the region whose replica, queue and DLQ were read.
	Region string `json:"region"`
	// Skipped are the regions tried before it whose replica did not answer (without --region).
	Skipped    []recovery.SkippedRegion `json:"skipped"`
	Records    int                      `json:"records"`
	Replicated int                      `json:"replicated"` // records meeting the replication policy
	Regions    []regionStatus           `json:"regions"`
	Queued     int                      `json:"queued"`      // events in the region's queue (visible, in flight, delayed)
	DeadLetter int                      `json:"dead_letter"` // events in the region's DLQ
}

func init() {
	register(func() *cobra.Command {
		var (
			asJSON   bool
			quiet    bool
			segments int
			region   string
			timeout  time.Duration
		)
		cmd := &cobra.Command{
			Use:   "status",
			Short: "Summarise replication: records per region wrapped and verified, queue and DLQ depth",
			Long: `status scans one region's replica of the records table (parallel scan segments, constant
memory) and counts, per region, the records wrapped, verified, missing a wrap and failing (a last
error is recorded). It also reports the events still in that region's queue and in its
dead-letter queue. It reads only; use verify to re-check that each region can decrypt, and drill
to rehearse a loss. While it scans, progress goes to stderr (a bar on a terminal, a line every
5 s otherwise, with the estimated total and time left; --quiet: none).

Which replica: --region R reads R's and uses no other region's endpoints. Without it, status
reads the first replica that answers: the home region's, then the others in seal order, skipping
one that is unreachable, silent past --region-timeout, or answers 5xx; it says on stderr which
region it read and why it skipped the others ("region" and "skipped" in the JSON).

Exit status: 0 counted, 1 failed (no replica answered, or the scan failed), 2 bad usage.`,
			Example: `  envdr --config local/envdr.yaml status
  envdr status --region eu-west-1 --json | jq .dead_letter`,
			Args: noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				ctx := cmd.Context()
				if timeout <= 0 {
					return usageError("--region-timeout %s: use a positive duration such as 5s", timeout)
				}
				skipped := []recovery.SkippedRegion{}
				if region == "" {
					topo, err := regions.New(ctx, cfg, regions.Options{})
					if err != nil {
						return err
					}
					var skip []recovery.SkippedRegion
					region, skip, err = recovery.FirstReachable(ctx, cfg, topo, recovery.ReadOrder(cfg), timeout)
					if err != nil {
						return fmt.Errorf("status: %w", err)
					}
					skipped = append(skipped, skip...)
					for _, s := range skipped {
						fmt.Fprintf(cmd.ErrOrStderr(), "envdr: status: region %s skipped: %s\n", s.Region, s.Reason)
					}
					if len(skipped) > 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "envdr: status: reading region %s's replica\n", region)
					}
				}
				if _, ok := cfg.Region(region); !ok {
					return usageError("--region %s: not among the configured regions %v", region, cfg.RegionNames())
				}
				var others []string
				for _, n := range cfg.RegionNames() {
					if n != region {
						others = append(others, n)
					}
				}
				topo, err := regions.New(ctx, cfg, regions.Options{Exclude: others})
				if err != nil {
					return err
				}
				home, err := topo.Region(region)
				if err != nil {
					return err
				}
				pol := replicationPolicy(cfg)
				rep := statusReport{Region: region, Skipped: skipped}
				idx := map[string]int{}
				for i, n := range cfg.RegionNames() {
					idx[n] = i
					rep.Regions = append(rep.Regions, regionStatus{Region: n})
				}
				var mu sync.Mutex
				store := replicate.NewStore(cfg.Table, home.Name, home.DynamoDB(), cfg.RegionNames())
				progress := recovery.NewProgress(cmd.ErrOrStderr(), "status", quiet)
				if n, err := recovery.ApproxRecords(ctx, store, home.DynamoDB(), len(cfg.RegionNames())); err == nil {
					progress.SetTotal(n)
				}
				g, gctx := errgroup.WithContext(ctx)
				for seg := 0; seg < segments; seg++ {
					g.Go(func() error {
						return store.Scan(gctx, seg, segments, func(r *envelope.Record) error {
							ok, _ := pol.Met(r)
							progress.Add(1)
							mu.Lock()
							defer mu.Unlock()
							rep.Records++
							if ok {
								rep.Replicated++
							}
							for name, i := range idx {
								w := r.Regions[name]
								rs := &rep.Regions[i]
								switch {
								case w.Verified():
									rs.Verified++
									rs.Wrapped++
								case w.HasWrap():
									rs.Wrapped++
								default:
									rs.Missing++
								}
								if w != nil && w.LastError != "" && !w.Verified() {
									rs.Failing++
								}
							}
							return nil
						})
					})
				}
				err = g.Wait()
				progress.Finish()
				if err != nil {
					return err
				}
				queueURL, dlqURL := cfg.Queues(region)
				if queueURL != "" {
					if rep.Queued, err = replicate.QueueDepth(ctx, home.SQS(), queueURL); err != nil {
						return fmt.Errorf("region %s: queue %s: %w", home.Name, queueURL, err)
					}
				}
				if dlqURL != "" {
					if rep.DeadLetter, err = replicate.QueueDepth(ctx, home.SQS(), dlqURL); err != nil {
						return fmt.Errorf("region %s: DLQ %s: %w", home.Name, dlqURL, err)
					}
				}
				out := cmd.OutOrStdout()
				if asJSON {
					return writeJSON(out, rep)
				}
				fmt.Fprintf(out, "region %s: records: %d, replicated per policy: %d, queued events: %d, dead-letter events: %d\n",
					rep.Region, rep.Records, rep.Replicated, rep.Queued, rep.DeadLetter)
				t := newTable(out, "REGION", "WRAPPED", "VERIFIED", "MISSING", "FAILING")
				for _, rs := range rep.Regions {
					t.row(rs.Region, rs.Wrapped, rs.Verified, rs.Missing, rs.Failing)
				}
				return t.flush()
			},
		}
		addOutputFlag(cmd, &asJSON)
		cmd.Flags().IntVar(&segments, "segments", 4, "parallel scan segments")
		cmd.Flags().StringVar(&region, "region", "", "read this region's table replica, queue and DLQ, and no other region's (default: the first that answers, home_region first)")
		cmd.Flags().DurationVar(&timeout, "region-timeout", recovery.DefaultRegionTimeout, "how long a region's replica may take to answer before status reads the next")
		cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress output on stderr")
		return cmd
	})
}
