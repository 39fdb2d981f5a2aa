package recovery_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/localtest"
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
func (f *fixture) startDaemons(t *testing.T) {
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
	rep, err := recovery.Gameday(ctx, f.as(t, iam.RoleGameday), recovery.GamedayOptions{
		Lose: "us-east-1", Rate: 4, Before: 2 * time.Second, During: 4 * time.Second, Within: time.Minute,
		SealTimeout: 2 * time.Second, Control: envControl{f.env}, Regions: fastRegions,
		Log: func(s string) { t.Log(s) },
	})
	require.NoError(t, err)
	require.True(t, rep.Passed, "%+v", rep)
	require.Zero(t, rep.RPOEnvelopes)
	require.Positive(t, rep.SealedBefore)
	require.Positive(t, rep.SealedDuring)
	require.Equal(t, rep.SealedBefore, rep.SealedIn["us-east-1"], "before the loss the home region seals")
	require.Zero(t, rep.SealedIn["us-east-1"]-rep.SealedBefore, "during the loss nothing is sealed in the lost region")
	require.GreaterOrEqual(t, rep.RTOSeconds, 0.0)
	require.GreaterOrEqual(t, rep.CatchUpSeconds, 0.0)
	for _, row := range rep.Matrix {
		require.Equalf(t, row.Of, row.Opened, "region %s", row.Region)
	}
	var md, html bytes.Buffer
	require.NoError(t, rep.WriteMarkdown(&md))
	require.NoError(t, rep.WriteHTML(&html))
	require.Contains(t, md.String(), "losing us-east-1 — PASSED")
	require.Contains(t, html.String(), "PASSED")
	t.Logf("game day: sealed %d (%d during), RPO %d, RTO %.1fs, catch-up %.1fs", rep.Sealed, rep.SealedDuring, rep.RPOEnvelopes, rep.RTOSeconds, rep.CatchUpSeconds)
}
