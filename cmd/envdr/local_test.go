package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws"
	"github.com/envdr/envdr/internal/localaws/localtest"
)

// runLocal runs the CLI in-process and returns exit code and stdout.
func runLocal(t *testing.T, args ...string) (int, string) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK, out.String()
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, out.String() + err.Error()
	}
	return exitFailure, out.String() + err.Error()
}

// The control commands drive a stand-in's admin endpoint, found through --admin or the
// config's local.admin.
func TestLocalControlCommands(t *testing.T) {
	t.Setenv("ENVDR_LOCAL_ADMIN", "") // the caller's stand-in must not be the one driven here
	env := localtest.New(t)
	path := env.ConfigPath // its local.admin is the Env's admin endpoint

	code, out := runLocal(t, "--config", path, "local", "down", "eu-west-1")
	require.Equal(t, exitOK, code, out)
	require.False(t, env.Stack.IsUp("eu-west-1"))

	code, out = runLocal(t, "--config", path, "local", "status")
	require.Equal(t, exitOK, code, out)
	require.Regexp(t, `eu-west-1\s+down`, out)
	require.Regexp(t, `us-east-1\s+up`, out)

	// Replication lag: every pair, or one direction; bad durations are usage errors.
	code, out = runLocal(t, "--config", path, "local", "lag", "2s")
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "every pair of regions: 2s")
	code, out = runLocal(t, "--config", path, "local", "lag", "--from", "us-east-1", "--to", "ap-southeast-2", "750ms")
	require.Equal(t, exitOK, code, out)
	code, out = runLocal(t, "--config", path, "local", "lag", "soon")
	require.Equal(t, exitUsage, code, out)
	code, out = runLocal(t, "--config", path, "local", "lag", "--from", "mars-north-1", "1s")
	require.Equal(t, exitFailure, code, out)
	require.Contains(t, out, "mars-north-1")
	code, out = runLocal(t, "--config", path, "local", "status")
	require.Equal(t, exitOK, code, out)
	require.Regexp(t, `us-east-1 -> ap-southeast-2\s+750ms`, out)
	require.Regexp(t, `us-east-1 -> eu-west-1\s+2s`, out)
	code, out = runLocal(t, "--config", path, "local", "status", "--json")
	require.Equal(t, exitOK, code, out)
	var st struct {
		Regions     map[string]localaws.RegionStatus `json:"regions"`
		Replication []localaws.PairStats             `json:"replication"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.False(t, st.Regions["eu-west-1"].Up)
	require.Len(t, st.Replication, 6)

	code, out = runLocal(t, "local", "up", "eu-west-1", "--admin", env.Admin)
	require.Equal(t, exitOK, code, out)
	require.True(t, env.Stack.IsUp("eu-west-1"))

	code, out = runLocal(t, "--config", path, "local", "ready")
	require.Equal(t, exitOK, code, out)
	code, out = runLocal(t, "--config", path, "local", "ready", "--output", "json")
	require.Equal(t, exitOK, code, out)
	require.JSONEq(t, `{"ready": true}`, out)

	code, out = runLocal(t, "--config", path, "local", "throttle", "eu-west-1", "fast")
	require.Equal(t, exitUsage, code, out)
	code, out = runLocal(t, "--config", path, "local", "throttle", "eu-west-1", "50")
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "50 requests/s")

	env.ResetCounters()
	env.KMS.SetRateLimit("eu-west-1", 0)
	code, out = runLocal(t, "--config", path, "local", "counters", "--json")
	require.Equal(t, exitOK, code, out)
	var counters map[string]map[string]int64
	require.NoError(t, json.Unmarshal([]byte(out), &counters), out)

	code, out = runLocal(t, "--config", path, "local", "down", "mars-north-1")
	require.Equal(t, exitFailure, code, out)
	require.Contains(t, out, "mars-north-1")

	// A config without a local section is not a stand-in config: usage error naming it.
	plain := *env.Config
	plain.Local = nil
	plainPath := filepath.Join(t.TempDir(), "aws.yaml")
	require.NoError(t, localaws.WriteConfig(plainPath, &plain))
	code, out = runLocal(t, "--config", plainPath, "local", "status")
	require.Equal(t, exitUsage, code, out)
	require.True(t, strings.Contains(out, "local.admin"), out)
}

func TestLocalServeRejectsBadBasePort(t *testing.T) {
	code, out := runLocal(t, "local", "serve", "--base-port", "80", "--dir", t.TempDir())
	require.Equal(t, exitUsage, code, out)
	require.Contains(t, out, "--base-port")
}
