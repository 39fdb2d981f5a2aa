package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
)

// The plan keeps the scrubber at its budget for the whole case: records for 1.25 times the
// expected length at budget x kms_rate, and the period that rate needs to cover them, which the
// daemon's config accepts as written.
func TestScrubPlan(t *testing.T) {
	// 10,200 envelopes at 25/s: 408 s + 60 s; 1.25 x 50 calls/s x 468 s = 29,250 records,
	// which 50 calls/s cover in 585 s: a 10 minute period.
	records, period := scrubPlan(0.05, 1000, 10200, 25, 0, 0)
	if records != 29250 || period != 10*time.Minute {
		t.Fatalf("plan for 10,200 envelopes: %d records, period %s; want 29250 and 10m", records, period)
	}
	if records, period = scrubPlan(0.05, 1000, 500, 25, 0, 0); records != 5000 || period != 2*time.Minute {
		t.Errorf("plan for 500 envelopes: %d records, period %s; want 5000 and 2m", records, period)
	}
	// A tiny table still gets the config's least period, 1m.
	if _, period = scrubPlan(0.05, 1000, 10, 25, 100, 0); period != time.Minute {
		t.Errorf("100 records: period %s, want the least, 1m", period)
	}
	if records, period = scrubPlan(0.05, 1000, 10200, 25, 1234, 7*time.Minute); records != 1234 || period != 7*time.Minute {
		t.Errorf("given records and period: %d, %s; want them kept", records, period)
	}
	for _, p := range []time.Duration{time.Minute, 10 * time.Minute, 7 * time.Minute} {
		got, err := (config.Scrub{Budget: "5%", Period: p.String()}).PeriodDuration()
		if err != nil || got != p {
			t.Errorf("scrub.period %q: %v, %v; want %s", p.String(), got, err, p)
		}
	}
}

// --cases may name a case again; each run gets its own files.
func TestCaseLabels(t *testing.T) {
	got, err := caseLabels("lag, scrub,lag,scrub,quota")
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"lag", "lag"}, {"scrub", "scrub"}, {"lag", "lag-2"}, {"scrub", "scrub-2"}, {"quota", "quota"}}
	if len(got) != len(want) {
		t.Fatalf("labels %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("label %d = %v, want %v", i, got[i], want[i])
		}
	}
	if _, err := caseLabels("lag,scrubbing"); err == nil || !strings.Contains(err.Error(), `"scrubbing"`) {
		t.Errorf("an unknown case: %v, want an error naming it", err)
	}
}

const scrubMetricsA = `# TYPE envdr_protection_seconds histogram
envdr_protection_seconds_bucket{daemon_region="us-east-1",source_region="us-east-1",le="+Inf"} 0
envdr_protection_seconds_sum{daemon_region="us-east-1",source_region="us-east-1"} 0
envdr_protection_seconds_count{daemon_region="us-east-1",source_region="us-east-1"} 0
# TYPE envdr_scrub_kms_calls_total counter
envdr_scrub_kms_calls_total{daemon_region="us-east-1",region="us-east-1"} 120
envdr_scrub_kms_calls_total{daemon_region="us-east-1",region="eu-west-1"} 0
# TYPE envdr_scrub_records_total counter
envdr_scrub_records_total{daemon_region="us-east-1",outcome="verified",region="us-east-1"} 118
envdr_scrub_records_total{daemon_region="us-east-1",outcome="recent",region="us-east-1"} 3
envdr_scrub_records_total{daemon_region="us-east-1",outcome="repaired",region="us-east-1"} 1
envdr_scrub_records_total{daemon_region="us-east-1",outcome="verified",region="eu-west-1"} 0
`

