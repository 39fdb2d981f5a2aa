package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These test the harness's parsing and arithmetic on canned inputs; they assert nothing about
// speed (make bench-short runs the harness end to end).

const goBenchOut = `goos: linux
goarch: amd64
pkg: github.com/envdr/envdr/envelope
BenchmarkSeal/chunk=64KiB-2         	     100	   7359814 ns/op	2279.60 MB/s	      3295 raw-MB/s	         0.6920 x-raw	   78384 B/op	      40 allocs/op
BenchmarkSeal/chunk=64KiB-2         	     100	   7000000 ns/op	2400.00 MB/s	      3300 raw-MB/s	         0.7270 x-raw	   78384 B/op	      40 allocs/op
BenchmarkOpen/chunk=64KiB-2         	     100	   7418865 ns/op	2261.40 MB/s	      3678 raw-MB/s	         0.6150 x-raw	  144482 B/op	      55 allocs/op
BenchmarkSealSmall-2                	  100000	     10677 ns/op	  95.90 MB/s	   78396 B/op	      40 allocs/op
PASS
ok  	github.com/envdr/envdr/envelope	12.3s
`

func TestParseGoBench(t *testing.T) {
	bs := parseGoBench(strings.NewReader(goBenchOut))
	if len(bs) != 3 {
		t.Fatalf("got %d benchmarks, want 3: %+v", len(bs), bs)
	}
	if bs[0].Name != "Seal/chunk=64KiB" || bs[0].Runs != 2 || bs[0].Metrics["MB/s"] != 2339.8 || bs[0].Metrics["x-raw"] != 0.7095 {
		t.Errorf("a repeated benchmark's metrics should be the medians of its runs: %+v", bs[0])
	}
	rs := libraryRatios(bs)
	if len(rs) != 2 || rs[0].Unit != "x-raw" || rs[1].Name != "Open/chunk=64KiB" {
		t.Errorf("ratios = %+v, want the two x-raw metrics (raw-MB/s is not a ratio)", rs)
	}
}

func TestLibraryRatiosComputedWithoutCustomMetric(t *testing.T) {
	out := `BenchmarkSeal/64KiB-2  10  100 ns/op  900.0 MB/s
BenchmarkRawSeal/64KiB-2  10  100 ns/op  1000.0 MB/s
BenchmarkOpen/64KiB-2  10  100 ns/op  800.0 MB/s
BenchmarkRawOpen/64KiB-2  10  100 ns/op  1000.0 MB/s
`
	rs := libraryRatios(parseGoBench(strings.NewReader(out)))
	if len(rs) != 2 || rs[0].Value != 0.9 || rs[1].Value != 0.8 {
		t.Fatalf("computed ratios = %+v, want seal 0.9 and open 0.8", rs)
	}
}

func TestParseDaemonLog(t *testing.T) {
	log := `{"level":"info","ts":"2026-11-23T13:37:19.385Z","msg":"envdr run started"}
{"level":"info","ts":"2026-11-23T13:37:20.000Z","msg":"event replicated","id":"a","duration":0.5}
{"level":"warn","ts":"2026-11-23T13:37:20.500Z","msg":"policy not met: event left for redelivery","id":"b","duration":0.2}
{"level":"info","ts":"2026-11-23T13:37:21.500Z","msg":"event replicated","id":"b","duration":0.1}
{"level":"info","ts":"2026-11-23T13:37:21.600Z","msg":"event replicated","id":"a","duration":0.1}
{"level":"info","ts":"2026-11-23T13:37:23.391Z","msg":"queue drained"}
`
	// A second daemon on the same queue: it also acknowledged a (a duplicate delivery) and c,
	// and was the last to acknowledge.
	log2 := `{"level":"info","ts":"2026-11-23T13:37:20.200Z","msg":"event replicated","id":"a","duration":0.1}
{"level":"info","ts":"2026-11-23T13:37:22.000Z","msg":"event replicated","id":"c","duration":0.2}
`
	dir := t.TempDir()
	p, p2 := filepath.Join(dir, "daemon.log"), filepath.Join(dir, "daemon-p2.log")
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p2, []byte(log2), 0o644); err != nil {
		t.Fatal(err)
	}
	lr, err := parseDaemonLogs(p)
	if err != nil {
		t.Fatal(err)
	}
	if lr.Acked != 2 {
		t.Errorf("acked = %d, want 2 distinct envelopes", lr.Acked)
	}
	if got := lr.Last.Sub(lr.First).Seconds(); got < 2.099 || got > 2.101 {
		t.Errorf("active = %vs, want 2.1s (19.5 -> 21.6)", got)
	}
	if lr.Outcomes["event replicated"] != 3 || lr.Outcomes[msgRedelivery] != 1 {
		t.Errorf("outcomes = %v", lr.Outcomes)
	}

	lr, err = parseDaemonLogs(p, p2)
	if err != nil {
		t.Fatal(err)
	}
	if lr.Acked != 3 || len(lr.ProcAcked) != 2 || lr.ProcAcked[0] != 2 || lr.ProcAcked[1] != 2 {
		t.Errorf("acked = %d, per process %v; want 3 distinct envelopes in all, 2 by each process", lr.Acked, lr.ProcAcked)
	}
	if got := lr.Last.Sub(lr.First).Seconds(); got < 2.499 || got > 2.501 {
		t.Errorf("active = %vs, want 2.5s (19.5 -> 22.0, the second log's last ack)", got)
	}
	if _, err := parseDaemonLogs(p, filepath.Join(dir, "missing.log")); err == nil {
		t.Error("a missing log is an error")
	}
}

