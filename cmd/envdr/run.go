package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/envdr/envdr/internal/procs"
	"github.com/envdr/envdr/replicate"
)

func init() {
	register(func() *cobra.Command {
		var (
			adminAddr string
			waitTime  time.Duration
			retryBase time.Duration
			drain     bool
			region    string
			cpuProf   string
		)
		cmd := &cobra.Command{
			Use:   "run",
			Short: "Run the replicator daemon: wrap every new DEK in every region and prove each region can open it",
			Long: `run is the daemon of one region (--region, default ENVDR_REGION, then home_region); run one or more
in every region. It consumes that region's queue (regions[].queue_url; queue_url for the home region
of a single-queue setup). For each event it wraps the same data key under the key of every
configured region (ReEncrypt inside KMS for multi-Region replica keys, opening the event's wrap
through its own region's replica; Decrypt once + Encrypt for independent keys, wiping the key at
once), merges the wraps into the record through its own region's replica of the DynamoDB table with
conditional writes, verifies each region alone (its own table endpoint, its own KMS, key
commitment), and deletes the message only when every required region's own replica shows its
wrap. Events are idempotent: copies in two regions' queues and redeliveries do no harm. Poison
events go to the region's DLQ with a reason attribute.

Admin endpoints on --admin-addr: /healthz, /readyz (ready once this daemon's own region answers;
another region's loss is a degraded state on /metrics, envdr_region_healthy, not unreadiness),
/metrics (Prometheus). Logs are JSON on stderr, one line per event outcome.

SIGTERM or SIGINT stops receiving at once, lets in-flight events finish within worker.grace, and
leaves unfinished messages for redelivery; exit status 0.`,
			Example: `  envdr --config local/envdr.yaml run --admin-addr 127.0.0.1:9090
  envdr --config local/envdr.yaml run --region eu-west-1 --admin-addr 127.0.0.1:9091
  envdr --config local/envdr.yaml run --drain      # exit 0 once the queue is empty (demos, backfills)`,
			Args: noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := checkRunFlags(waitTime, retryBase); err != nil {
					return err
				}
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				log, err := newLogger(globalLogLevel)
				if err != nil {
					return err
				}
				defer func() { _ = log.Sync() }()
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
				defer stop()
				tuneGC()
				procs.Follow(ctx, procs.DefaultPolicy, func(from, to int) {
					log.Debug("GOMAXPROCS follows the load", zap.Int("from", from), zap.Int("to", to))
				})
				if cpuProf != "" {
					stopProf, err := startCPUProfile(cpuProf)
					if err != nil {
						return err
					}
					defer stopProf()
				}
				if region != "" {
					if _, ok := cfg.Region(region); !ok {
						return usageError("--region %s: not among the configured regions %v", region, cfg.RegionNames())
					}
				}
				d, err := replicate.NewDaemon(ctx, cfg, log, replicate.DaemonOptions{AdminAddr: adminAddr, WaitTime: waitTime, RetryBase: retryBase, Region: region,
					Version: buildVersion().Version, Commit: buildVersion().Commit})
				if err != nil {
					return err
				}
				if err := d.Start(context.Background()); err != nil {
					return err
				}
				if drain {
					go waitDrained(ctx, d, stop, log)
				}
				<-ctx.Done()
				log.Info("stopping: no new messages; finishing in-flight work", zap.Duration("grace", cfg.Worker.Grace))
				gctx, cancel := context.WithTimeout(context.Background(), cfg.Worker.Grace)
				defer cancel()
				d.Stop(gctx)
				log.Info("stopped")
				return nil
			},
		}
		f := cmd.Flags()
		def := os.Getenv("ENVDR_ADMIN_ADDR")
		if def == "" {
			def = "127.0.0.1:9090"
		}
		f.StringVar(&adminAddr, "admin-addr", def, "address of /healthz, /readyz, /metrics (empty: off); env ENVDR_ADMIN_ADDR")
		f.DurationVar(&waitTime, "wait-time", 20*time.Second, "SQS long-poll wait (1s-20s)")
		f.DurationVar(&retryBase, "retry-base", 2*time.Second, "first redelivery delay of an event whose regions are not all done")
		f.BoolVar(&drain, "drain", false, "exit once the queue (visible, in flight and delayed) stays empty")
		f.StringVar(&region, "region", os.Getenv("ENVDR_REGION"), "the region this daemon runs for: its queue, its table replica (default home_region); env ENVDR_REGION")
		f.StringVar(&cpuProf, "cpu-profile", "", "write a pprof CPU profile of the whole run to this file (go tool pprof; make bench does)")
		return cmd
	})
}

// checkRunFlags refuses what SQS or the daemon cannot take, instead of quietly using something
// else: a long-poll wait is whole seconds from 1 to 20 (SQS's WaitTimeSeconds; 0 would be short
// polling, a receive call after another on an idle queue), and redelivery needs a delay.
func checkRunFlags(waitTime, retryBase time.Duration) error {
	if waitTime < time.Second || waitTime > 20*time.Second || waitTime%time.Second != 0 {
		return usageError("--wait-time %s: the SQS long-poll wait is whole seconds from 1s to 20s", waitTime)
	}
	if retryBase <= 0 {
		return usageError("--retry-base %s: the first redelivery delay must be above 0, e.g. 2s", retryBase)
	}
	return nil
}

// daemonGCPercent is the GOGC of the daemon and of the scanning commands (verify, drill, status,
// rewrap) unless the environment sets GOGC: their live heap is a few MiB, so letting the heap
// grow to five times that before a collection costs little memory and halves the CPU the
// collector takes per event or record (docs/BENCH.md, "A lean daemon").
const daemonGCPercent = 400

// daemonMemoryLimit is its soft memory limit unless GOMEMLIMIT is set: the collector works
// harder as the heap nears it, so a burst of work cannot grow the heap without bound.
const daemonMemoryLimit = 256 << 20

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(daemonGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(daemonMemoryLimit)
	}
}

// startCPUProfile profiles the process's CPU into path until the returned stop is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("--cpu-profile %s: %w", path, err)
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}

// waitDrained stops the daemon once the queue has been empty for two checks in a row.
func waitDrained(ctx context.Context, d *replicate.Daemon, stop func(), log *zap.Logger) {
	empty := 0
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := d.QueueDepth(ctx)
		if err != nil {
			log.Warn("reading the queue depth failed", zap.Error(err))
			empty = 0
			continue
		}
		if n == 0 {
			empty++
		} else {
			empty = 0
		}
		if empty >= 2 {
			log.Info("queue drained")
			stop()
			return
		}
	}
}
