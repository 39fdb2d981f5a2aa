package main

import (
	"context"
	"fmt"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// The scrub case's own parts: its plan, its seeded table and the scrubber's counters.

// scrubApp is the "app" of the records the scrub case seeds (its envelopes have bench=slo):
// the checks after the run pass over them.
const scrubApp = "slo-scrub"

// The scrubber's metrics the case reads (replicate/scrub.go).
const (
	scrubKMSMetric     = "envdr_scrub_kms_calls_total"
	scrubRecordsMetric = "envdr_scrub_records_total"
)

// planScrub sets the daemon's scrub config in dcfg (budget --scrub-budget, the period of
// scrubPlan) and returns the case's plan. The daemon runs in the home region (envdr run without
// --region), so its scrubber verifies the home region's wraps at budget x that region's kms_rate.
func planScrub(dcfg *config.Config, o sloOptions) (*ScrubFigures, error) {
	budget, err := (config.Scrub{Budget: o.ScrubBudget}).BudgetFraction()
	if err != nil {
		return nil, fmt.Errorf("--scrub-budget: %w", err)
	}
	// kms_rate as the daemon will load it (the config's default fills a zero).
	probe := *dcfg
	probe.Regions = append([]config.Region(nil), dcfg.Regions...)
	probe.WithDefaults()
	home, ok := probe.Region(probe.HomeRegion)
	if !ok {
		return nil, fmt.Errorf("home region %s is not configured", probe.HomeRegion)
	}
	records, period := scrubPlan(budget, home.KMSRate, o.N+o.Warmup, o.Rate, o.ScrubRecords, o.ScrubPeriod)
	dcfg.Scrub = config.Scrub{Budget: o.ScrubBudget, Period: period.String()}
	return &ScrubFigures{Budget: o.ScrubBudget, Region: home.Name, RatePerS: budget * home.KMSRate,
		PeriodS: period.Seconds(), Records: records}, nil
}

// seedUnverified writes n records into the case's table, wrapped in every region and verified
// in none, straight into each region's replica (replicate.MintAndLoad), and returns how to
// recognise them.
func seedUnverified(ctx context.Context, s *standIn, topo *regions.Topology, cfg *config.Config, n int) (func(*envelope.Record) bool, error) {
	home, err := topo.HomeRegion()
	if err != nil {
		return nil, err
	}
	stores := map[string]*replicate.Store{}
	for _, name := range cfg.RegionNames() {
		stores[name] = replicate.NewStore(cfg.Table, name, s.backends.ReplicaDynamoDB(name), cfg.RegionNames())
	}
	if err := replicate.MintAndLoad(ctx, home, stores, n, scrubApp); err != nil {
		return nil, err
	}
	return isSeeded, nil
}

// isSeeded reports whether r is one of the scrub case's seeded records.
func isSeeded(r *envelope.Record) bool {
	app, _ := r.Context.Get("app")
	return app == scrubApp
}

// scrubCounters are the scrubber's counters in one scrape, by region (and outcome).
type scrubCounters struct {
	KMSCalls map[string]float64
	Records  map[string]map[string]float64
}

// scrubCountersOf reads envdr_scrub_kms_calls_total and envdr_scrub_records_total, summed over
// any label but region (and outcome).
func scrubCountersOf(fams map[string]*dto.MetricFamily) scrubCounters {
	sc := scrubCounters{KMSCalls: map[string]float64{}, Records: map[string]map[string]float64{}}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	if f := fams[scrubKMSMetric]; f != nil && f.GetType() == dto.MetricType_COUNTER {
		for _, m := range f.GetMetric() {
			sc.KMSCalls[label(m, "region")] += m.GetCounter().GetValue()
		}
	}
	if f := fams[scrubRecordsMetric]; f != nil && f.GetType() == dto.MetricType_COUNTER {
		for _, m := range f.GetMetric() {
			r := label(m, "region")
			if sc.Records[r] == nil {
				sc.Records[r] = map[string]float64{}
			}
			sc.Records[r][label(m, "outcome")] += m.GetCounter().GetValue()
		}
	}
	return sc
}

// account fills in what the scrubber did between two scrapes of its daemon.
func (f *ScrubFigures) account(before, after *daemonScrape) {
	f.WindowS = after.at.Sub(before.at).Seconds()
	f.KMSCalls = after.scrub.KMSCalls[f.Region] - before.scrub.KMSCalls[f.Region]
	f.Allowed = f.RatePerS*f.WindowS + 1
	f.OfBudget = f.KMSCalls / f.Allowed
	f.Outcomes = map[string]float64{}
	for o, v := range after.scrub.Records[f.Region] {
		f.Outcomes[o] = v - before.scrub.Records[f.Region][o]
	}
}

// kmsByRegion is the stand-in's KMS calls per region, throttled answers left out.
func kmsByRegion(calls map[string]map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for r, ops := range calls {
		for op, c := range ops {
			if op != "Throttled" {
				out[r] += c
			}
		}
	}
	return out
}

// scrubPeriodString is a period in seconds as scrub.period would be written.
func scrubPeriodString(s float64) string {
	return time.Duration(s * float64(time.Second)).String()
}
