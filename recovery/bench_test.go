package recovery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/internal/loadavg"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// cliRun runs the envdr binary (ENVDR_BIN) and returns stdout, wall time, peak RSS in MiB and
// the child's CPU time (user + system).
// The peak is the child's VmHWM, polled from /proc: the rusage of a child started by os/exec
// also counts this (much bigger) test process, whose address space the child shares until exec.
func cliRun(b testing.TB, bin string, args ...string) ([]byte, time.Duration, float64, time.Duration) {
	b.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	require.NoError(b, cmd.Start())
	var hwm atomic.Int64
	done := make(chan struct{})
	go func() {
		status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
		for {
			if kb := vmHWM(status); kb > hwm.Load() {
				hwm.Store(kb)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	d := time.Since(start)
	if err != nil {
		var ee *exec.ExitError
		// Exit 1 is "findings" (e.g. verify on records the bench left unverified): still a run.
		if !(errorsAs(err, &ee) && ee.ExitCode() == 1) || out.Len() == 0 {
			b.Fatalf("%s %v: %v\n%s", bin, args, err, errb.String())
		}
	}
	return out.Bytes(), d, float64(hwm.Load()) / 1024, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// vmHWM reads a process's peak resident set size in KiB (0 once it is gone).
func vmHWM(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*target = e
	}
	return ok
}

// BenchmarkDrillScale is make drill-bench: it seeds ENVDR_DRILL_N records (default 10,000;
// ENVDR_BENCH_RECORDS is an alias) straight into every region's replica (seedLoad), and runs
// `envdr drill` and `envdr verify` as separate processes at 10,000 records, then at every
// tenfold size below N, then at N, reporting their rate, peak RSS and the load average: peak
// RSS must stay flat. kms_rate is raised so these figures are envdr's own. At the first size it
// also runs verify with per-record stamps (--stamp-batch 1, as before batching) and verify with
// every region's KMS throttled at ENVDR_DRILL_QUOTA requests/s (default 100) and kms_rate set
// to it: the achieved rate over the quota-bound rate (the limit over the most KMS calls per
// record in any region), goal >= 0.9.
func BenchmarkDrillScale(b *testing.B) {
	bin := os.Getenv("ENVDR_BIN")
	if bin == "" {
		b.Fatal("set ENVDR_BIN to a built envdr binary (make drill-bench does)")
	}
	n := envInt("ENVDR_DRILL_N", envInt("ENVDR_BENCH_RECORDS", 10000))
	quota := envInt("ENVDR_DRILL_QUOTA", 100)
	f := setup(b)
	cfgPath := benchConfig(b, f, 50000)
	quotaCfg := benchConfig(b, f, float64(quota))

	fmt.Printf("\n%-9s  %-72s  %9s  %11s  %12s  %11s  %s\n", "records", "operation", "seconds", "records/s", "peak RSS MiB", "CPU ms/rec", "load average")
	type row struct {
		records int
		op      string
		rate    float64
		rssMB   float64
	}
	var rows []row
	emit := func(records int, op string, d time.Duration, rss float64, cpu time.Duration) {
		r := row{records, op, float64(records) / d.Seconds(), rss}
		rows = append(rows, r)
		fmt.Printf("%-9d  %-72s  %9.2f  %11.0f  %12.1f  %11.3f  %s\n", records, op, d.Seconds(), r.rate, rss,
			float64(cpu.Microseconds())/1000/float64(records), loadavg.String())
	}
	verify := func(records int, cfg, op string, args ...string) *verifyJSON {
		out, d, rss, cpu := cliRun(b, bin, append([]string{"--config", cfg, "verify", "--json", "--quiet", "--segments", "8", "--workers", "32"}, args...)...)
		var vr verifyJSON
		require.NoError(b, json.Unmarshal(out, &vr))
		require.Equal(b, int64(records), vr.OK, "failures (first few): %+v", vr.Failures[:min(len(vr.Failures), 5)])
		// A batch whose outcome was unknown (a timeout) falls back record by record, and finds
		// its own stamps already there: stamped, but not counted as updated by this run.
		require.GreaterOrEqual(b, vr.Updated+vr.StampFallbacks, int64(records), "failures (first few): %+v", vr.Failures[:min(len(vr.Failures), 5)])
		emit(records, fmt.Sprintf("%s (%d writes, %d fallbacks, %d updated)", op, vr.StampWrites, vr.StampFallbacks, vr.Updated), d, rss, cpu)
		return &vr
	}
	measure := func(records int) {
		out, d, rss, cpu := cliRun(b, bin, "--config", cfgPath, "drill", "--lose", "eu-west-1", "--json", "--quiet", "--segments", "8", "--workers", "32")
		var dr struct {
			Records     int64 `json:"records"`
			Recoverable int64 `json:"recoverable"`
		}
		require.NoError(b, json.Unmarshal(out, &dr))
		require.Equal(b, int64(records), dr.Records)
		require.Equal(b, dr.Records, dr.Recoverable)
		emit(records, "drill --lose eu-west-1", d, rss, cpu)
		verify(records, cfgPath, "verify, 3 regions, batched stamps")
	}
	var sizes []int
	for s := 10000; s < n; s *= 10 {
		sizes = append(sizes, s)
	}
	sizes = append(sizes, n)

	seeded := 0
	for i, size := range sizes {
		start := time.Now()
		seedLoad(b, f, size-seeded)
		fmt.Printf("seeded %d records (%d in all) in %s, %.0f records/s; load average %s\n", size-seeded, size,
			time.Since(start).Round(time.Millisecond), float64(size-seeded)/time.Since(start).Seconds(), loadavg.String())
		seeded = size
		if i == 0 {
			b.ResetTimer()
		}
		measure(size)
		if i > 0 {
			continue
		}
		verify(size, cfgPath, "verify, per-record stamps (--stamp-batch 1)", "--stamp-batch", "1")
		q := quotaRun(b, f, size, float64(quota), func() *verifyJSON {
			return verify(size, quotaCfg, fmt.Sprintf("verify, KMS throttled at %d/s, kms_rate %d", quota, quota))
		})
		b.ReportMetric(q, "quota-fraction")
	}
	b.StopTimer()
	last := rows[len(rows)-2:]
	b.ReportMetric(last[0].rate, "drill-records/s@max")
	b.ReportMetric(last[1].rate, "verify-records/s@max")
	b.ReportMetric(rows[0].rssMB, "drill-MiB")
	b.ReportMetric(last[0].rssMB, "drill-max-MiB")
	b.ReportMetric(rows[1].rssMB, "verify-MiB")
	b.ReportMetric(last[1].rssMB, "verify-max-MiB")
}

// verifyJSON is the part of verify's --json report the benchmark reads.
type verifyJSON struct {
	Records        int64   `json:"records"`
	OK             int64   `json:"ok"`
	Updated        int64   `json:"verified_at_updated"`
	RecordsPerSec  float64 `json:"records_per_second"`
	StampWrites    int64   `json:"stamp_writes"`
	StampFallbacks int64   `json:"stamp_fallbacks"`
	Failures       []struct {
		ID, Region, Outcome, Reason string
	} `json:"failures"`
}

// benchConfig writes f's config with every region's kms_rate set, and returns its path. It
// signs as the rewrap role, which may do all a bench runs: scan, decrypt, stamp.
func benchConfig(b testing.TB, f *fixture, kmsRate float64) string {
	cfg := *f.as(b, iam.RoleRewrap)
	cfg.Regions = append([]config.Region(nil), f.cfg.Regions...)
	for i := range cfg.Regions {
		cfg.Regions[i].KMSRate = kmsRate
	}
	p := filepath.Join(b.TempDir(), "envdr.yaml")
	require.NoError(b, localaws.WriteConfig(p, &cfg))
	return p
}

// quotaRun throttles every region's KMS stand-in at quota requests/s, runs run (verify with
// kms_rate = quota), and prints and returns its rate over the quota-bound rate: quota over the
// most KMS calls per record in any region (one Decrypt each, plus the few DescribeKey calls of
// start-up), from the stand-in's counters.
func quotaRun(b testing.TB, f *fixture, records int, quota float64, run func() *verifyJSON) float64 {
	for _, r := range f.env.Regions {
		f.env.KMS.SetRateLimit(r, quota)
	}
	f.env.KMS.ResetCounters()
	vr := run()
	counters := f.env.KMS.Counters()
	for _, r := range f.env.Regions {
		f.env.KMS.SetRateLimit(r, 0)
	}
	var maxPer float64
	var throttled int64
	for _, r := range f.env.Regions {
		var calls int64
		for op, c := range counters[r] {
			if op != "Throttled" {
				calls += c
			}
		}
		throttled += counters[r]["Throttled"]
		maxPer = max(maxPer, float64(calls-counters[r]["Throttled"])/float64(records))
	}
	bound := quota / maxPer
	frac := vr.RecordsPerSec / bound
	fmt.Printf("quota: KMS limited to %.0f req/s per region; %.3f KMS calls per record in the busiest region (%d throttled answers);"+
		" quota-bound rate %.1f records/s; verify %.1f records/s (its own clock); achieved / quota-bound %.3f (goal >= 0.90)\n",
		quota, maxPer, throttled, bound, vr.RecordsPerSec, frac)
	return frac
}

// seedLoad writes n fully replicated records straight into every region's replica with
// BatchWriteItem (replicate.MintAndLoad through localaws.Backends.ReplicaDynamoDB), neither
// through the replicator nor through the stand-in's replication: fast enough for a million.
// Each record costs one KMS call, GenerateDataKey in the home region under the multi-Region key.
func seedLoad(b testing.TB, f *fixture, n int) {
	b.Helper()
	home, err := f.producer.HomeRegion()
	require.NoError(b, err)
	stores := map[string]*replicate.Store{}
	for _, r := range f.env.Regions {
		stores[r] = replicate.NewStore(f.cfg.Table, r, f.env.Backends.ReplicaDynamoDB(r), f.cfg.RegionNames())
	}
	require.NoError(b, replicate.MintAndLoad(context.Background(), home, stores, n, "drill-bench"))
}

// BenchmarkRewrapSoak is make rewrap-soak: the rotation, kill and resume scenario on
// ENVDR_SOAK_RECORDS records (default 10,000).
func BenchmarkRewrapSoak(b *testing.B) {
	n := envInt("ENVDR_SOAK_RECORDS", 10000)
	start := time.Now()
	rep1, rep2 := rewrapKillResume(b, n)
	fmt.Printf("\nrewrap soak: %d records; killed run changed %d, resumed run changed %d (unchanged %d, failed %d), %.0f records/s; every record written exactly once; total %s\n",
		n, rep1.Changed, rep2.Changed, rep2.Unchanged, rep2.Failed, rep2.RecordsPerSec, time.Since(start).Round(time.Millisecond))
}

// The short form of make drill-bench, in-process: 2,000 records seeded straight into every
// replica, a drill, and verify with batched stamps (every record stamped, in transactions of 33
// records). make drill-bench is too long for CI.
func TestDrillBenchShort(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const n = 2000
	start := time.Now()
	seedLoad(t, f, n)
	t.Logf("seeded %d records in %s", n, time.Since(start))
	ctx := context.Background()
	dr, err := recovery.Drill(ctx, f.as(t, iam.RoleOperator), recovery.DrillOptions{Lose: "eu-west-1", Regions: fastRegions, Segments: 8, Workers: 32})
	require.NoError(t, err)
	require.Equal(t, int64(n), dr.Recoverable)
	rep, err := recovery.Verify(ctx, f.as(t, iam.RoleRewrap), recovery.VerifyOptions{Regions: fastRegions, Segments: 8, Workers: 32})
	require.NoError(t, err)
	require.True(t, rep.Passed(), "%+v", rep.Failures)
	t.Logf("drill %.0f records/s, verify %.0f records/s (%d writes, %d fallbacks)", dr.Timings.RecordsPerSec, rep.RecordsPerSec, rep.StampWrites, rep.StampFallbacks)
	require.Equal(t, int64(n), rep.OK)
	require.Equal(t, int64(n), rep.Updated, "writes %d items %d fallbacks %d", rep.StampWrites, rep.StampItems, rep.StampFallbacks)
	require.Equal(t, int64(3*n), rep.StampItems)
	require.LessOrEqual(t, rep.StampWrites, int64(n/33+2*8*32/33+1))
}

// BenchmarkScale is make scale-bench (issue 25): on ENVDR_SCALE_N records (default 100,000)
// seeded straight into every replica, a statistical verify at 99.9% confidence and 0.1% max
// defect (6,905 records), then a full read-only verify as 1, 2 and 4 shards run side by side
// (wall time of the slowest shard), and the 4 shards' reports merged and checked. Each run is
// the envdr binary (ENVDR_BIN) as a separate process.
func BenchmarkScale(b *testing.B) {
	bin := os.Getenv("ENVDR_BIN")
	if bin == "" {
		b.Fatal("set ENVDR_BIN to a built envdr binary (make scale-bench does)")
	}
	n := envInt("ENVDR_SCALE_N", 100000)
	f := setup(b)
	cfgPath := benchConfig(b, f, 50000)
	// The statistical verify runs at each size of ENVDR_SCALE_STEPS below n (e.g. 100000,250000),
	// seeding up to it, and at n: a long seeding still yields figures if it is stopped.
	var sizes []int
	for _, v := range strings.Split(os.Getenv("ENVDR_SCALE_STEPS"), ",") {
		if k, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && k > 0 && k < n {
			sizes = append(sizes, k)
		}
	}
	sizes = append(sizes, n)
	seeded := 0
	for _, size := range sizes {
		start := time.Now()
		seedLoad(b, f, size-seeded)
		fmt.Printf("\nseeded %d records (%d in all) in %s (%.0f records/s); load average %s\n", size-seeded, size, time.Since(start).Round(time.Millisecond),
			float64(size-seeded)/time.Since(start).Seconds(), loadavg.String())
		seeded = size
		d := sampleVerify(b, f, bin, cfgPath, size)
		b.ReportMetric(d.Seconds(), fmt.Sprintf("sample-verify-s@%d", size))
	}
	b.ResetTimer()

	dir := b.TempDir()
	var one float64
	shardRuns := scaleShards(b)
	workers := strconv.Itoa(envInt("ENVDR_SCALE_WORKERS", 32))
	if v := os.Getenv("ENVDR_SCALE_LATENCY"); v != "" && len(shardRuns) > 0 {
		// Each shard is one process, and on this machine every process shares the same two cores
		// with DynamoDB Local and the stand-in: a CPU-bound shard leaves nothing for another. A
		// service latency per request makes a shard bound by round trips instead, as a task on
		// AWS is: verify reads every region's replica and KMS through that region's endpoints,
		// so from one region the others are a cross-region round trip away (about 70 ms from
		// us-east-1 to eu-west-1, 200 ms to ap-southeast-2). Set after seeding, for the shards'
		// runs only. "D" for every region, or "REGION=D,REGION=D".
		lats := map[string]string{}
		for _, part := range strings.Split(v, ",") {
			if r, d, ok := strings.Cut(part, "="); ok {
				lats[strings.TrimSpace(r)] = strings.TrimSpace(d)
				continue
			}
			for _, r := range f.env.Regions {
				lats[r] = strings.TrimSpace(part)
			}
		}
		for r, d := range lats {
			lat, jit, err := localaws.ParseLatency(d)
			require.NoError(b, err, "ENVDR_SCALE_LATENCY=%q", v)
			require.NoError(b, f.env.Stack.SetFault(r, "", localaws.Fault{Latency: lat, Jitter: jit}))
		}
		fmt.Printf("each request to a region's KMS, DynamoDB, SQS and S3 is answered after %v; verify --workers %s per shard\n", lats, workers)
	}
	for _, shards := range shardRuns {
		var wg sync.WaitGroup
		times := make([]time.Duration, shards)
		counts := make([]int64, shards)
		cpus := make([]time.Duration, shards)
		ddbBefore := processCPU(dynamoDBLocalPID(f.env.Backends.DynamoDB))
		begin := time.Now()
		for i := range shards {
			wg.Add(1)
			go func() {
				defer wg.Done()
				args := []string{"--config", cfgPath, "verify", "--json", "--quiet", "--no-write", "--segments", "8", "--workers", workers}
				if shards > 1 {
					args = append(args, "--shard", fmt.Sprintf("%d/%d", i+1, shards), "--report", filepath.Join(dir, fmt.Sprintf("s%d-%d", shards, i+1)))
				}
				out, d, _, cpu := cliRun(b, bin, args...)
				var vr verifyJSON
				require.NoError(b, json.Unmarshal(out, &vr))
				times[i], counts[i], cpus[i] = d, vr.Records, cpu
			}()
		}
		wg.Wait()
		wall := time.Since(begin)
		var total int64
		for _, c := range counts {
			total += c
		}
		require.Equal(b, int64(n), total, "the shards together read every record once")
		if shards == 1 {
			one = wall.Seconds()
		}
		var envdrCPU time.Duration
		for _, c := range cpus {
			envdrCPU += c
		}
		ddbCPU := processCPU(dynamoDBLocalPID(f.env.Backends.DynamoDB)) - ddbBefore
		fmt.Printf("full verify, %d shard(s) side by side: %.1fs wall (%.0f records/s), speed-up %.2fx; CPU per record: envdr %.3f ms, DynamoDB Local %.3f ms (all its clients); load average %s\n",
			shards, wall.Seconds(), float64(n)/wall.Seconds(), one/wall.Seconds(),
			float64(envdrCPU.Microseconds())/1000/float64(n), float64(ddbCPU.Microseconds())/1000/float64(n), loadavg.String())
		b.ReportMetric(wall.Seconds(), fmt.Sprintf("verify-%dshards-s", shards))
	}
	if k := len(shardRuns); k > 0 && shardRuns[k-1] > 1 {
		last := shardRuns[k-1:]
		var files []string
		for i := 1; i <= last[0]; i++ {
			files = append(files, filepath.Join(dir, fmt.Sprintf("s%d-%d.json", last[0], i)))
		}
		cliRun(b, bin, append([]string{"report", "merge", "--out", filepath.Join(dir, "merged")}, files...)...)
		out, _, _, _ := cliRun(b, bin, "drill", "verify-report", filepath.Join(dir, "merged.json"))
		require.Contains(b, string(out), "digest OK")
		fmt.Printf("merged the %d shards' reports: %s", last[0], out)
	}
	holdTable(b, cfgPath)
}

// sampleVerify runs `envdr verify --confidence 99.9% --max-defect 0.1%` on the n records seeded
// and prints its time, CPU, peak RSS, bound and the KMS Decrypts it made per region (the
// stand-in's counters).
func sampleVerify(b testing.TB, f *fixture, bin, cfgPath string, n int) time.Duration {
	f.env.KMS.ResetCounters()
	out, d, rss, cpu := cliRun(b, bin, "--config", cfgPath, "verify", "--json", "--quiet", "--no-write", "--confidence", "99.9%", "--max-defect", "0.1%", "--workers", "32")
	var sv struct {
		Passed  bool  `json:"passed"`
		Records int64 `json:"records"`
		Sample  struct {
			Drawn           int64   `json:"drawn"`
			WorstUpperBound float64 `json:"worst_upper_bound"`
		} `json:"sample"`
	}
	require.NoError(b, json.Unmarshal(out, &sv))
	require.True(b, sv.Passed)
	decrypts := map[string]int64{}
	for r, ops := range f.env.KMS.Counters() {
		decrypts[r] = ops["Decrypt"]
	}
	fmt.Printf("statistical verify (99.9%%, max defect 0.1%%): %d of %d records in %.1fs (CPU %.1fs, peak RSS %.1f MiB); bound %.4f%%; KMS Decrypts per region %v; load average %s\n",
		sv.Records, n, d.Seconds(), cpu.Seconds(), rss, 100*sv.Sample.WorstUpperBound, decrypts, loadavg.String())
	return d
}

// scaleShards reads ENVDR_SCALE_SHARDS, the shard counts BenchmarkScale runs full verify at
// ("1,2,4" by default; "none" for none: a million records take most of an hour per full pass
// on the stand-in).
func scaleShards(b testing.TB) []int {
	v := os.Getenv("ENVDR_SCALE_SHARDS")
	if v == "" {
		return []int{1, 2, 4}
	}
	if v == "none" {
		return nil
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		require.NoError(b, err, "ENVDR_SCALE_SHARDS=%q: want shard counts like 1,2,4 or none", v)
		require.Positive(b, n)
		out = append(out, n)
	}
	return out
}

// holdTable, when ENVDR_SCALE_HOLD names a file, writes the bench config's path into it and
// waits until the file is removed, so more commands can be run by hand against the seeded
// table (seeding a million records is the slow part) before the bench deletes it.
func holdTable(b testing.TB, cfgPath string) {
	hold := os.Getenv("ENVDR_SCALE_HOLD")
	if hold == "" {
		return
	}
	require.NoError(b, os.WriteFile(hold, []byte(cfgPath+"\n"), 0o600))
	fmt.Printf("holding the table: config %s; remove %s to end the bench and delete it\n", cfgPath, hold)
	for {
		if _, err := os.Stat(hold); err != nil {
			return
		}
		time.Sleep(2 * time.Second)
	}
}

// BenchmarkVerifyCost compares envdr builds on one full read-only verify: it seeds ENVDR_COST_N
// records (default 5,000) and runs `envdr verify --no-write --segments 8 --workers 32` with each
// binary of ENVDR_COST_BINS (comma-separated; default ENVDR_BIN), alternating them
// ENVDR_COST_ROUNDS times (default 2) so each sees the same machine load, and prints wall time
// and the process's CPU per record. With ENVDR_COST_PROFILES=DIR each run writes a pprof CPU
// profile there (verify --cpu-profile).
func BenchmarkVerifyCost(b *testing.B) {
	bins := strings.Split(os.Getenv("ENVDR_COST_BINS"), ",")
	if bins[0] == "" {
		bins = []string{os.Getenv("ENVDR_BIN")}
	}
	require.NotEmpty(b, bins[0], "set ENVDR_BIN or ENVDR_COST_BINS to envdr binaries")
	n := envInt("ENVDR_COST_N", 5000)
	f := setup(b)
	cfgPath := benchConfig(b, f, 50000)
	start := time.Now()
	seedLoad(b, f, n)
	fmt.Printf("\nseeded %d records in %s; load average %s\n", n, time.Since(start).Round(time.Millisecond), loadavg.String())
	dir := os.Getenv("ENVDR_COST_PROFILES")
	for round := range envInt("ENVDR_COST_ROUNDS", 2) {
		for i, bin := range bins {
			args := []string{"--config", cfgPath, "verify", "--json", "--quiet", "--no-write", "--segments", "8", "--workers", "32"}
			if dir != "" {
				args = append(args, "--cpu-profile", filepath.Join(dir, fmt.Sprintf("verify-%d-%d.pprof", i+1, round+1)))
			}
			f.env.Stack.ResetCalls()
			out, d, rss, cpu := cliRun(b, bin, args...)
			var vr verifyJSON
			require.NoError(b, json.Unmarshal(out, &vr))
			require.Equal(b, int64(n), vr.OK)
			fmt.Printf("round %d, build %d (%s): %d records in %.1fs (%.0f records/s), CPU %.3f ms/record, peak RSS %.1f MiB; DynamoDB calls per record %s; load average %s\n",
				round+1, i+1, bin, n, d.Seconds(), float64(n)/d.Seconds(), float64(cpu.Microseconds())/1000/float64(n), rss,
				perRecord(f.env.Stack.Calls(), "dynamodb:", n), loadavg.String())
		}
	}
}

// perRecord sums calls of the operations with prefix over every region and renders each per
// record ("Scan 0.02, BatchGetItem 0.14").
func perRecord(calls map[string]map[string]int64, prefix string, n int) string {
	sum := map[string]int64{}
	for _, ops := range calls {
		for op, c := range ops {
			if strings.HasPrefix(op, prefix) {
				sum[strings.TrimPrefix(op, prefix)] += c
			}
		}
	}
	var parts []string
	for op, c := range sum {
		parts = append(parts, fmt.Sprintf("%s %.3f", op, float64(c)/float64(n)))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// BenchmarkScrub is make scrub-bench (issue 25): ENVDR_SCRUB_N records (default 100,000) seeded
// straight into every replica, never verified, one region's wrap of one record broken on
// purpose (another record's wrap), then one daemon's scrubber per region with a budget of 5% of
// kms_rate ENVDR_SCRUB_KMS_RATE (default 2,000 requests/s: 100 KMS calls/s of scrubbing per
// region). The period is the one the budget needs to cover the table, N / (5% x kms_rate),
// times 1.25, chosen so that a pass begins as the scrubbers start. It prints, per region, the
// time to cover the table (every scan segment done in the pass) against the period, the KMS
// calls the stand-in counted against what the budget allows in that time, and the outcomes;
// the broken wrap must be repaired.
func BenchmarkScrub(b *testing.B) {
	n := envInt("ENVDR_SCRUB_N", 100000)
	kmsRate := float64(envInt("ENVDR_SCRUB_KMS_RATE", 2000))
	const budget = 0.05
	f := setup(b)
	start := time.Now()
	seedLoad(b, f, n)
	fmt.Printf("\nseeded %d records in %s; load average %s\n", n, time.Since(start).Round(time.Millisecond), loadavg.String())
	ctx := context.Background()

	// Break eu-west-1's wrap of one record: another record's wrap, which KMS refuses under this
	// record's context (or which opens to another data key).
	const broken = "eu-west-1"
	var ids []string
	require.NoError(b, f.home.Scan(ctx, 0, 64, func(r *envelope.Record) error {
		if len(ids) < 2 {
			ids = append(ids, r.ID)
		}
		return nil
	}))
	require.Len(b, ids, 2)
	other, err := f.home.Get(ctx, ids[1])
	require.NoError(b, err)
	_, err = f.home.Update(ctx, ids[0], func(cur *envelope.Record) (*envelope.Record, error) {
		next := cur.Clone()
		next.Regions[broken].Wrapped = bytes.Clone(other.Regions[broken].Wrapped)
		return next, nil
	})
	require.NoError(b, err)
	f.env.Settle()

	need := time.Duration(float64(n) / (budget * kmsRate) * float64(time.Second))
	period := scrubPeriod(need*5/4, time.Now())
	cfg := *f.as(b, iam.RoleDaemon)
	cfg.Regions = append([]config.Region(nil), f.cfg.Regions...)
	for i := range cfg.Regions {
		cfg.Regions[i].KMSRate = kmsRate
	}
	cfg.Scrub.Budget, cfg.Scrub.Period = "5%", period.String()
	require.NoError(b, cfg.Validate())
	require.NoError(b, localaws.LoadRenderedPolicies(f.env.IAM, &cfg)) // the daemon may Scan
	topo, err := regions.New(ctx, &cfg, regions.Options{})
	require.NoError(b, err)
	fmt.Printf("kms_rate %.0f/s, budget 5%% = %.0f KMS calls/s per region; %d records need %s; period %s\n",
		kmsRate, budget*kmsRate, n, need.Round(time.Second), period)

	type run struct {
		s       *replicate.Scrubber
		m       *replicate.Metrics
		covered time.Duration
	}
	runs := map[string]*run{}
	for _, r := range f.env.Regions {
		m := replicate.NewMetrics()
		s, err := replicate.NewScrubber(topo, r, zap.NewNop(), m)
		require.NoError(b, err)
		runs[r] = &run{s: s, m: m}
	}
	f.env.ResetCounters()
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	begin := time.Now()
	for _, r := range runs {
		wg.Add(1)
		go func() { defer wg.Done(); r.s.Run(sctx) }()
	}
	lastReport := time.Now()
	for left := len(runs); left > 0 && time.Since(begin) < 2*period; {
		time.Sleep(500 * time.Millisecond)
		if time.Since(lastReport) >= time.Minute {
			lastReport = time.Now()
			fmt.Printf("  after %s:", time.Since(begin).Round(time.Second))
			for _, name := range f.env.Regions {
				fmt.Printf(" %s %.0f verified;", name, testutilValue(runs[name].m.Scrub.Records.WithLabelValues(name, "verified")))
			}
			fmt.Printf(" load average %s\n", loadavg.String())
		}
		for _, r := range runs {
			if r.covered == 0 {
				if c, err := r.s.Coverage(ctx); err == nil && c == 1 {
					r.covered = time.Since(begin)
					left--
				}
			}
		}
	}
	elapsed := time.Since(begin)
	cancel()
	wg.Wait()
	counters := f.env.Counters()
	for _, name := range f.env.Regions {
		r := runs[name]
		var calls int64
		for op, c := range counters[name] {
			if op != "Throttled" {
				calls += c
			}
		}
		at := r.covered
		if at == 0 {
			at = elapsed
		}
		out := map[string]float64{}
		for _, o := range []string{"verified", "recent", "no_wrap", "failed", "repaired"} {
			out[o] = testutilValue(r.m.Scrub.Records.WithLabelValues(name, o))
		}
		fmt.Printf("%-15s covered in %s (period %s, %.0f%% of it); KMS calls %d (stand-in) / %.0f (scrubber) in %s, budget allows %.0f (%.2f of it); %v; load average %s\n",
			name, r.covered.Round(time.Second), period, 100*r.covered.Seconds()/period.Seconds(), calls,
			testutilValue(r.m.Scrub.KMSCalls.WithLabelValues(name)), elapsed.Round(time.Second),
			budget*kmsRate*elapsed.Seconds()+1, float64(calls)/(budget*kmsRate*elapsed.Seconds()+1), out, loadavg.String())
	}
	for _, name := range f.env.Regions {
		require.NotZero(b, runs[name].covered, "region %s: the table was not covered within two periods", name)
	}
	fixed, err := f.home.Get(ctx, ids[0])
	require.NoError(b, err)
	require.False(b, bytes.Equal(fixed.Regions[broken].Wrapped, other.Regions[broken].Wrapped), "the broken wrap was replaced")
	require.Equal(b, 1.0, testutilValue(runs[broken].m.Scrub.Records.WithLabelValues(broken, "repaired")))
	fmt.Printf("the broken %s wrap of record %s was repaired\n", broken, ids[0])
}

// scrubPeriod returns a whole-second period of at least least in which a pass (passes are aligned
// to multiples of the period since the Unix epoch) begins within 2% of its length before now, so
// a bench's scrubbers start at the beginning of a pass.
func scrubPeriod(least time.Duration, now time.Time) time.Duration {
	p0 := int64(max(least.Seconds(), 60))
	for p := p0; p < 4*p0; p++ {
		if into := now.Unix() % p; float64(into) < 0.02*float64(p) {
			return time.Duration(p) * time.Second
		}
	}
	return time.Duration(p0) * time.Second
}

// testutilValue is a counter's current value.
func testutilValue(c prometheus.Counter) float64 { return testutil.ToFloat64(c) }

// dynamoDBLocalPID finds the DynamoDB Local process serving endpoint (its -port), or 0.
func dynamoDBLocalPID(endpoint string) int {
	_, port, ok := strings.Cut(strings.TrimPrefix(endpoint, "http://"), ":")
	if !ok {
		return 0
	}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		for i, a := range args {
			if a == "-port" && i+1 < len(args) && args[i+1] == port && strings.Contains(string(cmd), "java") {
				return pid
			}
		}
	}
	return 0
}

// processCPU is a process's user + system CPU time so far (/proc/PID/stat), 0 if unknown.
func processCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start after the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticks
}