// The middle 90 % of the acknowledgements leaves out a straggler: 40 acks a second apart, then
// one a minute later (a redelivery after the visibility timeout).
func TestMidRate(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	lr := logReport{}
	for i := range 40 {
		lr.acks = append(lr.acks, t0.Add(time.Duration(i)*time.Second))
	}
	lr.acks = append(lr.acks, t0.Add(100*time.Second))
	if got := lr.midRate(); math.Abs(got-1) > 0.001 {
		t.Errorf("mid rate = %v, want 1/s", got)
	}
	lr.acks = lr.acks[:19]
	if got := lr.midRate(); got != 0 {
		t.Errorf("mid rate of 19 acks = %v, want 0 (too few)", got)
	}
}

func TestDaemonOptions(t *testing.T) {
	o := replicateOptions{Throttle: 300, LogPath: "/b/quota-q300-p3.log", Procs: 3}
	for in, want := range map[string]float64{"": 300, kmsRateQuota: 300, kmsRateUnset: 0, "150": 150} {
		o.KMSRate = in
		if got, err := o.daemonKMSRate(); err != nil || got != want {
			t.Errorf("--kms-rate %q: %v, %v; want %v", in, got, err, want)
		}
	}
	o.KMSRate = "lots"
	if _, err := o.daemonKMSRate(); err == nil {
		t.Error("--kms-rate lots should be refused")
	}
	if got := o.logPaths(); strings.Join(got, " ") != "/b/quota-q300-p3-p1.log /b/quota-q300-p3-p2.log /b/quota-q300-p3-p3.log" {
		t.Errorf("log paths = %v", got)
	}
	o.Procs = 1
	if got := o.logPaths(); len(got) != 1 || got[0] != o.LogPath {
		t.Errorf("one process logs to --log itself: %v", got)
	}
}

func TestSummarizeCalls(t *testing.T) {
	r := &ReplicateResult{N: 100, ThrottleRPS: 200,
		Calls: map[string]map[string]int64{
			"us-east-1":      {"Decrypt": 100, "DescribeKey": 1},
			"eu-west-1":      {"Decrypt": 110, "ReEncrypt": 105, "DescribeKey": 1, "Throttled": 15},
			"ap-southeast-2": {"Decrypt": 100, "ReEncrypt": 100, "DescribeKey": 1},
		},
		Throttled: map[string]map[string]int64{"eu-west-1": {"Decrypt": 10, "ReEncrypt": 5}},
	}
	summarizeCalls(r)
	if r.PerEnvelope["Decrypt"] != 3 || r.PerEnvelope["ReEncrypt"] != 2 {
		t.Errorf("per envelope = %v, want successful calls only", r.PerEnvelope)
	}
	if r.MaxRegionPerEnvelope != 2 || r.PerRegionPerEnvelope["us-east-1"] != 1 {
		t.Errorf("per region = %v (max %v)", r.PerRegionPerEnvelope, r.MaxRegionPerEnvelope)
	}
	// 518 calls, throttled ones included ("Throttled" is the stand-in's own tally, not a call).
	if r.KMSCalls != 518 || r.ThrottledCalls != 15 || r.ThrottledFraction != 15.0/518 {
		t.Errorf("calls %d, throttled %d (%v); want 518, 15", r.KMSCalls, r.ThrottledCalls, r.ThrottledFraction)
	}
}

