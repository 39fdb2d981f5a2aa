package replicate

import (
	"context"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/envdr/envdr/regions"
)

// Metrics are the daemon's Prometheus metrics, on their own registry (no globals). The alerts in
// deploy/monitoring/ name only metrics defined here (and the drill's, DrillMetrics); a test in
// test/deploycheck checks every one of them.
type Metrics struct {
	Registry *prometheus.Registry
	// reg registers on Registry with the constant label daemon_region (the region this daemon
	// runs in) on every series, when known: one Prometheus or Thanos over several regions tells
	// their fleets apart. Not "region": that label names the region a wrap or KMS call is for.
	reg    prometheus.Registerer
	Events *prometheus.CounterVec   // outcome, reason
	Wrap   *prometheus.HistogramVec // region
	Verify *prometheus.HistogramVec // region
	// ReplicaWait is how long a verification waited for the region's own replica to hold the
	// wrap written elsewhere: the global table's replication lag as the daemon sees it.
	ReplicaWait *prometheus.HistogramVec // region
	KMSCalls    *prometheus.CounterVec   // region, op, result
	KMSLatency  *prometheus.HistogramVec // region, op
	Throttles   *prometheus.CounterVec   // region, op
	InFlight    prometheus.Gauge
	OldestAge   prometheus.Gauge     // per daemon; the region is daemon_region
	Healthy     *prometheus.GaugeVec // region
	Requeued    prometheus.Counter
	DLQ         *prometheus.CounterVec // reason
	RecordCASs  *prometheus.CounterVec // result: ok, conflict
	// RegionFailures counts wraps and verifications that failed, by region and phase (wrap,
	// verify). Failures live here and in the logs, never in the table: a write without a wrap
	// must not share an item with one (docs/FORMAT.md §6.1, I3).
	RegionFailures *prometheus.CounterVec // region, phase
	// Repairs counts recorded wraps that failed their commitment (or that KMS refused as
	// invalid) and were replaced with a checked wrap, by region.
	Repairs *prometheus.CounterVec // region
	// Protection is the decryptability RPO per envelope: the time from its seal (the event's
	// created_at) to the acknowledgement that found every required region's own replica holding
	// its (verified) wrap, by sealing region. Observed once per envelope: by the pass that moved
	// it from unprotected to protected in its replica, or by the ack of a message whose earlier
	// delivery left it unacked (copies of a protected record are not; a duplicate worked at the
	// same moment, or a copy acked while this message waited for redelivery, may add a second,
	// later sample).
	Protection *prometheus.HistogramVec // source_region
	// Scrub are the scrubber's metrics (envdr_scrub_*), zero while scrubbing is off.
	Scrub     *ScrubMetrics
	BuildInfo *prometheus.GaugeVec // version, commit, goversion: always 1
}

// ProtectionBuckets bound envdr_protection_seconds: fine around the default SLO (99.99% within
// 15 s), coarse out to an hour (an outage's backlog).
var ProtectionBuckets = []float64{0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600, 1800, 3600}

// KMSOps are the KMS operations the daemon sends, pre-created per region so rate() and the
// alerts see a zero before the first call or throttle.
var KMSOps = []string{"GenerateDataKey", "Decrypt", "Encrypt", "ReEncrypt", "DescribeKey"}

// DaemonRegionLabel is the constant label NewRegionMetrics puts on every series: the region the
// daemon runs in, whose queue and DLQ it reads. The alerts group by it.
const DaemonRegionLabel = "daemon_region"

// NewMetrics registers every metric on a fresh registry, with no daemon_region label (tests,
// tools that run no daemon).
func NewMetrics() *Metrics { return NewRegionMetrics("") }

