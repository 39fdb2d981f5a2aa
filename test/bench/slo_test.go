package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Nearest rank, no interpolation: of 10,000 times p99.99 is the second largest, p99.9 the 9,990th.
func TestExactQuantilesNearestRank(t *testing.T) {
	times := make([]float64, 10000)
	for i := range times {
		times[len(times)-1-i] = float64(i + 1) // 10000 .. 1, unsorted on purpose
	}
	q := exactQuantiles(times)
	want := SLOQuantiles{Count: 10000, P50: 5000, P99: 9900, P999: 9990, P9999: 9999, Max: 10000, Mean: 5000.5}
	if q != want {
		t.Fatalf("exactQuantiles = %+v, want %+v", q, want)
	}
	small := exactQuantiles([]float64{3, 1, 2})
	if small.P50 != 2 || small.P99 != 3 || small.P9999 != 3 || small.Max != 3 {
		t.Errorf("three times: %+v, want p50 2 and every high quantile the max 3", small)
	}
	if z := exactQuantiles(nil); z.Count != 0 || z.Max != 0 {
		t.Errorf("no times: %+v, want zeros", z)
	}
}

const metricsText = `# HELP envdr_protection_seconds Seconds from seal to protected.
# TYPE envdr_protection_seconds histogram
envdr_protection_seconds_bucket{daemon_region="us-east-1",source_region="us-east-1",le="1"} 0
envdr_protection_seconds_bucket{daemon_region="us-east-1",source_region="us-east-1",le="2"} 40
envdr_protection_seconds_bucket{daemon_region="us-east-1",source_region="us-east-1",le="5"} 90
envdr_protection_seconds_bucket{daemon_region="us-east-1",source_region="us-east-1",le="+Inf"} 98
envdr_protection_seconds_sum{daemon_region="us-east-1",source_region="us-east-1"} 250.5
envdr_protection_seconds_count{daemon_region="us-east-1",source_region="us-east-1"} 98
envdr_protection_seconds_bucket{daemon_region="us-east-1",source_region="eu-west-1",le="1"} 0
envdr_protection_seconds_bucket{daemon_region="us-east-1",source_region="eu-west-1",le="2"} 0
envdr_protection_seconds_bucket{daemon_region="us-east-1",source_region="eu-west-1",le="5"} 0
envdr_protection_seconds_bucket{daemon_region="us-east-1",source_region="eu-west-1",le="+Inf"} 2
envdr_protection_seconds_sum{daemon_region="us-east-1",source_region="eu-west-1"} 20
envdr_protection_seconds_count{daemon_region="us-east-1",source_region="eu-west-1"} 2
# HELP envdr_events_total Events.
# TYPE envdr_events_total counter
envdr_events_total{outcome="acked",reason=""} 100
`

// The histogram is summed over its label sets and read as histogram_quantile reads it.
func TestParseProtectionHistogram(t *testing.T) {
	h, ok, err := parseProtectionHistogram(strings.NewReader(metricsText), protectionMetric)
	if err != nil || !ok {
		t.Fatalf("parse: ok %v, err %v", ok, err)
	}
	if h.Count != 100 || h.Sum != 270.5 {
		t.Fatalf("count %d sum %g, want 100 and 270.5 (both label sets)", h.Count, h.Sum)
	}
	wantBuckets := []HistBucket{{1, 0}, {2, 40}, {5, 90}, {math.Inf(1), 100}}
	if len(h.Buckets) != len(wantBuckets) {
		t.Fatalf("buckets %+v, want %+v", h.Buckets, wantBuckets)
	}
	for i, b := range wantBuckets {
		if h.Buckets[i] != b {
			t.Fatalf("bucket %d = %+v, want %+v (+Inf counted once)", i, h.Buckets[i], b)
		}
	}
	// rank 50 falls in (2, 5] holding 50 of them, 10 in: 2 + 3*10/50.
	if math.Abs(h.P50-2.6) > 1e-9 {
		t.Errorf("p50 = %g, want 2.6", h.P50)
	}
	// rank 20 in (1, 2]: 1 + 1*20/40.
	if got := h.quantile(0.2); math.Abs(got-1.5) > 1e-9 {
		t.Errorf("q0.2 = %g, want 1.5", got)
	}
	// rank 99 falls in +Inf: the highest finite bound.
	if h.P99 != 5 || h.P9999 != 5 {
		t.Errorf("p99 %g p99.99 %g, want 5 (a rank in +Inf answers the highest finite bound)", h.P99, h.P9999)
	}
	b, err := json.Marshal(h.Buckets[3])
	if err != nil || string(b) != `{"le":"+Inf","count":100}` {
		t.Errorf("+Inf bucket as JSON: %s, %v", b, err)
	}
	if _, ok, err := parseProtectionHistogram(strings.NewReader(metricsText), "envdr_nothing_seconds"); ok || err != nil {
		t.Errorf("an absent family: ok %v err %v, want false, nil", ok, err)
	}
	if !math.IsNaN((HistogramEstimate{}).quantile(0.5)) {
		t.Error("no samples: want NaN")
	}
}

