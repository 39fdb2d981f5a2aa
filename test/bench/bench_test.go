package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	p := filepath.Join(t.TempDir(), "daemon.log")
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	lr, err := parseDaemonLog(p)
	if err != nil {
		t.Fatal(err)
	}
	if lr.Acked != 2 {
		t.Errorf("acked = %d, want 2 distinct envelopes", lr.Acked)
	}
	if got := lr.Last.Sub(lr.First).Seconds(); got < 2.099 || got > 2.101 {
		t.Errorf("active = %vs, want 2.1s (19.5 -> 21.6)", got)
	}
	if lr.Outcomes["event replicated"] != 3 || lr.Outcomes["policy not met: event left for redelivery"] != 1 {
		t.Errorf("outcomes = %v", lr.Outcomes)
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
		PerEnvelope: map[string]float64{"Decrypt": 3, "ReEncrypt": 2}, PerRegionPerEnvelope: map[string]float64{"eu-west-1": 2}}
	b, _ := json.Marshal(th)
	write(fileReplicateTh, string(b))

	var out bytes.Buffer
	figs, err := summarize(&out, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"x-raw", "envdr seal / age, to /dev/null  ", "2.00x", "envdr open peak RSS (all runs)", "40.0 MiB",
		"envdr seal / age, to a pipe", "4.00x", "3.50x (2)", "envdr open to a durable file / dd conv=fsync (time)", "1.50x",
		"unthrottled run: not run", "achieved / quota-bound rate", "0.950"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	// Misses: the two x-raw ratios, open's 1.2x throughput to /dev/null, open's 1.5x of dd, open's
	// 40 MiB RSS.
	if figs.GoalsMissed != 5 {
		t.Errorf("missed = %d, want 5:\n%s", figs.GoalsMissed, s)
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
