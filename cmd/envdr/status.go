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
	// OldestUnprotected is the oldest record the replication policy still waits for this region
	// on (it lacks the region's wrap, or that wrap's verification): the region lagging longest
	// shows the oldest. Null when none.
	OldestUnprotected *unprotected `json:"oldest_unprotected"`
}

// unprotected names a record not yet meeting the replication policy, and how old it is.
type unprotected struct {
	ID           string    `json:"id"`
	SourceRegion string    `json:"source_region"`
	CreatedAt    time.Time `json:"created_at"`
	AgeSeconds   float64   `json:"age_seconds"`
}

// older keeps in *cur whichever of it and r was created first.
func older(cur **unprotected, r *envelope.Record) {
	if *cur == nil || r.CreatedAt.Before((*cur).CreatedAt) {
		*cur = &unprotected{ID: r.ID, SourceRegion: r.SourceRegion, CreatedAt: r.CreatedAt.UTC()}
	}
}

// age renders an oldest-unprotected entry for the table: its age, or "-" when none.
func (u *unprotected) age() string {
	if u == nil {
		return "-"
	}
	return time.Duration(u.AgeSeconds * float64(time.Second)).Round(time.Second).String()
}

type statusReport struct {
	// Region is the region whose replica, queue and DLQ were read.
	Region string `json:"region"`
	// Shard is the --shard i/N this run counted ("" for the whole table): the record counts are
	// that part of the table's; the queue and DLQ depths are the region's.
	Shard string `json:"shard,omitempty"`
	// Skipped are the regions tried before it whose replica did not answer (without --region).
	Skipped    []recovery.SkippedRegion `json:"skipped"`
	Records    int                      `json:"records"`
	Replicated int                      `json:"replicated"` // records meeting the replication policy
	// OldestUnprotected is the oldest record in this replica not meeting the replication policy:
	// the decryptability recovery point as this region sees it. Null when every record meets it.
	OldestUnprotected *unprotected   `json:"oldest_unprotected"`
	Regions           []regionStatus `json:"regions"`
	Queued            int            `json:"queued"`      // events in the region's queue (visible, in flight, delayed)
	DeadLetter        int            `json:"dead_letter"` // events in the region's DLQ
}