// The follower reads only what was appended since its last poll, keeps a partial last line for
// the next one, and keeps each envelope's first acknowledgement.
func TestLogFollowerFirstAck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.log")
	lines := []string{
		`{"level":"info","ts":"2026-12-07T18:00:00.000Z","msg":"envdr run started"}`,
		`{"level":"warn","ts":"2026-12-07T18:00:01.000Z","msg":"replication policy not met; left for redelivery","id":"a","duration":1.0}`,
		`{"level":"info","ts":"2026-12-07T18:00:02.250Z","msg":"event replicated","id":"a","duration":0.5}`,
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"+`{"level":"info","ts":"2026-12-07T18:00:03.000Z","msg":"event repl`), 0o644); err != nil {
		t.Fatal(err)
	}
	res := &SLOCase{Outcomes: map[string]int{}}
	acks := map[string]time.Time{}
	f := &logFollower{path: path}
	if err := f.poll(acks, res); err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 12, 7, 18, 0, 2, 250e6, time.UTC)
	if len(acks) != 1 || !acks["a"].Equal(want) || res.Acks != 1 {
		t.Fatalf("after the first poll: acks %v (%d lines), want a at %v", acks, res.Acks, want)
	}
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fh.WriteString(`icated","id":"b","duration":0.1}` + "\n" +
		`{"level":"info","ts":"2026-12-07T18:00:09.000Z","msg":"event replicated","id":"a","duration":0.1}` + "\n")
	_ = fh.Close()
	if err := f.poll(acks, res); err != nil {
		t.Fatal(err)
	}
	if len(acks) != 2 || !acks["a"].Equal(want) || !acks["b"].Equal(want.Add(750*time.Millisecond)) {
		t.Fatalf("after the second poll: %v, want a's first ack kept and b's from the completed line", acks)
	}
	if res.Acks != 3 || res.Outcomes["event replicated"] != 3 || res.Outcomes["replication policy not met; left for redelivery"] != 1 {
		t.Errorf("outcomes %v, acks %d", res.Outcomes, res.Acks)
	}
}

// The table carries each case's exact and histogram quantiles and judges only the lag case.
func TestPrintSLOTable(t *testing.T) {
	met := true
	h := &HistogramEstimate{Count: 10000, P50: 3.1, P99: 4.9, P999: 6.8, P9999: 7.4}
	rep := &SLOReport{GoalS: 15, Cases: []*SLOCase{
		{Case: caseLag, N: 10000, OfferedRate: 25, SentRate: 24.9, Exact: SLOQuantiles{Count: 10000, P50: 3, P99: 4.2, P999: 5.1, P9999: 6.25, Max: 6.5},
			Histogram: h, Met: &met, GoalS: 15},
		{Case: caseLoss, N: 10000, OfferedRate: 25, LossRegion: "eu-west-1", LossStartS: 120, LossEndS: 150,
			Exact: SLOQuantiles{Count: 10000, P9999: 33}, Problems: []string{"x"}},
	}}
	var b bytes.Buffer
	printSLOTable(&b, rep)
	out := b.String()
	for _, want := range []string{"p99.99 <= 15 s: PASS", "6.250", "7.400", "not judged", "eu-west-1 down from +120.0 s to +150.0 s", "PROBLEM: x"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// The warm-up's samples come off bucket by bucket, and the quantiles follow.
func TestHistogramMinusWarmup(t *testing.T) {
	after, _, err := parseProtectionHistogram(strings.NewReader(metricsText), protectionMetric)
	if err != nil {
		t.Fatal(err)
	}
	before := HistogramEstimate{Count: 40, Sum: 60, Buckets: []HistBucket{{1, 0}, {2, 40}, {5, 40}, {math.Inf(1), 40}}}
	got := after.minus(before)
	if got.Count != 60 || got.Sum != 210.5 {
		t.Fatalf("count %d sum %g, want 60 and 210.5", got.Count, got.Sum)
	}
	if got.Buckets[1].Count != 0 || got.Buckets[2].Count != 50 || got.Buckets[3].Count != 60 {
		t.Fatalf("buckets %+v", got.Buckets)
	}
	// rank 30 of 60 falls in (2, 5] holding 50, 30 in: 2 + 3*30/50.
	if math.Abs(got.P50-3.8) > 1e-9 {
		t.Errorf("p50 = %g, want 3.8", got.P50)
	}
}