func TestSummaryRendersEverySection(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(fileEnvelope, goBenchOut)
	var cli bytes.Buffer
	for _, m := range []Measurement{
		// /dev/null: seal 2x age (PASS), open 1.2x (MISS), open's RSS 40 MiB (MISS).
		{Label: "envdr-seal", Round: 1, Bytes: 1 << 29, WallS: 1, UserS: 0.5, MaxRSSKiB: 20 << 10},
		{Label: "age-seal", Round: 1, Bytes: 1 << 29, WallS: 2, UserS: 1, MaxRSSKiB: 16 << 10},
		{Label: "envdr-open", Round: 1, Bytes: 1 << 29, WallS: 1, UserS: 0.5, MaxRSSKiB: 40 << 10},
		{Label: "age-open", Round: 1, Bytes: 1 << 29, WallS: 1.2, UserS: 1, MaxRSSKiB: 16 << 10},
		// Pipe, two rounds: seal best 0.125 vs age best 0.5 -> 4.00x (PASS); paired 4 and 3 -> median 3.5.
		{Label: "envdr-seal-pipe", Round: 1, Bytes: 1 << 29, WallS: 0.125},
		{Label: "age-seal-pipe", Round: 1, Bytes: 1 << 29, WallS: 0.5},
		{Label: "envdr-seal-pipe", Round: 2, Bytes: 1 << 29, WallS: 0.25},
		{Label: "age-seal-pipe", Round: 2, Bytes: 1 << 29, WallS: 0.75},
		// Durable: seal 1.1x dd (PASS), open 1.5x dd (MISS).
		{Label: "dd-fsync", Round: 1, Bytes: 1 << 29, WallS: 1},
		{Label: "envdr-seal-file", Round: 1, Bytes: 1 << 29, WallS: 1.1},
		{Label: "envdr-open-file", Round: 1, Bytes: 1 << 29, WallS: 1.5},
		{Label: "envdr-open-file", Round: 2, Exit: 1, Bytes: 1 << 29, WallS: 0.1}, // failed runs do not count
	} {
		b, _ := json.Marshal(m)
		cli.Write(append(b, '\n'))
	}
	write(fileCLI, cli.String())
	write(fileCLICheck, "ok\n")
	th := ReplicateResult{N: 100, ThrottleRPS: 200, EventsPerS: 95, QuotaBoundRate: 100, Fraction: 0.95,
		CallsPerEnvelope: CallsPerEnvelope{PerEnvelope: map[string]float64{"Decrypt": 3, "ReEncrypt": 2}, PerRegionPerEnvelope: map[string]float64{"eu-west-1": 2}}}
	b, _ := json.Marshal(th)
	write(fileReplicateTh, string(b))

	var out bytes.Buffer
	// The curve at Q = 60 (bound 30/s): 1 process 28.5/s (0.95, PASS), 3 processes 24/s (0.8,
	// MISS); the unthrottled run is absent, so the bound cannot be told. Two modes.
	for procs, rate := range map[int]float64{1: 28.5, 3: 24} {
		r := ReplicateResult{N: 100, Procs: procs, ThrottleRPS: 60, KMSRate: 1000, KMSRateUnset: true, EventsPerS: rate,
			QuotaBoundRate: 30, Fraction: rate / 30, KMSCalls: 1000, ThrottledCalls: 20, ThrottledFraction: 0.02,
			Outcomes: map[string]int{msgRedelivery: 2}, ProcAcked: []int{40, 30, 30}}
		b, _ := json.Marshal(r)
		write(fmt.Sprintf("quota-q60-p%d.json", procs), string(b))
	}
	for name, r := range map[string]ReplicateResult{
		"mrk-reencrypt": {N: 300, Mode: "mrk", MRKWrap: "reencrypt", Verify: "all", CallsPerEnvelope: CallsPerEnvelope{MaxRegionPerEnvelope: 2,
			PerEnvelope: map[string]float64{"Decrypt": 3, "ReEncrypt": 2, "DescribeKey": 0.01}, PerRegionPerEnvelope: map[string]float64{"eu-west-1": 2, "us-east-1": 1}}},
		"sample10": {N: 300, Mode: "mrk", MRKWrap: "reencrypt", Verify: "sample:10%", CallsPerEnvelope: CallsPerEnvelope{MaxRegionPerEnvelope: 1.1,
			PerEnvelope: map[string]float64{"Decrypt": 0.3, "ReEncrypt": 2}, PerRegionPerEnvelope: map[string]float64{"eu-west-1": 1.1, "us-east-1": 0.1}}},
	} {
		b, _ := json.Marshal(r)
		write("mode-"+name+".json", string(b))
	}
	figs, err := summarize(&out, dir, false, 300)
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"x-raw", "envdr seal / age, to /dev/null  ", "2.00x", "envdr open peak RSS (all runs)", "40.0 MiB",
		"envdr seal / age, to a pipe", "4.00x", "3.50x (2)", "envdr open to a durable file / dd conv=fsync (time)", "1.50x",
		"unthrottled run: not run", "achieved / quota-bound rate", "0.950",
		"curve at Q = 60 req/s", "quota-bound rate 30.0 envelopes/s; bound: machine", "0.950  >= 0.90, 0 failed: PASS",
		"0.800  >= 0.90, 0 failed: MISS  ", "0.0200 (20 of 1000)", "40 / 30 / 30", "no unthrottled run to tell",
		"mrk, mrk_wrap: reencrypt, verify: all", "5.000", "150.0 envelopes/s", "mrk, mrk_wrap: reencrypt, verify: sample:10%", "272.7 envelopes/s"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	// Misses: the two x-raw ratios, open's 1.2x throughput to /dev/null, open's 1.5x of dd, open's
	// 40 MiB RSS, the curve's 3 processes.
	if figs.GoalsMissed != 6 {
		t.Errorf("missed = %d, want 6:\n%s", figs.GoalsMissed, s)
	}
	if strings.Index(s, "verify: all") > strings.Index(s, "verify: sample:10%") {
		t.Errorf("modes with more calls per envelope come first:\n%s", s)
	}
	// summary.json carries the same figures.
	js, err := json.Marshal(figs)
	if err != nil {
		t.Fatal(err)
	}
	var back Figures
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	var pipe *RatioFigure
	for i, r := range back.CLI.Ratios {
		if r.Command == "envdr-seal-pipe" && r.Baseline == "age-seal-pipe" {
			pipe = &back.CLI.Ratios[i]
		}
	}
	if pipe == nil || pipe.Best != 4 || pipe.MedianPaired != 3.5 || pipe.Pass == nil || !*pipe.Pass {
		t.Errorf("pipe ratio in summary.json = %+v", pipe)
	}
	if len(back.Quota) != 1 || len(back.Quota[0].Runs) != 2 || back.Quota[0].Runs[1].Procs != 3 || len(back.Modes) != 2 ||
		math.Abs(back.Modes[1].QuotaBoundRate-272.727) > 0.001 {
		t.Errorf("summary.json lacks the curve or the modes: %+v %+v", back.Quota, back.Modes)
	}
	if back.Replicate["throttled"] == nil || back.Replicate["throttled"].Fraction != 0.95 || len(back.Library) != 3 {
		t.Errorf("summary.json lacks the replicator or library figures: %s", js)
	}
}