// NewRegionMetrics registers every metric on a fresh registry, each series labelled
// daemon_region=region (none when region is empty).
func NewRegionMetrics(region string) *Metrics {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envdr_events_total",
			Help: "Events handled, by outcome (acked, retry, poison, requeued, expired, ignored) and reason."}, []string{"outcome", "reason"}),
		Wrap: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "envdr_wrap_seconds",
			Help: "Latency of wrapping one DEK in a region (ReEncrypt or Encrypt); successful wraps only.", Buckets: buckets}, []string{"region"}),
		Verify: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "envdr_verify_seconds",
			Help: "Latency of verifying one region's wrap once its replica holds it (table read, Decrypt, commitment; the wait for replication is envdr_replica_wait_seconds); successful verifications only, so _count is the verified wraps.", Buckets: buckets}, []string{"region"}),
		ReplicaWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "envdr_replica_wait_seconds",
			Help: "Time a verification waited for the region's own table replica to hold the wrap written elsewhere (global table replication lag).", Buckets: buckets}, []string{"region"}),
		KMSCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envdr_kms_calls_total",
			Help: "KMS requests sent, by region, operation and result (ok or error)."}, []string{"region", "op", "result"}),
		KMSLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "envdr_kms_call_seconds",
			Help: "Latency of one KMS request (each try, errors included), by region and operation.", Buckets: buckets}, []string{"region", "op"}),
		Throttles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envdr_kms_throttles_total",
			Help: "ThrottlingException answers, by region and operation."}, []string{"region", "op"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "envdr_inflight_events",
			Help: "Events being worked on now."}),
		OldestAge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "envdr_oldest_message_age_seconds",
			Help: "Age, since the event was first sent (re-sends keep it), of the oldest message received in the last fetch."}),
		Healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "envdr_region_healthy",
			Help: "1 when the region answered its last call, 0 while it is deferred as unhealthy."}, []string{"region"}),
		Requeued: prometheus.NewCounter(prometheus.CounterOpts{Name: "envdr_requeued_total",
			Help: "Events sent again to the queue (fresh receive count) before SQS would redrive them to the DLQ."}),
		DLQ: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envdr_dlq_total",
			Help: "Poison events sent to the DLQ, by reason."}, []string{"reason"}),
		RecordCASs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envdr_record_writes_total",
			Help: "Conditional record writes, by result (ok, conflict)."}, []string{"result"}),
		RegionFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envdr_region_failures_total",
			Help: "Wraps and verifications that failed, by region and phase (wrap, verify)."}, []string{"region", "phase"}),
		Repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envdr_wrap_repairs_total",
			Help: "Recorded wraps that failed their key commitment (or that KMS refused) and were replaced with a checked wrap, by region."}, []string{"region"}),
		Protection: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "envdr_protection_seconds",
			Help:    "Seconds from an envelope's seal to the acknowledgement that every required region's own replica holds its verified wrap (the decryptability RPO), by sealing region.",
			Buckets: ProtectionBuckets}, []string{"source_region"}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "envdr_build_info",
			Help: "Always 1; the labels name the running envdr build."}, []string{"version", "commit", "goversion"}),
	}
	m.reg = m.Registry
	if region != "" {
		m.reg = prometheus.WrapRegistererWith(prometheus.Labels{DaemonRegionLabel: region}, m.Registry)
	}
	m.Scrub = newScrubMetrics()
	m.reg.MustRegister(m.Scrub.collectors()...)
	m.reg.MustRegister(m.Events, m.Wrap, m.Verify, m.ReplicaWait, m.KMSCalls, m.KMSLatency, m.Throttles, m.InFlight, m.OldestAge,
		m.Healthy, m.Requeued, m.DLQ, m.RecordCASs, m.RegionFailures, m.Repairs, m.Protection, m.BuildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.SetBuild("", "")
	return m
}

// SetBuild sets envdr_build_info; an empty version or commit is read from the binary's build
// information (the main module version, vcs.revision).
func (m *Metrics) SetBuild(version, commit string) {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && commit == "" {
				commit = s.Value
			}
		}
	}
	if version == "" {
		version = "dev"
	}
	if commit == "" {
		commit = "unknown"
	}
	m.BuildInfo.Reset()
	m.BuildInfo.WithLabelValues(version, commit, runtime.Version()).Set(1)
}

// InitRegions creates every per-region series at zero (wrap and verify counts, KMS calls,
// latency and throttles), so a region that never verified shows a flat zero instead of no
// series, and the alerts' increase() and rate() work from the first event.
func (m *Metrics) InitRegions(names []string) {
	for _, r := range names {
		m.Wrap.WithLabelValues(r)
		m.Verify.WithLabelValues(r)
		m.ReplicaWait.WithLabelValues(r)
		m.RegionFailures.WithLabelValues(r, "wrap")
		m.RegionFailures.WithLabelValues(r, "verify")
		m.Repairs.WithLabelValues(r)
		m.Protection.WithLabelValues(r)
		m.Scrub.init(r)
		for _, op := range KMSOps {
			m.KMSLatency.WithLabelValues(r, op)
			m.Throttles.WithLabelValues(r, op)
			m.KMSCalls.WithLabelValues(r, op, "ok")
			m.KMSCalls.WithLabelValues(r, op, "error")
		}
	}
	m.DLQ.WithLabelValues(ReasonExpired)
	m.Events.WithLabelValues("acked", "")
	m.RecordCASs.WithLabelValues("ok")
	m.RecordCASs.WithLabelValues("conflict")
}

var _ regions.Observer = (*Metrics)(nil)

// KMSCall implements regions.Observer.
func (m *Metrics) KMSCall(region, op string, d time.Duration, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.KMSCalls.WithLabelValues(region, op, res).Inc()
	m.KMSLatency.WithLabelValues(region, op).Observe(d.Seconds())
	// Only a failure to reach the endpoint counts as unhealthy; any KMS answer means reachable.
	healthy := 1.0
	if err != nil && regions.IsConnError(err) {
		healthy = 0
	}
	m.Healthy.WithLabelValues(region).Set(healthy)
}

