package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/envdr/envdr/internal/loadavg"
)

// Files of a bench directory (written by scripts/bench.sh and the subcommands).
const (
	fileEnvelope    = "envelope-bench.txt" // go test -bench output of ./envelope/
	fileCLI         = "cli.jsonl"          // measure lines: envdr-seal, envdr-open, age-seal, age-open
	fileCLICheck    = "cli-check.txt"      // "ok" once open's output equalled the input
	fileReplicate   = "replicate.json"     // unthrottled replicator run
	fileReplicateTh = "replicate-throttled.json"
	fileReplicate16 = "replicate-c16.json" // unthrottled, worker.concurrency 16
	fileSummary     = "summary.txt"
	fileSummaryJSON = "summary.json" // every figure of the summary, for machines
)

// Goals from the acceptance criteria (issues 3 and 4).
const (
	goalLibRatio   = 0.9
	goalCLIRatio   = 1.5
	goalRSSMiB     = 32
	goalQuotaShare = 0.9
	goalCPUPerEnv  = 1.5 // ms of daemon CPU per envelope, mrk mode, 3 regions (issue 14)
)

func runSummary(args []string) error {
	fs := flag.NewFlagSet("summary", flag.ExitOnError)
	dir := fs.String("dir", ".bench", "bench directory")
	short := fs.Bool("short", false, "short mode: sizes too small for meaningful figures; goals are not judged")
	strict := fs.Bool("strict", false, "exit non-zero when a goal is missed")
	quota := fs.Float64("quota", 300, "the KMS quota per region, req/s, at which the modes' quota-bound rates are given")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var buf bytes.Buffer
	figs, err := summarize(&buf, *dir, *short, *quota)
	if err != nil {
		return err
	}
	missed := figs.GoalsMissed
	os.Stdout.Write(buf.Bytes())
	if err := os.WriteFile(filepath.Join(*dir, fileSummary), buf.Bytes(), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(figs, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, fileSummaryJSON), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if *strict && missed > 0 {
		return fmt.Errorf("%d goal(s) missed", missed)
	}
	return nil
}

// judge renders a goal check; in short mode figures are not judged.
type judge struct {
	short  bool
	missed int
}

func (j *judge) check(ok bool) string {
	switch {
	case j.short:
		return "(short run)"
	case ok:
		return "PASS"
	default:
		j.missed++
		return "MISS"
	}
}

// summarize prints the summary table to w and returns every figure in it (summary.json); the
// modes' quota-bound rates are at quota req/s per region.
func summarize(w io.Writer, dir string, short bool, quota float64) (f Figures, err error) {
	j := &judge{short: short}
	mode := "full"
	if short {
		mode = "SHORT (harness check only; figures are not meaningful)"
	}
	f = Figures{Time: time.Now().UTC().Format(time.RFC3339), Mode: mode, Platform: runtime.GOOS + "/" + runtime.GOARCH,
		CPUs: runtime.NumCPU(), Load: loadavg.String(), Replicate: map[string]*ReplicateResult{}}
	defer func() { f.GoalsMissed = j.missed }()
	fmt.Fprintf(w, "\n== envdr bench summary  %s  mode: %s  %s, %d CPUs, load %s\n", f.Time, mode, f.Platform, f.CPUs, f.Load)

	// 1. Envelope library.
	fmt.Fprintf(w, "\n-- 1. envelope library vs raw AES-256-GCM (go test -bench ./envelope/; goal: ratio >= %.2f)\n", goalLibRatio)
	if b, err := os.ReadFile(filepath.Join(dir, fileEnvelope)); err != nil {
		fmt.Fprintf(w, "   not run: %v\n", err)
	} else {
		benches := parseGoBench(bytes.NewReader(b))
		writeLibrary(w, benches, j)
		f.Library, f.LibRatios = libraryFigures(benches), libraryRatios(benches)
	}

	// 2. CLI vs age and dd.
	fmt.Fprintf(w, "\n-- 2. envdr CLI vs age v1.2.1 and dd (goals: to a pipe envdr/age >= %.1fx, to /dev/null >= %.1fx; durable file <= %.2fx dd conv=fsync; peak RSS <= %d MiB)\n",
		goalPipeRatio, goalCLIRatio, goalDurableRatio, goalRSSMiB)
	if ms, err := readMeasurements(filepath.Join(dir, fileCLI)); err != nil {
		fmt.Fprintf(w, "   not run: %v\n", err)
	} else {
		f.CLI = writeCLI(w, ms, dir, j)
	}

	// 3. Replicator.
	fmt.Fprintf(w, "\n-- 3. replicator: envdr run --drain as a process, isolated three-region stand-in\n")
	var free, free16, th *ReplicateResult
	if free, err = readReplicate(filepath.Join(dir, fileReplicate)); err != nil {
		fmt.Fprintf(w, "   unthrottled run: not run: %v\n", err)
	}
	if free16, err = readReplicate(filepath.Join(dir, fileReplicate16)); err != nil {
		fmt.Fprintf(w, "   unthrottled run at concurrency 16: not run: %v\n", err)
	}
	if th, err = readReplicate(filepath.Join(dir, fileReplicateTh)); err != nil {
		fmt.Fprintf(w, "   throttled run: not run: %v\n", err)
	}
	writeReplicate(w, free, free16, th, j)
	for name, r := range map[string]*ReplicateResult{"unthrottled": free, "unthrottled_c16": free16, "throttled": th} {
		if r != nil {
			f.Replicate[name] = r
		}
	}

	fmt.Fprintf(w, "\n-- 3. many daemons, one quota: 1, 2, 3... envdr run --drain on one queue, each region's KMS throttled at Q,\n"+
		"   kms_rate left unset (no daemon is told its share); goal: together >= %.2f x the quota-bound rate, 0 failed\n", goalQuotaShare)
	curves, problems := readQuotaCurves(dir, free)
	if len(curves) == 0 {
		fmt.Fprintf(w, "   not run: no %s\n", globQuota)
	}
	writeQuotaCurves(w, curves, j)
	f.Quota = curves

	fmt.Fprintf(w, "\n-- 3. KMS calls per envelope by mode (short unthrottled runs; the counts do not depend on load)\n")
	modes, mproblems := readModes(dir, quota)
	if len(modes) == 0 {
		fmt.Fprintf(w, "   not run: no %s\n", globModes)
	} else {
		writeModes(w, modes, quota)
	}
	f.Modes = modes
	for _, p := range append(problems, mproblems...) {
		fmt.Fprintf(w, "   unreadable: %s\n", p)
	}

	if !short {
		fmt.Fprintf(w, "\n   goals missed: %d\n", j.missed)
	}
	return f, nil
}

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Name    string // without the Benchmark prefix and the -GOMAXPROCS suffix
	Iter    int64
	Metrics map[string]float64 // unit -> value (ns/op, MB/s, B/op, custom b.ReportMetric units)
	Units   []string           // in output order
	Runs    int                // lines seen (-count)
}

