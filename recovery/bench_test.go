package recovery_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// cliRun runs the envdr binary (ENVDR_BIN) and returns stdout, wall time and peak RSS in MiB.
// The peak is the child's VmHWM, polled from /proc: the rusage of a child started by os/exec
// also counts this (much bigger) test process, whose address space the child shares until exec.
func cliRun(b testing.TB, bin string, args ...string) ([]byte, time.Duration, float64) {
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
	return out.Bytes(), d, float64(hwm.Load()) / 1024
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

// BenchmarkDrillScale is make drill-bench: it seeds ENVDR_BENCH_RECORDS records (default
// 10,000), runs `envdr drill` and `envdr verify` as separate processes and reports their rate
// and peak RSS, then grows the table tenfold and runs them again: peak RSS must stay flat.
// kms_rate is raised so the figures are envdr's own, not the configured quota share.
func BenchmarkDrillScale(b *testing.B) {
	bin := os.Getenv("ENVDR_BIN")
	if bin == "" {
		b.Fatal("set ENVDR_BIN to a built envdr binary (make drill-bench does)")
	}
	n := envInt("ENVDR_BENCH_RECORDS", 10000)
	growth := envInt("ENVDR_BENCH_GROWTH", 10)
	f := setup(b)
	for i := range f.cfg.Regions {
		f.cfg.Regions[i].KMSRate = 50000
	}
	cfgPath := filepath.Join(b.TempDir(), "envdr.yaml")
	require.NoError(b, localaws.WriteConfig(cfgPath, f.cfg))

	type row struct {
		records              int
		op                   string
		seconds, rate, rssMB float64
	}
	var rows []row
	fmt.Printf("\n%-9s  %-40s  %9s  %11s  %12s\n", "records", "operation", "seconds", "records/s", "peak RSS MiB")
	emit := func(r row) {
		rows = append(rows, r)
		fmt.Printf("%-9d  %-40s  %9.2f  %11.0f  %12.1f\n", r.records, r.op, r.seconds, r.rate, r.rssMB)
	}
	measure := func(records int) {
		out, d, rss := cliRun(b, bin, "--config", cfgPath, "drill", "--lose", "eu-west-1", "--json", "--quiet", "--segments", "8", "--workers", "32")
		var dr struct {
			Records     int64 `json:"records"`
			Recoverable int64 `json:"recoverable"`
		}
		require.NoError(b, json.Unmarshal(out, &dr))
		require.Equal(b, int64(records), dr.Records)
		require.Equal(b, dr.Records, dr.Recoverable)
		emit(row{records, "drill --lose eu-west-1", d.Seconds(), float64(records) / d.Seconds(), rss})

		out, d, rss = cliRun(b, bin, "--config", cfgPath, "verify", "--json", "--quiet", "--segments", "8", "--workers", "32")
		var vr struct {
			Records int64 `json:"records"`
			OK      int64 `json:"ok"`
		}
		require.NoError(b, json.Unmarshal(out, &vr))
		require.Equal(b, int64(records), vr.OK)
		emit(row{records, "verify (3 regions, writes verified_at)", d.Seconds(), float64(records) / d.Seconds(), rss})
	}

	start := time.Now()
	seedFast(b, f, n)
	fmt.Printf("seeded %d records in %s\n", n, time.Since(start).Round(time.Millisecond))
	b.ResetTimer()
	measure(n)
	b.StopTimer()
	start = time.Now()
	seedFast(b, f, n*(growth-1))
	fmt.Printf("seeded %d more records in %s\n", n*(growth-1), time.Since(start).Round(time.Millisecond))
	measure(n * growth)

	b.ReportMetric(rows[2].rate, "drill-records/s@max")
	b.ReportMetric(rows[3].rate, "verify-records/s@max")
	b.ReportMetric(rows[0].rssMB, "drill-MiB")
	b.ReportMetric(rows[2].rssMB, "drill-grown-MiB")
	b.ReportMetric(rows[1].rssMB, "verify-MiB")
	b.ReportMetric(rows[3].rssMB, "verify-grown-MiB")
}

// seedFast inserts n fully replicated records with 64 writers.
func seedFast(b testing.TB, f *fixture, n int) {
	const batch = 5000
	for done := 0; done < n; done += batch {
		k := min(batch, n-done)
		f.seedWith(b, k, 64, f.env.Regions...)
	}
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
