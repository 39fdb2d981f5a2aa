package recovery_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
	"github.com/envdr/envdr/replicate/replicatetest"
)

// envControl loses and restores regions of a test's stand-in.
type envControl struct{ env *localtest.Env }

func (c envControl) Down(_ context.Context, r string) error { return c.env.Stack.Down(r) }
func (c envControl) Up(_ context.Context, r string) error   { return c.env.Stack.Up(r) }

// startDaemons runs `envdr run --region R` in process for every region.
func (f *fixture) startDaemons(t testing.TB) {
	t.Helper()
	for _, r := range f.env.Regions {
		replicatetest.StartDaemon(t, context.Background(), f.as(t, iam.RoleDaemon), zap.NewNop(), replicate.DaemonOptions{
			WaitTime: time.Second, RetryBase: time.Second, Region: r,
			Regions: regions.Options{MaxCooldown: time.Second, BaseBackoff: 5 * time.Millisecond},
		})
	}
}

// A game day losing the home region with a daemon in every region and 1 s of replication lag:
// sealing falls over, nothing sealed is lost (RPO 0), new envelopes are protected again within
// seconds (RTO), and the home region catches up after it returns.
func TestGamedayLoseHomeRegion(t *testing.T) {
	t.Parallel()
	// A game day seals and opens: it runs as its own role, envdr-gameday (docs/POLICY.md).
	f := setup(t)
	f.env.SetLag(time.Second)
	f.startDaemons(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	build := recovery.Build{Version: "v9.9.9-gameday", Commit: "c0ffee"}
	o := recovery.GamedayOptions{
		Lose: "us-east-1", Envelopes: 24, Before: 2 * time.Second, During: 4 * time.Second, Within: time.Minute,
		SealTimeout: 2 * time.Second, Control: envControl{f.env}, Regions: fastRegions, Envdr: build,
		Log: func(s string) { t.Log(s) },
	}
	rep, err := recovery.Gameday(ctx, f.as(t, iam.RoleGameday), o)
	require.NoError(t, err)
	require.True(t, rep.Passed, "%+v", rep)
	require.Zero(t, rep.RPOEnvelopes)
	require.Equal(t, 24, rep.Sealed, "--envelopes: exactly that many")
	require.Equal(t, 8, rep.SealedBefore, "shared by the phases' lengths")
	require.Equal(t, 16, rep.SealedDuring)
	require.Equal(t, rep.SealedBefore, rep.SealedIn["us-east-1"], "before the loss the home region seals")
	require.Zero(t, rep.SealedIn["us-east-1"]-rep.SealedBefore, "during the loss nothing is sealed in the lost region")
	require.GreaterOrEqual(t, rep.RTOSeconds, 0.0)
	require.GreaterOrEqual(t, rep.CatchUpSeconds, 0.0)
	for _, row := range rep.Matrix {
		require.Equalf(t, row.Of, row.Opened, "region %s", row.Region)
	}

	// Audit evidence, as in a drill report: schema, build, host, caller (the stand-in's STS).
	require.Equal(t, recovery.GamedayReportKind, rep.Kind)
	require.Equal(t, recovery.ReportSchemaVersion, rep.SchemaVersion)
	require.Equal(t, build, rep.Envdr)
	host, _ := os.Hostname()
	require.Equal(t, host, rep.Host)
	require.Empty(t, rep.Caller.Error)
	require.Equal(t, "arn:aws:sts::111122223333:assumed-role/envdr-gameday/envdr-local", rep.Caller.ARN)
	require.True(t, rep.Controlled)

	// Every envelope was protected in the end, in the surviving regions and in all required
	// ones; an envelope sealed during the loss waited for the return, so the slowest took at
	// least until then, and the percentiles are ordered.
	pr, ps := rep.Protection.RequiredRegions, rep.Protection.SurvivingRegions
	require.Equal(t, rep.Sealed, pr.Envelopes)
	require.Equal(t, rep.Sealed, ps.Envelopes)
	require.Zero(t, pr.Never)
	for _, p := range []recovery.Percentiles{pr, ps} {
		require.Positive(t, p.P50)
		require.LessOrEqual(t, p.P50, p.P99)
		require.LessOrEqual(t, p.P99, p.P999)
		require.LessOrEqual(t, p.P999, p.P9999)
		require.LessOrEqual(t, p.P9999, p.Max)
	}
	require.GreaterOrEqual(t, pr.Max, ps.Max)
	require.InDelta(t, rep.MaxProtectSeconds, ps.Max, ps.Max, "the longest wait during the loss is a surviving-region time")
	require.Positive(t, rep.Protection.ResolutionMaxSeconds)
	require.LessOrEqual(t, rep.Protection.ResolutionMedianSeconds, rep.Protection.ResolutionMaxSeconds)
	hist := 0
	for _, b := range rep.Protection.Histogram {
		hist += b.Required
	}
	require.Equal(t, rep.Sealed, hist, "the histogram counts every envelope once")
	sealed := 0
	for _, b := range rep.Protection.BySealTime {
		sealed += b.Sealed
	}
	require.Equal(t, rep.Sealed, sealed)
	// The catch-up curve: the backlog grows during the loss and drains to zero.
	require.NotEmpty(t, rep.Timeline)
	last := rep.Timeline[len(rep.Timeline)-1]
	require.Equal(t, rep.Sealed, last.Sealed)
	require.Zero(t, last.Unprotected)
	peak := 0
	for _, s := range rep.Timeline {
		peak = max(peak, s.Unprotected)
	}
	require.GreaterOrEqual(t, peak, rep.SealedDuring, "every envelope sealed during the loss waited for the return")

	// The files: the JSON carries its digest and verifies; the Markdown and HTML show the same
	// facts; the page is well-formed, self-contained and has its four charts.
	paths, err := rep.WriteFiles(filepath.Join(t.TempDir(), "gameday"))
	require.NoError(t, err)
	js, err := os.ReadFile(paths[2])
	require.NoError(t, err)
	got, err := recovery.VerifyGamedayReport(js)
	require.NoError(t, err)
	require.Equal(t, rep.SHA256, got.SHA256)
	require.Equal(t, rep.Protection.RequiredRegions, got.Protection.RequiredRegions)
	require.Equal(t, recovery.GamedayReportKind, recovery.ReportKind(js))
	for _, p := range paths[:2] {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		for _, fact := range []string{rep.SHA256, rep.Caller.ARN, build.Version, host, "losing us-east-1", "PASSED", fmt.Sprintf("%.3f s", pr.P9999)} {
			require.Contains(t, strings.ReplaceAll(string(b), "lose us-east-1", "losing us-east-1"), fact, p)
		}
	}
	page, err := os.ReadFile(paths[1])
	require.NoError(t, err)
	require.Equal(t, 4, requireReportPage(t, string(page)))
	t.Logf("game day: sealed %d (%d during), RPO %d, RTO %.1fs, catch-up %.1fs; protection p50/p99/p99.99/max %.2f/%.2f/%.2f/%.2f s (surviving regions %.2f/%.2f/%.2f/%.2f s)",
		rep.Sealed, rep.SealedDuring, rep.RPOEnvelopes, rep.RTOSeconds, rep.CatchUpSeconds, pr.P50, pr.P99, pr.P9999, pr.Max, ps.P50, ps.P99, ps.P9999, ps.Max)
}

// TestGamedayObjects: with --objects the envelopes sealed during the loss go to the sealing
// region's bucket with no enqueue, and the S3 event source protects them from the notifications
// alone: the game day passes with RPO 0.
func TestGamedayObjects(t *testing.T) {
	t.Parallel()
	f := setupWith(t, localtest.Options{S3: true})
	f.env.SetLag(time.Second)
	f.startDaemons(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	o := recovery.GamedayOptions{
		Lose: "us-east-1", Envelopes: 12, Before: 2 * time.Second, During: 4 * time.Second, Within: time.Minute,
		SealTimeout: 2 * time.Second, Control: envControl{f.env}, Regions: fastRegions, Objects: true,
		Log: func(s string) { t.Log(s) },
	}
	rep, err := recovery.Gameday(ctx, f.as(t, iam.RoleGameday), o)
	require.NoError(t, err)
	require.True(t, rep.Passed, "%+v", rep)
	require.Zero(t, rep.RPOEnvelopes)
	require.Positive(t, rep.SealedDuring)
	require.Equal(t, rep.SealedDuring, rep.ObjectsDuring, "every envelope sealed during the loss went to a bucket, none enqueued")
	var md strings.Builder
	require.NoError(t, rep.WriteMarkdown(&md))
	require.Contains(t, md.String(), fmt.Sprintf("protected by the S3 event source alone; counted in the RPO above) | %d |", rep.ObjectsDuring))
	var page strings.Builder
	require.NoError(t, rep.WriteHTML(&page))
	require.Contains(t, page.String(), fmt.Sprintf(`<div class="k">Put in buckets during the loss</div><div class="v">%d</div>`, rep.ObjectsDuring))
	require.Zero(t, rep.EnqueueFails)
	for _, row := range rep.Matrix {
		require.Equalf(t, row.Of, row.Opened, "region %s", row.Region)
	}
}