var procSuffix = regexp.MustCompile(`-\d+$`)

// parseGoBench reads benchmark result lines; with -count > 1 each metric of a repeated name is
// the median of its runs (Runs says how many).
func parseGoBench(r io.Reader) []GoBench {
	var out []GoBench
	samples := map[string]map[string][]float64{}
	idx := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		iter, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		name := procSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), "")
		k, ok := idx[name]
		if !ok {
			k = len(out)
			idx[name] = k
			out = append(out, GoBench{Name: name, Iter: iter, Metrics: map[string]float64{}})
			samples[name] = map[string][]float64{}
		}
		b := &out[k]
		b.Runs++
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			u := f[i+1]
			if _, seen := samples[name][u]; !seen {
				b.Units = append(b.Units, u)
			}
			samples[name][u] = append(samples[name][u], v)
		}
	}
	for i := range out {
		for u, vs := range samples[out[i].Name] {
			out[i].Metrics[u] = median(vs)
		}
	}
	return out
}

func median(vs []float64) float64 {
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

var standardUnits = map[string]bool{"ns/op": true, "MB/s": true, "B/op": true, "allocs/op": true}

// isRatioUnit: a custom metric comparing with raw AES-GCM ("x-raw", "ratio", "vs-aes", "x");
// throughputs such as "raw-MB/s" are not ratios.
func isRatioUnit(u string) bool {
	l := strings.ToLower(u)
	if standardUnits[u] || strings.Contains(l, "/s") || strings.Contains(l, "/op") {
		return false
	}
	return l == "x" || strings.HasPrefix(l, "x-") || strings.HasPrefix(l, "x_") ||
		strings.Contains(l, "ratio") || strings.Contains(l, "vs")
}

// Ratio is one library-to-raw comparison.
type Ratio struct {
	Name  string  `json:"name"`
	Unit  string  `json:"unit"` // the custom metric, or "computed"
	Value float64 `json:"value"`
}

// libraryRatios returns the ratios the benchmarks report themselves; without any, it pairs each
// envelope benchmark with the raw AES-GCM benchmark of the same size (last name element) and
// direction (seal/encrypt, open/decrypt).
func libraryRatios(bs []GoBench) []Ratio {
	var out []Ratio
	for _, b := range bs {
		for _, u := range b.Units {
			if isRatioUnit(u) {
				out = append(out, Ratio{Name: b.Name, Unit: u, Value: b.Metrics[u]})
			}
		}
	}
	if len(out) > 0 {
		return out
	}
	isRaw := func(n string) bool {
		l := strings.ToLower(n)
		return strings.Contains(l, "raw") || strings.Contains(l, "aesgcm") || strings.Contains(l, "aes_gcm") || strings.Contains(l, "stdlib")
	}
	dir := func(n string) string {
		l := strings.ToLower(n)
		switch {
		case strings.Contains(l, "open"), strings.Contains(l, "decrypt"), strings.Contains(l, "unseal"):
			return "open"
		case strings.Contains(l, "seal"), strings.Contains(l, "encrypt"):
			return "seal"
		}
		return ""
	}
	size := func(n string) string { return n[strings.LastIndex(n, "/")+1:] }
	for _, b := range bs {
		if isRaw(b.Name) || b.Metrics["MB/s"] == 0 {
			continue
		}
		for _, r := range bs {
			if !isRaw(r.Name) || r.Metrics["MB/s"] == 0 || size(r.Name) != size(b.Name) {
				continue
			}
			if dr := dir(r.Name); dr != "" && dr != dir(b.Name) {
				continue
			}
			out = append(out, Ratio{Name: b.Name + " ÷ " + r.Name, Unit: "computed", Value: b.Metrics["MB/s"] / r.Metrics["MB/s"]})
			break
		}
	}
	return out
}

func writeLibrary(w io.Writer, bs []GoBench, j *judge) {
	if len(bs) == 0 {
		fmt.Fprintf(w, "   no benchmark results (is envelope/bench_test.go there?)\n")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "   benchmark (median of runs)\truns\tMB/s\tns/op\tB/op\tallocs/op\tother\t\n")
	for _, b := range bs {
		var other []string
		for _, u := range b.Units {
			if !standardUnits[u] {
				other = append(other, fmt.Sprintf("%.3f %s", b.Metrics[u], u))
			}
		}
		fmt.Fprintf(tw, "   %s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", b.Name, b.Runs, num(b.Metrics, "MB/s", 1), num(b.Metrics, "ns/op", 0),
			num(b.Metrics, "B/op", 0), num(b.Metrics, "allocs/op", 0), strings.Join(other, ", "))
	}
	tw.Flush()
	rs := libraryRatios(bs)
	if len(rs) == 0 {
		fmt.Fprintf(w, "   no ratio to raw AES-256-GCM found (no custom ratio metric, no raw baseline to pair with)\n")
		return
	}
	fmt.Fprintf(w, "\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "   ratio to raw AES-256-GCM\tvalue\tgoal >= %.2f\t\n", goalLibRatio)
	worst := rs[0]
	for _, r := range rs {
		fmt.Fprintf(tw, "   %s [%s]\t%.3f\t%s\t\n", r.Name, r.Unit, r.Value, j.check(r.Value >= goalLibRatio))
		if r.Value < worst.Value {
			worst = r
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "   lowest ratio: %.3f (%s)\n", worst.Value, worst.Name)
}

func num(m map[string]float64, unit string, prec int) string {
	v, ok := m[unit]
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func readMeasurements(path string) ([]Measurement, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Measurement
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var m Measurement
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func readReplicate(path string) (*ReplicateResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errors.New("no " + filepath.Base(path))
		}
		return nil, err
	}
	var r ReplicateResult
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

func writeReplicate(w io.Writer, free, free16, th *ReplicateResult, j *judge) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	runs := []*ReplicateResult{free, free16, th}
	fmt.Fprintf(tw, "   figure\tunthrottled\tunthrottled, concurrency 16\tKMS throttled\tgoal\t\n")
	col := func(r *ReplicateResult, f func(*ReplicateResult) string) string {
		if r == nil {
			return "-"
		}
		return f(r)
	}
	row := func(name string, f func(*ReplicateResult) string, goal string) {
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%s\t%s\t\n", name, col(free, f), col(free16, f), col(th, f), goal)
	}
	row("envelopes / regions / mode", func(r *ReplicateResult) string {
		return fmt.Sprintf("%d / %d / %s", r.N, len(r.PerRegionPerEnvelope), r.Mode)
	}, "")
	row("stand-in KMS limit per region", func(r *ReplicateResult) string {
		if r.ThrottleRPS == 0 {
			return "none"
		}
		return fmt.Sprintf("%g req/s", r.ThrottleRPS)
	}, "")
	row("daemon kms_rate / concurrency", func(r *ReplicateResult) string { return fmt.Sprintf("%g / %d", r.KMSRate, r.Concurrency) }, "")
	row("events/s (first receive -> last ack)", func(r *ReplicateResult) string { return fmt.Sprintf("%.1f", r.EventsPerS) }, "")
	row("active time s / daemon wall s", func(r *ReplicateResult) string { return fmt.Sprintf("%.2f / %.2f", r.ActiveS, r.Daemon.WallS) }, "")
	cpuOK := true
	for _, r := range []*ReplicateResult{free, free16} {
		if r != nil && r.Mode == "mrk" && len(r.PerRegionPerEnvelope) == 3 {
			cpuOK = cpuOK && r.CPUPerEnvMs <= goalCPUPerEnv
		}
	}
	row("daemon CPU per envelope", func(r *ReplicateResult) string {
		return fmt.Sprintf("%.3f ms (%.2fs user + %.2fs sys)", r.CPUPerEnvMs, r.Daemon.UserS, r.Daemon.SysS)
	}, fmt.Sprintf("<= %.1f ms unthrottled %s", goalCPUPerEnv, j.check(cpuOK)))
	row("daemon peak RSS", func(r *ReplicateResult) string { return fmt.Sprintf("%.1f MiB", float64(r.Daemon.MaxRSSKiB)/1024) }, "")
	ops := map[string]bool{}
	for _, r := range runs {
		if r != nil {
			for op := range r.PerEnvelope {
				ops[op] = true
			}
		}
	}
	for _, op := range sortedKeys(ops) {
		row("KMS "+op+" per envelope", func(r *ReplicateResult) string { return fmt.Sprintf("%.3f", r.PerEnvelope[op]) }, "")
	}
	regs := map[string]bool{}
	for _, r := range runs {
		if r != nil {
			for reg := range r.PerRegionPerEnvelope {
				regs[reg] = true
			}
		}
	}
	for _, reg := range sortedKeys(regs) {
		row("KMS calls per envelope in "+reg, func(r *ReplicateResult) string { return fmt.Sprintf("%.3f", r.PerRegionPerEnvelope[reg]) }, "")
	}
	storage := map[string]bool{}
	for _, r := range runs {
		if r != nil {
			for op := range r.StoragePerEnvelope {
				storage[op] = true
			}
		}
	}
	for _, op := range sortedKeys(storage) {
		row(op+" per envelope", func(r *ReplicateResult) string { return fmt.Sprintf("%.3f", r.StoragePerEnvelope[op]) }, "")
	}
	row("KMS ThrottlingException answers", func(r *ReplicateResult) string {
		var n int64
		for _, m := range r.Throttled {
			for _, v := range m {
				n += v
			}
		}
		return strconv.FormatInt(n, 10)
	}, "")
	if th != nil {
		fmt.Fprintf(tw, "   quota-bound rate (limit / max region calls per envelope)\t\t\t%.1f\t\t\n", th.QuotaBoundRate)
		fmt.Fprintf(tw, "   achieved / quota-bound rate\t\t\t%.3f\t>= %.2f %s\t\n", th.Fraction, goalQuotaShare, j.check(th.Fraction >= goalQuotaShare))
	}
	defer func() {
		if th != nil && free != nil && th.QuotaBoundRate > 0 && free.EventsPerS < 1.1*th.QuotaBoundRate {
			fmt.Fprintf(w, "   note: unthrottled, this machine replicated %.1f envelopes/s, not clearly above the quota-bound %.1f/s:\n"+
				"   the machine, not the KMS quota, bounded the throttled run, so its fraction says little about the limiter.\n",
				free.EventsPerS, th.QuotaBoundRate)
		}
	}()
	failedOK := true
	for _, r := range runs {
		failedOK = failedOK && (r == nil || r.FailedEnvelopes == 0)
	}
	row("failed envelopes (not verified+opened in every region)", func(r *ReplicateResult) string { return strconv.Itoa(r.FailedEnvelopes) }, "0 "+j.check(failedOK))
	row("DLQ / left in queue", func(r *ReplicateResult) string { return fmt.Sprintf("%d / %d", r.DLQ, r.QueueLeft) }, "0 / 0")
	row("region unwraps re-checked by the bench", func(r *ReplicateResult) string { return strconv.Itoa(r.RegionUnwrapsOK) }, "")
	row("event outcomes (daemon log)", func(r *ReplicateResult) string { return outcomes(r.Outcomes) }, "")
	tw.Flush()
	for _, r := range runs {
		if r != nil && len(r.Problems) > 0 {
			fmt.Fprintf(w, "   problems (limit %g): %s\n", r.ThrottleRPS, strings.Join(r.Problems, "; "))
		}
	}
}

func outcomes(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