// Throttled implements regions.Observer.
func (m *Metrics) Throttled(region, op string) { m.Throttles.WithLabelValues(region, op).Inc() }

// queueCollector reports the depth of the event queue and its DLQ on each scrape (at most one
// GetQueueAttributes per queue every cacheFor), so "events in the DLQ" is a metric, not a
// CloudWatch query.
type queueCollector struct {
	sqs      QueueAttributesAPI
	queues   map[string]string // "events" / "dlq" -> URL
	desc     *prometheus.Desc
	errDesc  *prometheus.Desc
	cacheFor time.Duration

	mu     sync.Mutex
	at     time.Time
	depths map[[2]string]float64 // queue, state
	failed map[string]float64
}

// WatchQueues adds envdr_queue_messages{queue="events"|"dlq", state="visible"|"in_flight"|"delayed"}
// and envdr_queue_scrape_errors, read from SQS when scraped (cached for 10 s).
func (m *Metrics) WatchQueues(q QueueAttributesAPI, queueURL, dlqURL string) {
	c := &queueCollector{sqs: q, queues: map[string]string{"events": queueURL, "dlq": dlqURL}, cacheFor: 10 * time.Second,
		desc: prometheus.NewDesc("envdr_queue_messages",
			"Messages in the event queue and its DLQ (SQS approximate counts), by queue and state.", []string{"queue", "state"}, nil),
		errDesc: prometheus.NewDesc("envdr_queue_scrape_error",
			"1 when the last read of the queue's attributes failed (the depth shown is then the last known).", []string{"queue"}, nil),
		depths: map[[2]string]float64{}, failed: map[string]float64{}}
	for name := range c.queues {
		for _, s := range []string{"visible", "in_flight", "delayed"} {
			c.depths[[2]string{name, s}] = 0
		}
	}
	m.reg.MustRegister(c)
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.errDesc }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) >= c.cacheFor {
		c.at = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		for name, url := range c.queues {
			out, err := c.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url),
				AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
					sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible, sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed}})
			if err != nil {
				c.failed[name] = 1
				continue
			}
			c.failed[name] = 0
			for attr, state := range map[sqstypes.QueueAttributeName]string{
				sqstypes.QueueAttributeNameApproximateNumberOfMessages:           "visible",
				sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible: "in_flight",
				sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed:    "delayed",
			} {
				n, _ := strconv.ParseFloat(out.Attributes[string(attr)], 64)
				c.depths[[2]string{name, state}] = n
			}
		}
		cancel()
	}
	for k, v := range c.depths {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, k[0], k[1])
	}
	for name := range c.queues {
		ch <- prometheus.MustNewConstMetric(c.errDesc, prometheus.GaugeValue, c.failed[name], name)
	}
}

// DrillMetrics are what a drill reports to a Prometheus Pushgateway (envdr drill --pushgateway),
// one group per lost region, for the drill alerts: a failed drill, or none passed lately.
type DrillMetrics struct {
	Registry      *prometheus.Registry
	Passed        prometheus.Gauge
	LastRun       prometheus.Gauge
	LastSuccess   prometheus.Gauge
	RPO           prometheus.Gauge
	RTO           prometheus.Gauge
	Recoverable   prometheus.Gauge
	Unrecoverable prometheus.Gauge
}

// NewDrillMetrics registers the drill's gauges on a fresh registry.
func NewDrillMetrics() *DrillMetrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	d := &DrillMetrics{
		Registry:      prometheus.NewRegistry(),
		Passed:        g("envdr_drill_passed", "1 when the last drill losing this region passed every check, else 0."),
		LastRun:       g("envdr_drill_last_run_timestamp_seconds", "When the last drill losing this region finished (Unix time)."),
		LastSuccess:   g("envdr_drill_last_success_timestamp_seconds", "When the last passing drill losing this region finished (Unix time); kept by failed runs."),
		RPO:           g("envdr_drill_rpo_seconds", "The recovery point's age in the last drill (the oldest record not yet replicated)."),
		RTO:           g("envdr_drill_rto_seconds", "The recovery time measured by the last drill."),
		Recoverable:   g("envdr_drill_recoverable_ratio", "Share of records recoverable in the last drill, 0 to 1."),
		Unrecoverable: g("envdr_drill_unrecoverable_records", "Records unrecoverable in the last drill."),
	}
	d.Registry.MustRegister(d.Passed, d.LastRun, d.LastSuccess, d.RPO, d.RTO, d.Recoverable, d.Unrecoverable)
	return d
}

// QueueAttributesAPI is the one SQS call WatchQueues makes.
type QueueAttributesAPI interface {
	GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}
