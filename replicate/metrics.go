package replicate

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/envdr/envdr/regions"
)

// Metrics are the daemon's Prometheus metrics, on their own registry (no globals).
type Metrics struct {
	Registry   *prometheus.Registry
	Events     *prometheus.CounterVec   // outcome, reason
	Wrap       *prometheus.HistogramVec // region
	Verify     *prometheus.HistogramVec // region
	KMSCalls   *prometheus.CounterVec   // region, op, result
	Throttles  *prometheus.CounterVec   // region, op
	InFlight   prometheus.Gauge
	OldestAge  prometheus.Gauge
	Healthy    *prometheus.GaugeVec // region
	Requeued   prometheus.Counter
	DLQ        *prometheus.CounterVec // reason
	RecordCASs *prometheus.CounterVec // result: ok, conflict
}

// NewMetrics registers every metric on a fresh registry.
func NewMetrics() *Metrics {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envdr_events_total",
			Help: "Events handled, by outcome (acked, retry, poison, requeued, expired) and reason."}, []string{"outcome", "reason"}),
		Wrap: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "envdr_wrap_seconds",
			Help: "Latency of wrapping one DEK in a region (ReEncrypt or Encrypt).", Buckets: buckets}, []string{"region"}),
		Verify: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "envdr_verify_seconds",
			Help: "Latency of verifying one region's wrap (table read, Decrypt, commitment).", Buckets: buckets}, []string{"region"}),
		KMSCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envdr_kms_calls_total",
			Help: "KMS requests sent, by region, operation and result (ok or error)."}, []string{"region", "op", "result"}),
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
	}
	m.Registry.MustRegister(m.Events, m.Wrap, m.Verify, m.KMSCalls, m.Throttles, m.InFlight, m.OldestAge,
		m.Healthy, m.Requeued, m.DLQ, m.RecordCASs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

var _ regions.Observer = (*Metrics)(nil)

// KMSCall implements regions.Observer.
func (m *Metrics) KMSCall(region, op string, _ time.Duration, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.KMSCalls.WithLabelValues(region, op, res).Inc()
	// Only a failure to reach the endpoint counts as unhealthy; any KMS answer means reachable.
	healthy := 1.0
	if err != nil && regions.IsConnError(err) {
		healthy = 0
	}
	m.Healthy.WithLabelValues(region).Set(healthy)
}

// Throttled implements regions.Observer.
func (m *Metrics) Throttled(region, op string) { m.Throttles.WithLabelValues(region, op).Inc() }