// The scrubber's counters are read by region and outcome, and a case accounts for what it did
// between two scrapes against what its budget allowed in that time.
func TestScrubAccount(t *testing.T) {
	fa, err := parseMetrics(strings.NewReader(scrubMetricsA))
	if err != nil {
		t.Fatal(err)
	}
	a := &daemonScrape{at: time.Unix(1000, 0), scrub: scrubCountersOf(fa)}
	if a.scrub.KMSCalls["us-east-1"] != 120 || a.scrub.Records["us-east-1"]["verified"] != 118 || a.scrub.Records["us-east-1"]["repaired"] != 1 {
		t.Fatalf("counters %+v", a.scrub)
	}
	after := strings.NewReplacer(`region="us-east-1"} 120`, `region="us-east-1"} 620`,
		`outcome="verified",region="us-east-1"} 118`, `outcome="verified",region="us-east-1"} 616`).Replace(scrubMetricsA)
	fb, err := parseMetrics(strings.NewReader(after))
	if err != nil {
		t.Fatal(err)
	}
	b := &daemonScrape{at: time.Unix(1010, 0), scrub: scrubCountersOf(fb)}
	f := &ScrubFigures{Region: "us-east-1", RatePerS: 50}
	f.account(a, b)
	// 10 s at 50 calls/s, plus the limiter's burst of 1.
	if f.WindowS != 10 || f.KMSCalls != 500 || f.Allowed != 501 || math.Abs(f.OfBudget-500.0/501) > 1e-12 {
		t.Errorf("window %g s, calls %g, allowed %g, of budget %g; want 10, 500, 501, 0.998", f.WindowS, f.KMSCalls, f.Allowed, f.OfBudget)
	}
	if f.Outcomes["verified"] != 498 || f.Outcomes["recent"] != 0 || f.Outcomes["repaired"] != 0 {
		t.Errorf("outcomes over the window %v, want verified 498 and nothing else", f.Outcomes)
	}
	if got := scrubOutcomes(f.Outcomes); got != "verified 498" {
		t.Errorf("printed outcomes %q", got)
	}
}

// Each scrub case is compared with the lag case run nearest before it, and the table prints the
// scrubber's budget line and the ratios.
func TestPrintScrubRatios(t *testing.T) {
	lag := func(label string, p50 float64) *SLOCase {
		return &SLOCase{Case: caseLag, Label: label, N: 100, Exact: SLOQuantiles{Count: 100, P50: p50, P99: 4, P999: 5, P9999: 5, Max: 5},
			Daemon: Measurement{UserS: 0.8, SysS: 0.2}, StandInCPUS: 2}
	}
	scrub := &SLOCase{Case: caseScrub, Label: "scrub-2", N: 100, KMSRate: 1000, Daemon: Measurement{UserS: 1.2, SysS: 0.3}, StandInCPUS: 3,
		Exact:       SLOQuantiles{Count: 100, P50: 3, P99: 5, P999: 6, P9999: 6, Max: 6},
		KMSByRegion: map[string]int64{"us-east-1": 700, "eu-west-1": 200},
		Scrub: &ScrubFigures{Budget: "5%", Region: "us-east-1", RatePerS: 50, PeriodS: 600, Records: 29250, SeedS: 80,
			WindowS: 10, KMSCalls: 480, Allowed: 501, OfBudget: 480.0 / 501, Outcomes: map[string]float64{"verified": 480}}}
	rep := &SLOReport{GoalS: 15, Cases: []*SLOCase{lag("lag", 1), lag("lag-2", 2), scrub}}
	var b bytes.Buffer
	printSLOTable(&b, rep)
	out := b.String()
	for _, want := range []string{
		"scrub-2 over lag-2 (exact): p50 1.50x, p99 1.25x, p99.9 1.20x, p99.99 1.20x, max 1.20x; CPU per envelope: daemon 1.50x, stand-in 1.50x",
		"KMS calls by region (stand-in): eu-west-1 200, us-east-1 700",
		"scrubber in us-east-1: budget 5% x kms_rate 1000 = 50 KMS calls/s, period 10m0s; 29250 records seeded unverified in 80 s; over the timed run (10 s) 480 KMS calls = 0.96 of the 501 the budget allowed; records verified 480",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	var alone bytes.Buffer
	printScrubRatios(&alone, []*SLOCase{scrub})
	if !strings.Contains(alone.String(), "no lag case") {
		t.Errorf("a scrub case alone: %q", alone.String())
	}
}

// The checks after the run pass over the seeded records and only those.
func TestIsSeeded(t *testing.T) {
	for app, want := range map[string]bool{scrubApp: true, "slo": false, "": false} {
		ctx := map[string]string{"bench": "slo"}
		if app != "" {
			ctx = map[string]string{"app": app}
		}
		ec, err := envelope.NewContext("rec-1", ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := isSeeded(&envelope.Record{ID: "rec-1", Context: ec}); got != want {
			t.Errorf("context %v: seeded %v, want %v", ctx, got, want)
		}
	}
}
