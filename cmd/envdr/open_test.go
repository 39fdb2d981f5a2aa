package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/localtest"
	"github.com/envdr/envdr/replicate"
)

// TestOpenThroughEachRegionIndependentKeys seals with --enqueue, replicates with the daemon, then
// opens through each region alone with the CLI; independent keys mean only the record's wraps
// can open in the other regions (there is no multi-Region key to fall back on).
func TestOpenThroughEachRegionIndependentKeys(t *testing.T) {
	env := localtest.New(t)
	cfg := *env.Config
	cfg.Regions = append([]config.Region(nil), env.Config.Regions...)
	for i := range cfg.Regions {
		cfg.Regions[i].Mode = config.ModeIndependent
		cfg.Regions[i].Key = env.Keys[cfg.Regions[i].Name].Independent
	}
	dir := t.TempDir()
	// Each command as its role: seal as the producer, open as the operator, run as the daemon.
	producer, operator := env.ConfigPathAs(&cfg, iam.RoleProducer), env.ConfigPathAs(&cfg, iam.RoleOperator)
	plain := bytes.Repeat([]byte("independent keys, one data key, three regions. "), 5000)
	in := filepath.Join(dir, "in.bin")
	require.NoError(t, os.WriteFile(in, plain, 0o600))
	sealed := filepath.Join(dir, "in.envdr")

	envdr := func(args ...string) int { return run(append([]string{"--config", operator}, args...)) }
	require.Equal(t, 0, run([]string{"--config", producer, "seal", "--context", "app=indep", "--enqueue", in, sealed}))

	// Before replication, another region cannot open it: no wrap there, and no replica key.
	out := filepath.Join(dir, "early.bin")
	require.Equal(t, exitFailure, envdr("open", "--region", "eu-west-1", sealed, out))
	require.NoFileExists(t, out)

	c, err := config.Load(env.ConfigPathAs(&cfg, iam.RoleDaemon))
	require.NoError(t, err)
	d, err := replicate.NewDaemon(context.Background(), c, zap.NewNop(), replicate.DaemonOptions{WaitTime: time.Second})
	require.NoError(t, err)
	require.NoError(t, d.Start(context.Background()))
	require.Eventually(t, func() bool {
		n, err := d.QueueDepth(context.Background())
		return err == nil && n == 0
	}, 60*time.Second, 200*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	d.Stop(ctx)
	cancel()

	for _, r := range env.Regions {
		out := filepath.Join(dir, "out-"+r)
		require.Equal(t, 0, envdr("open", "--region", r, "--context", "app=indep", sealed, out), "region %s", r)
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		require.Equal(t, plain, got, "region %s", r)
	}

	// Lose eu-west-1: the others still open alone; eu-west-1 fails, naming itself, with no output.
	env.Down("eu-west-1")
	for _, r := range []string{"us-east-1", "ap-southeast-2"} {
		out := filepath.Join(dir, "down-"+r)
		require.Equal(t, 0, envdr("open", "--region", r, sealed, out), "region %s", r)
	}
	out = filepath.Join(dir, "down-eu")
	require.Equal(t, exitFailure, envdr("open", "--region", "eu-west-1", sealed, out))
	require.NoFileExists(t, out)
}
