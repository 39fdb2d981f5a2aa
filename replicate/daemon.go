// Package replicate is the envdr worker: the SQS consumer lifecycle, the per-event pipeline
// (wrap in every region, merge the multi-wrapped record with conditional writes, verify each
// region alone), the DynamoDB record store, DLQ routing, the admin endpoints and metrics.
package replicate

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"go.uber.org/zap"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// DaemonOptions tune NewDaemon.
type DaemonOptions struct {
	// AdminAddr is where /healthz, /readyz and /metrics are served; empty: none.
	AdminAddr string
	// WaitTime is the SQS long-poll wait (default 20 s).
	WaitTime time.Duration
	// RetryBase is the first redelivery delay of an event whose policy is not met yet.
	RetryBase time.Duration
	// Regions are passed to regions.New.
	Regions regions.Options
	// Region is the region this daemon runs for: it consumes that region's queue and writes
	// through that region's replica of the table (default: the home region).
	Region string
	// Version and Commit label envdr_build_info (empty: read from the binary's build info).
	Version, Commit string
}

// Daemon is envdr run: topology, pipeline, consumer and admin server.
type Daemon struct {
	Metrics  *Metrics
	Ready    *Readiness
	topo     *regions.Topology
	consumer *Consumer
	admin    *AdminServer
	queueURL string
	sqs      SQSAPI
	log      *zap.Logger
	region   string
	// scrub, when scrubbing is on, re-verifies the region's wraps in the background.
	scrub        *Scrubber
	stopScrub    context.CancelFunc
	scrubStopped chan struct{}
}

// Region is the region this daemon runs for.
func (d *Daemon) Region() string { return d.region }

// NewDaemon builds the clients of every region, checks every region's key (a bad setup stops
// start-up with an error naming region and key), and prepares the consumer.
func NewDaemon(ctx context.Context, cfg *config.Config, log *zap.Logger, opts DaemonOptions) (*Daemon, error) {
	region := opts.Region
	if region == "" {
		region = cfg.HomeRegion
	}
	if _, ok := cfg.Region(region); !ok {
		return nil, fmt.Errorf("region %s: %w (configured: %v)", region, regions.ErrNotConfigured, cfg.RegionNames())
	}
	queueURL, dlqURL := cfg.Queues(region)
	if queueURL == "" {
		return nil, fmt.Errorf("region %s: no events queue; set regions[].queue_url for it (or queue_url for the home region)", region)
	}
	if dlqURL == "" {
		return nil, fmt.Errorf("region %s: no dead-letter queue; set regions[].dlq_url for it (or dlq_url for the home region)", region)
	}
	log = log.With(zap.String("daemon_region", region))
	m := NewMetrics()
	m.SetBuild(opts.Version, opts.Commit)
	m.InitRegions(cfg.RegionNames())
	opts.Regions.Observer = m
	topo, err := regions.New(ctx, cfg, opts.Regions)
	if err != nil {
		return nil, err
	}
	keys, err := topo.CheckKeys(ctx)
	if err != nil {
		// A region that cannot be reached is an outage, not a bad setup: start anyway so the
		// healthy regions are served, and leave that region's work for when it returns. Any
		// other finding (missing, disabled or unrelated key) stops start-up.
		if setupErr := regions.WithoutUnavailable(err); setupErr != nil {
			return nil, fmt.Errorf("key setup: %w", setupErr)
		}
		log.Warn("some regions are unreachable at start-up; their work is deferred until they answer", zap.Error(err))
	}
	// Ready once this daemon's own region answers: another region's loss is a degraded state
	// (envdr_region_healthy, the logs), not a reason to take this task out of service.
	ready := NewReadiness([]string{region})
	if _, ok := keys[region]; ok {
		ready.Answered(region)
	}
	p, err := NewPipeline(topo, region, log, m, ready)
	if err != nil {
		return nil, err
	}
	self, err := topo.Region(region)
	if err != nil {
		return nil, err
	}
	d := &Daemon{Metrics: m, Ready: ready, topo: topo, queueURL: queueURL, sqs: self.SQS(), log: log, region: region}
	if d.scrub, err = NewScrubber(topo, region, log, m); err != nil {
		return nil, fmt.Errorf("scrub: %w", err)
	}
	m.WatchQueues(self.SQS(), queueURL, dlqURL)
	d.consumer = NewConsumer(ConsumerConfig{
		QueueURL: queueURL, DLQURL: dlqURL, Concurrency: cfg.Worker.Concurrency,
		Visibility: cfg.Worker.Visibility, WaitTime: opts.WaitTime, RetryBase: opts.RetryBase, MaxAge: cfg.Worker.MaxAge,
		CallTimeout: cfg.Worker.SQSTimeout,
	}, self.SQS(), p, log, m)
	if opts.AdminAddr != "" {
		if d.admin, err = StartAdmin(opts.AdminAddr, m, ready); err != nil {
			return nil, fmt.Errorf("admin endpoint %s: %w", opts.AdminAddr, err)
		}
	}
	return d, nil
}

// AdminAddr is the admin server's address ("" when none).
func (d *Daemon) AdminAddr() string {
	if d.admin == nil {
		return ""
	}
	return d.admin.Addr()
}

// Start starts consuming.
func (d *Daemon) Start(ctx context.Context) error {
	if err := d.consumer.Start(ctx); err != nil {
		return err
	}
	d.Ready.SetRunning(true)
	if d.scrub != nil {
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		d.stopScrub, d.scrubStopped = cancel, make(chan struct{})
		go func() {
			defer close(d.scrubStopped)
			d.scrub.Run(sctx)
		}()
	}
	d.log.Info("envdr run started", zap.String("region", d.region), zap.Strings("regions", d.topo.Names()), zap.String("queue", d.queueURL), zap.String("admin", d.AdminAddr()))
	return nil
}

// Stop stops fetching, waits for in-flight work until ctx ends, then cancels it, and closes the
// admin server.
func (d *Daemon) Stop(ctx context.Context) {
	d.Ready.SetRunning(false)
	if d.stopScrub != nil {
		d.stopScrub() // a scrub pass resumes from its lease
		<-d.scrubStopped
	}
	d.consumer.Stop(ctx)
	if d.admin != nil {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = d.admin.Close(c)
	}
}

// Stopped is closed once the consumer has stopped.
func (d *Daemon) Stopped() <-chan struct{} { return d.consumer.Stopped() }

// QueueDepth returns the messages visible, in flight and delayed in the queue.
func (d *Daemon) QueueDepth(ctx context.Context) (int, error) {
	return QueueDepth(ctx, d.sqs, d.queueURL)
}

// QueueDepth returns the messages visible, in flight and delayed in queueURL.
func QueueDepth(ctx context.Context, q SQSAPI, queueURL string) (int, error) {
	out, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(queueURL),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible, sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed},
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, v := range out.Attributes {
		i, _ := strconv.Atoi(v)
		n += i
	}
	return n, nil
}