func init() {
	register(func() *cobra.Command {
		var (
			asJSON   bool
			quiet    bool
			segments int
			region   string
			timeout  time.Duration
			shardArg shardSpec
		)
		cmd := &cobra.Command{
			Use:   "status [--region R] [--shard i/N]",
			Short: "Summarise replication: records per region wrapped and verified, queue and DLQ depth",
			Long: `status scans one region's replica of the records table (parallel scan segments, constant
memory) and counts, per region, the records wrapped, verified, missing a wrap and failing (a last
error is recorded). It names the oldest record not yet protected (not meeting the replication
policy in this replica) and, per region, the oldest one the policy still waits for that region
on: the decryptability recovery point as this replica sees it. It also reports the events still in that region's queue and in its
dead-letter queue. It reads only; use verify to re-check that each region can decrypt, and drill
to rehearse a loss. While it scans, progress goes to stderr (a bar on a terminal, a line every
5 s otherwise, with the estimated total and time left; --quiet: none).

Which replica: --region R reads R's and uses no other region's endpoints. Without it, status
reads the first replica that answers: the home region's, then the others in seal order, skipping
one that is unreachable, silent past --region-timeout, or answers 5xx; it says on stderr which
region it read and why it skipped the others ("region" and "skipped" in the JSON).

--shard i/N counts this process's part of one parallel scan of --segments x N segments: N
processes given the same --segments count every record once between them, and their record
counts add up to the table's (the queue and DLQ depths are the region's, the same in each; the
table's oldest unprotected record is the oldest of the shards'). status only reads, so a shard
keeps no checkpoint: a shard that stopped is simply run again.

Exit status: 0 counted, 1 failed (no replica answered, or the scan failed), 2 bad usage.`,
			Example: `  envdr --config local/envdr.yaml status
  envdr status --region eu-west-1 --json | jq .dead_letter
  # one of four processes counting a large table
  envdr status --shard 3/4 --segments 8 --json`,
			Args: noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				// A scan's live heap is small and flat: collect less often (as envdr run does).
				tuneGC()
				ctx := cmd.Context()
				if timeout <= 0 {
					return usageError("--region-timeout %s: use a positive duration such as 5s", timeout)
				}
				if segments < 1 {
					return usageError("--segments %d: want 1 or more", segments)
				}
				var shard recovery.Shard
				if shardArg.spec != "" {
					if shard, err = shardArg.parse(); err != nil {
						return usageError("%v", err)
					}
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
				rep := statusReport{Region: region, Shard: shard.String(), Skipped: skipped}
				idx := map[string]int{}
				for i, n := range cfg.RegionNames() {
					idx[n] = i
					rep.Regions = append(rep.Regions, regionStatus{Region: n})
				}
				var mu sync.Mutex
				store := replicate.NewStore(cfg.Table, home.Name, home.DynamoDB(), cfg.RegionNames())
				progress := recovery.NewProgress(cmd.ErrOrStderr(), "status", quiet)
				if n, err := recovery.ApproxRecords(ctx, store, home.DynamoDB(), len(cfg.RegionNames())); err == nil {
					progress.SetTotal(n / int64(max(shard.Count, 1)))
				}
				g, gctx := errgroup.WithContext(ctx)
				total, segs := shard.Segments(segments)
				for _, seg := range segs {
					g.Go(func() error {
						return store.Scan(gctx, seg, total, func(r *envelope.Record) error {
							ok, missing := pol.Met(r)
							progress.Add(1)
							mu.Lock()
							defer mu.Unlock()
							rep.Records++
							if ok {
								rep.Replicated++
							} else {
								older(&rep.OldestUnprotected, r)
								for _, name := range missing {
									if i, known := idx[name]; known {
										older(&rep.Regions[i].OldestUnprotected, r)
									}
								}
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
				now := time.Now()
				setAge := func(u *unprotected) {
					if u != nil {
						u.AgeSeconds = max(now.Sub(u.CreatedAt), 0).Seconds()
					}
				}
				setAge(rep.OldestUnprotected)
				for i := range rep.Regions {
					setAge(rep.Regions[i].OldestUnprotected)
				}
				out := cmd.OutOrStdout()
				if asJSON {
					return writeJSON(out, rep)
				}
				where := rep.Region
				if rep.Shard != "" {
					where += " shard " + rep.Shard + " (this part of the table only)"
				}
				fmt.Fprintf(out, "region %s: records: %d, replicated per policy: %d, queued events: %d, dead-letter events: %d\n",
					where, rep.Records, rep.Replicated, rep.Queued, rep.DeadLetter)
				if u := rep.OldestUnprotected; u != nil {
					fmt.Fprintf(out, "oldest not protected: %s, sealed in %s at %s (%s ago)\n",
						u.ID, u.SourceRegion, u.CreatedAt.Format(time.RFC3339), u.age())
				}
				t := newTable(out, "REGION", "WRAPPED", "VERIFIED", "MISSING", "FAILING", "OLDEST UNPROTECTED (AGE)")
				for _, rs := range rep.Regions {
					t.row(rs.Region, rs.Wrapped, rs.Verified, rs.Missing, rs.Failing, rs.OldestUnprotected.age())
				}
				return t.flush()
			},
		}
		addOutputFlag(cmd, &asJSON)
		cmd.Flags().IntVar(&segments, "segments", 4, "parallel scan segments (per shard with --shard)")
		cmd.Flags().StringVar(&shardArg.spec, "shard", "", "i/N: count this process's part of one scan split N ways (the same --segments in every shard)")
		cmd.Flags().IntVar(&shardArg.base, "shard-base", 1, "where --shard's i counts from: 1 (1/N ... N/N) or 0 (0/N ... N-1/N, a Kubernetes Indexed Job's $(JOB_COMPLETION_INDEX))")
		cmd.Flags().StringVar(&region, "region", "", "read this region's table replica, queue and DLQ, and no other region's (default: the first that answers, home_region first)")
		cmd.Flags().DurationVar(&timeout, "region-timeout", recovery.DefaultRegionTimeout, "how long a region's replica may take to answer before status reads the next")
		cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress output on stderr")
		return cmd
	})
}
