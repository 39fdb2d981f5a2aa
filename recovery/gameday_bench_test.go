package recovery_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/recovery"
)

// cpuSeconds is this process's user+system CPU time so far (the stand-in's KMS and the daemons
// run in it; DynamoDB Local and fauxqs do not).
func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkGamedayScale is `make gameday-bench`: a game day losing the home region with
// ENVDR_GAMEDAY_N envelopes (default 10,000) sealed over ENVDR_GAMEDAY_BEFORE + _DURING seconds
// (default 30 + 60), a daemon per region, ENVDR_GAMEDAY_LAG ms of global-table lag (default
// 1000). It prints the per-envelope protection percentiles and writes the report to
// ENVDR_GAMEDAY_REPORT (default .bench/gameday). The figures are in docs/DRILLS.md.
func BenchmarkGamedayScale(b *testing.B) {
	n := envInt("ENVDR_GAMEDAY_N", 10000)
	before := time.Duration(envInt("ENVDR_GAMEDAY_BEFORE", 30)) * time.Second
	during := time.Duration(envInt("ENVDR_GAMEDAY_DURING", 60)) * time.Second
	lag := time.Duration(envInt("ENVDR_GAMEDAY_LAG", 1000)) * time.Millisecond
	out := os.Getenv("ENVDR_GAMEDAY_REPORT")
	if out == "" {
		out = filepath.Join("..", ".bench", "gameday")
	}
	for range b.N {
		f := setup(b)
		f.cfg.Worker.Concurrency = 64 // the daemon's default (the fixture's 8 suits small tests)
		f.env.SetLag(lag)
		f.startDaemons(b)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
		cpu0, wall0 := cpuSeconds(), time.Now()
		rep, err := recovery.Gameday(ctx, f.as(b, iam.RoleGameday), recovery.GamedayOptions{
			Lose: "us-east-1", Envelopes: n, Before: before, During: during, Within: 30 * time.Minute,
			// SealTimeout: the CLI's default; on a loaded machine the stand-in's KMS can take over 2 s.
			SealTimeout: 5 * time.Second, Control: envControl{f.env}, Regions: fastRegions,
			Envdr: recovery.Build{Version: "bench", Commit: "BenchmarkGamedayScale"},
			Log:   func(s string) { fmt.Fprintln(os.Stderr, "gameday:", s) },
		})
		cancel()
		require.NoError(b, err)
		cpu, wall := cpuSeconds()-cpu0, time.Since(wall0)
		paths, err := rep.WriteFiles(out)
		require.NoError(b, err)
		pr, ps := rep.Protection.RequiredRegions, rep.Protection.SurvivingRegions
		fmt.Printf("game day losing us-east-1, %s of lag: %s; sealed %d (%d before, %d during) at %.1f/s (asked %.1f/s); RPO %d, RTO %.2f s, catch-up %.1f s\n",
			lag, map[bool]string{true: "PASSED", false: "FAILED"}[rep.Passed], rep.Sealed, rep.SealedBefore, rep.SealedDuring, rep.RateAchieved, rep.RateAsked,
			rep.RPOEnvelopes, rep.RTOSeconds, rep.CatchUpSeconds)
		fmt.Printf("%-34s %9s %9s %9s %9s %9s %9s %6s\n", "protection, seal to open alone in", "envelopes", "p50", "p99", "p99.9", "p99.99", "max", "never")
		for _, row := range []struct {
			name string
			p    recovery.Percentiles
		}{{"every required region", pr}, {"every surviving region", ps}} {
			fmt.Printf("%-34s %9d %8.3fs %8.3fs %8.3fs %8.3fs %8.3fs %6d\n", row.name, row.p.Envelopes, row.p.P50, row.p.P99, row.p.P999, row.p.P9999, row.p.Max, row.p.Never)
		}
		fmt.Printf("polling resolution: median %.3f s, max %.3f s; wall %s, CPU of this process (daemons, KMS stand-in, game day) %.0f s (%.1f ms per envelope)\n",
			rep.Protection.ResolutionMedianSeconds, rep.Protection.ResolutionMaxSeconds, wall.Round(time.Second), cpu, 1000*cpu/float64(max(rep.Sealed, 1)))
		fmt.Printf("report: %v\n", paths)
		require.True(b, rep.Passed, "the game day failed: RPO %d, %d seal and %d enqueue failures, %d not caught up", rep.RPOEnvelopes, rep.SealFailures, rep.EnqueueFails, rep.NotCaughtUp)
	}
}

// BenchmarkReportPages is `make report-screenshots`' first half: a short game day losing the
// home region and a drill after it, on the stand-in, written as pages into
// ENVDR_REPORT_PAGES (default .screenshots) for Chromium to render.
func BenchmarkReportPages(b *testing.B) {
	out := os.Getenv("ENVDR_REPORT_PAGES")
	if out == "" {
		out = filepath.Join("..", ".screenshots")
	}
	for range b.N {
		f := setup(b)
		f.cfg.Worker.Concurrency = 64
		f.env.SetLag(time.Second)
		f.startDaemons(b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		build := recovery.Build{Version: "pages", Commit: "BenchmarkReportPages"}
		gd, err := recovery.Gameday(ctx, f.as(b, iam.RoleGameday), recovery.GamedayOptions{
			Lose: "us-east-1", Envelopes: envInt("ENVDR_REPORT_PAGES_N", 300), Before: 10 * time.Second, During: 20 * time.Second,
			Within: 5 * time.Minute, SealTimeout: 2 * time.Second, Control: envControl{f.env}, Regions: fastRegions, Envdr: build,
		})
		require.NoError(b, err)
		paths, err := gd.WriteFiles(filepath.Join(out, "gameday"))
		require.NoError(b, err)
		dr, err := recovery.Drill(ctx, f.as(b, iam.RoleOperator), recovery.DrillOptions{Lose: "eu-west-1", AllSurviving: true, Regions: fastRegions, Envdr: build})
		require.NoError(b, err)
		more, err := dr.WriteFiles(filepath.Join(out, "drill"))
		require.NoError(b, err)
		fmt.Printf("pages: %v %v\n", paths, more)
	}
}
