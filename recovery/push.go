package recovery

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	dto "github.com/prometheus/client_model/go"

	"github.com/envdr/envdr/replicate"
)

// DrillPushJob is the Pushgateway job drills push to; each lost region is its own group.
const DrillPushJob = "envdr_drill"

// DrillGatherer returns the drill's metrics for r (replicate.DrillMetrics). A failed drill
// leaves envdr_drill_last_success_timestamp_seconds out, so pushing it (POST) keeps the last
// success the Pushgateway already holds and the staleness alert keeps counting.
func DrillGatherer(r *DrillReport) prometheus.Gatherer {
	m := replicate.NewDrillMetrics()
	passed := 0.0
	if r.Passed {
		passed = 1
	}
	m.Passed.Set(passed)
	m.LastRun.Set(float64(r.FinishedAt.Unix()))
	m.LastSuccess.Set(float64(r.FinishedAt.Unix()))
	m.RPO.Set(r.RecoveryPoint.RPOSeconds)
	m.RTO.Set(r.RTOSeconds)
	m.Recoverable.Set(r.RecoverablePercent / 100)
	m.Unrecoverable.Set(float64(r.Unrecoverable))
	if r.Passed {
		return m.Registry
	}
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		fams, err := m.Registry.Gather()
		out := fams[:0]
		for _, f := range fams {
			if f.GetName() != "envdr_drill_last_success_timestamp_seconds" {
				out = append(out, f)
			}
		}
		return out, err
	})
}

// PushDrill sends the drill's metrics to a Prometheus Pushgateway at url, grouped by
// job=envdr_drill and lost_region.
func PushDrill(ctx context.Context, url string, r *DrillReport) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := push.New(url, DrillPushJob).Gatherer(DrillGatherer(r)).Grouping("lost_region", r.Lost).
		Client(&http.Client{Timeout: 30 * time.Second}).AddContext(ctx)
	if err != nil {
		return fmt.Errorf("push drill metrics to %s: %w", url, err)
	}
	return nil
}