// From three rounds on, a goal is judged on the median of the within-round ratios: one lucky
// baseline run cannot fail it, nor one lucky run of ours pass it.
func TestRatioJudgedOnPairedMedian(t *testing.T) {
	var ms []Measurement
	for round, w := range [][2]float64{{1.0, 0.4}, {1.0, 1.0}, {1.0, 1.0}} { // envdr, dd
		ms = append(ms, Measurement{Label: "envdr-seal-file", Round: round + 1, Bytes: 1, WallS: w[0]},
			Measurement{Label: "dd-fsync", Round: round + 1, Bytes: 1, WallS: w[1]})
	}
	f := cliFigures(ms, t.TempDir(), &judge{})
	for _, r := range f.Ratios {
		if r.Command == "envdr-seal-file" {
			if r.Best != 2.5 || r.MedianPaired != 1 || r.Pass == nil || !*r.Pass {
				t.Errorf("durable seal ratio = %+v: want best 2.5 but judged (and passed) on the median 1.0", r)
			}
			return
		}
	}
	t.Fatal("no durable seal ratio")
}

// A curve's rows are judged against the quota only where their daemons together could beat it
// unthrottled: one daemon slower than the quota allows is not the limiter's miss; a MISS with no
// call throttled is marked machine-bound.
func TestQuotaCurveJudgesOnlyWhereTheQuotaBinds(t *testing.T) {
	c := QuotaCurve{Quota: 300, QuotaBoundRate: 150, Unthrottled: 124.8, Runs: []*ReplicateResult{
		{N: 2000, Procs: 1, EventsPerS: 122.2, Fraction: 0.815, KMSCalls: 10003},
		{N: 2000, Procs: 2, EventsPerS: 156.4, Fraction: 1.043, KMSCalls: 10039, ThrottledCalls: 33},
		{N: 2000, Procs: 3, EventsPerS: 75, Fraction: 0.5, KMSCalls: 10000},
	}}
	c.Bound = "quota from 2 daemons"
	if c.quotaBinds(1) || !c.quotaBinds(2) || !c.quotaBinds(3) {
		t.Fatalf("quotaBinds(1, 2, 3) = %v %v %v, want false true true", c.quotaBinds(1), c.quotaBinds(2), c.quotaBinds(3))
	}
	var out bytes.Buffer
	j := &judge{}
	writeQuotaCurves(&out, []QuotaCurve{c}, j)
	s := out.String()
	for _, want := range []string{"bound: quota from 2 daemons", "not judged: 1 unthrottled daemon(s) make 124.8/s, below the quota",
		"1.043  >= 0.90, 0 failed: PASS", "0.500  >= 0.90, 0 failed: MISS (machine-bound: no call throttled)"} {
		if !strings.Contains(s, want) {
			t.Errorf("curve lacks %q:\n%s", want, s)
		}
	}
	if j.missed != 1 {
		t.Errorf("missed = %d, want 1 (the 3-daemon row only):\n%s", j.missed, s)
	}
}
