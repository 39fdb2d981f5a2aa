package recovery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

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
// BatchWriteItem (replicate.Store.Load through localaws.Backends.ReplicaDynamoDB), neither
// through the replicator nor through the stand-in's replication: fast enough for a million.
// Each record costs one KMS call, GenerateDataKey in the home region under the multi-Region
// key; a multi-Region key's ciphertext opens under each of its replicas, so every region's wrap
// is that ciphertext under the region's replica ARN. The data key is wiped at once.
func seedLoad(b testing.TB, f *fixture, n int) {
	b.Helper()
	const chunk = 250
	home, err := f.producer.HomeRegion()
	require.NoError(b, err)
	stores := map[string]*replicate.Store{}
	for _, r := range f.env.Regions {
		stores[r] = replicate.NewStore(f.cfg.Table, r, f.env.Backends.ReplicaDynamoDB(r), f.cfg.RegionNames())
	}
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(16)
	for done := 0; done < n; done += chunk {
		k := min(chunk, n-done)
		g.Go(func() error {
			recs := make([]*envelope.Record, 0, k)
			for range k {
				rec, err := loadRecord(ctx, home, f.env.Regions)
				if err != nil {
					return err
				}
				recs = append(recs, rec)
			}
			for _, r := range f.env.Regions {
				if err := stores[r].Load(ctx, recs); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(b, g.Wait())
}

// loadRecord makes one record for seedLoad.
func loadRecord(ctx context.Context, home *regions.Region, in []string) (*envelope.Record, error) {
	rec, wrapped, arn, err := mintRecord(ctx, home, "drill-bench")
	if err != nil {
		return nil, err
	}
	for _, n := range in {
		k, err := regions.ReplicaARN(arn, n)
		if err != nil {
			return nil, err
		}
		rec.Regions[n] = &envelope.RegionWrap{KeyARN: k, Wrapped: wrapped, WrappedAt: rec.CreatedAt}
	}
	return rec, nil
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
	for _, shards := range shardRuns {
		var wg sync.WaitGroup
		times := make([]time.Duration, shards)
		counts := make([]int64, shards)
		begin := time.Now()
		for i := range shards {
			wg.Add(1)
			go func() {
				defer wg.Done()
				args := []string{"--config", cfgPath, "verify", "--json", "--quiet", "--no-write", "--segments", "8", "--workers", "32"}
				if shards > 1 {
					args = append(args, "--shard", fmt.Sprintf("%d/%d", i+1, shards), "--report", filepath.Join(dir, fmt.Sprintf("s%d-%d", shards, i+1)))
				}
				out, d, _, _ := cliRun(b, bin, args...)
				var vr verifyJSON
				require.NoError(b, json.Unmarshal(out, &vr))
				times[i], counts[i] = d, vr.Records
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
		fmt.Printf("full verify, %d shard(s) side by side: %.1fs wall (%.0f records/s), speed-up %.2fx; load average %s\n",
			shards, wall.Seconds(), float64(n)/wall.Seconds(), one/wall.Seconds(), loadavg.String())
		b.ReportMetric(wall.Seconds(), fmt.Sprintf("verify-%dshards-s", shards))
	}
	if last := shardRuns[len(shardRuns)-1:]; len(last) == 1 && last[0] > 1 {
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
			out, d, rss, cpu := cliRun(b, bin, args...)
			var vr verifyJSON
			require.NoError(b, json.Unmarshal(out, &vr))
			require.Equal(b, int64(n), vr.OK)
			fmt.Printf("round %d, build %d (%s): %d records in %.1fs (%.0f records/s), CPU %.3f ms/record, peak RSS %.1f MiB; load average %s\n",
				round+1, i+1, bin, n, d.Seconds(), float64(n)/d.Seconds(), float64(cpu.Microseconds())/1000/float64(n), rss, loadavg.String())
		}
	}
}
