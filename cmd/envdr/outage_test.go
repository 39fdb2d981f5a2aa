package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// runSplit runs the CLI in-process with stdout and stderr apart (JSON results parse from
// stdout alone); it returns them and the exit code.
func runSplit(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(context.Background())
	if err == nil {
		return out.String(), errb.String(), exitOK
	}
	err = withHelpHint(cmd, err)
	code = exitFailure // as run: an error without a code is a failure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	var line bytes.Buffer
	printError(&line, err)
	return out.String(), errb.String() + line.String(), code
}

// TestOutageDayClient is issue 22's acceptance test for the readers: with us-east-1 (the home
// region) lost, plain `envdr open f.envdr out` opens envelopes sealed in us-east-1 and in
// eu-west-1 and names the serving region, and status and verify work and say what they skipped.
func TestOutageDayClient(t *testing.T) {
	env := localtest.New(t)
	roles := newRoleConfigs(t, env, nil)
	cfgPath := roles.admin
	dir := t.TempDir()
	plain := bytes.Repeat([]byte("the outage-day client opens this. "), 3000)
	in := filepath.Join(dir, "in.txt")
	require.NoError(t, os.WriteFile(in, plain, 0o600))
	envdr := func(args ...string) (string, string, int) {
		return runSplit(t, append([]string{"--config", roles.path(args...)}, args...)...)
	}
	seal := func(out string, args ...string) sealResult {
		t.Helper()
		stdout, stderr, code := envdr(append(append([]string{"seal", "--output", "json", "--context", "app=outage"}, args...), in, out)...)
		require.Equal(t, exitOK, code, stderr)
		var res sealResult
		require.NoError(t, json.Unmarshal([]byte(stdout), &res), stdout)
		return res
	}

	// Sealed at home and replicated (a record with a wrap in every region), sealed at home and
	// never replicated (only the header's multi-Region wrap), and sealed in eu-west-1.
	home := seal(filepath.Join(dir, "home.envdr"), "--enqueue")
	require.Equal(t, "us-east-1", home.Region)
	require.NotEmpty(t, home.KeyARN)
	require.Positive(t, home.Bytes)
	require.Equal(t, int64(len(plain)), home.PlaintextBytes)
	require.NotEmpty(t, home.Queues, "seal --enqueue names the queues it used")
	require.Equal(t, "us-east-1", home.Queues[0].Region)
	lone := seal(filepath.Join(dir, "lone.envdr"))
	require.Empty(t, lone.Queues)
	eu := seal(filepath.Join(dir, "eu.envdr"), "--region", "eu-west-1", "--enqueue")
	require.Equal(t, "eu-west-1", eu.Region)
	replicateAll(t, env, cfgPath, home.ID, eu.ID)

	env.Down("us-east-1")

	for _, c := range []struct {
		name, file, region, source string
		skipped                    []string
	}{
		// The home envelope: us-east-1 is skipped; eu-west-1 opens its own wrap from its table.
		{"home-replicated", "home.envdr", "eu-west-1", "record", []string{"us-east-1"}},
		// Never replicated: eu-west-1 has no record, so the header's wrap through its replica key.
		{"home-unreplicated", "lone.envdr", "eu-west-1", "header", []string{"us-east-1"}},
		// Sealed in eu-west-1: its sealing region is tried first and serves at once.
		{"sealed-in-eu", "eu.envdr", "eu-west-1", "header", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, c.name+".out")
			stdout, stderr, code := envdr("open", "--region-timeout", "3s", filepath.Join(dir, c.file), out)
			require.Equal(t, exitOK, code, stderr)
			require.Empty(t, stdout)
			got, err := os.ReadFile(out)
			require.NoError(t, err)
			require.Equal(t, plain, got)
			t.Logf("stderr: %s", stderr)
			require.Contains(t, stderr, "opened through region "+c.region)
			for _, s := range c.skipped {
				require.Contains(t, stderr, "region "+s+" skipped: unreachable")
			}

			stdout, stderr, code = envdr("open", "--output", "json", filepath.Join(dir, c.file), out+".json")
			require.Equal(t, exitOK, code, stderr)
			var res openResult
			require.NoError(t, json.Unmarshal([]byte(stdout), &res), stdout)
			require.Equal(t, c.region, res.Region)
			require.Equal(t, c.source, res.Wrap.Source)
			require.Equal(t, c.region, res.Wrap.Region)
			require.Equal(t, int64(len(plain)), res.Bytes)
			var skipped []string
			for _, s := range res.Skipped {
				skipped = append(skipped, s.Region)
				require.NotEmpty(t, s.Reason)
			}
			require.Equal(t, c.skipped, skipped)
		})
	}

	// status reads the first replica that answers, and says which and what it skipped.
	stdout, stderr, code := envdr("status", "--quiet", "--output", "json")
	require.Equal(t, exitOK, code, stderr)
	var st statusReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &st), stdout)
	require.Equal(t, "eu-west-1", st.Region)
	require.Len(t, st.Skipped, 1)
	require.Equal(t, "us-east-1", st.Skipped[0].Region)
	require.Equal(t, 2, st.Records)
	require.Contains(t, stderr, "region us-east-1 skipped")
	require.Contains(t, stderr, "reading region eu-west-1's replica")

	// verify skips the lost region (not a failure), checks the rest, and passes.
	stdout, stderr, code = envdr("verify", "--quiet", "--no-write", "--output", "json")
	require.Equal(t, exitOK, code, stderr)
	var v struct {
		Passed     bool     `json:"passed"`
		ScanRegion string   `json:"scan_region"`
		Regions    []string `json:"regions"`
		Records    int      `json:"records"`
		Skipped    []struct {
			Region, Reason string
		} `json:"skipped"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &v), stdout)
	require.True(t, v.Passed)
	require.Equal(t, "eu-west-1", v.ScanRegion)
	require.Equal(t, []string{"eu-west-1", "ap-southeast-2"}, v.Regions)
	require.Equal(t, 2, v.Records)
	require.Len(t, v.Skipped, 1)
	require.Equal(t, "us-east-1", v.Skipped[0].Region)
	require.Contains(t, stderr, "region us-east-1 skipped")
	stdout, _, code = envdr("verify", "--quiet", "--no-write")
	require.Equal(t, exitOK, code)
	require.Contains(t, stdout, "region us-east-1 SKIPPED")

	// --strict counts the lost region: verify fails.
	_, stderr, code = envdr("verify", "--quiet", "--no-write", "--strict", "--region-timeout", "2s")
	require.Equal(t, exitFailure, code, stderr)
	require.Contains(t, stderr, "us-east-1")

	// doctor marks the lost region and still checks the others.
	stdout, _, code = envdr("doctor", "--output", "json", "--region-timeout", "3s")
	require.Equal(t, exitFindings, code)
	var doc struct {
		Lost   []string `json:"lost_regions"`
		Checks []struct{ Check, Region, Status, Detail string }
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &doc), stdout)
	require.Equal(t, []string{"us-east-1"}, doc.Lost)
	seen := map[string]bool{}
	for _, c := range doc.Checks {
		if c.Region == "us-east-1" && c.Check == "region-reachable" {
			require.Contains(t, c.Detail, "REGION LOST")
		}
		if c.Region == "eu-west-1" && c.Status == "pass" {
			seen[c.Check] = true
		}
	}
	require.True(t, seen["key-enabled"] && seen["table"], "eu-west-1 still checked: %v", seen)

	// With the home region back, open without --region is served at home again.
	env.Up("us-east-1")
	_, stderr, code = envdr("open", filepath.Join(dir, "home.envdr"), filepath.Join(dir, "back.out"))
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, stderr, "opened through region us-east-1 (the sealing region")
	require.NotContains(t, stderr, "skipped")
}

// startDaemons runs a replication daemon per region (envdr run --region R) until the test ends
// or the returned stop is called.
func startDaemons(t *testing.T, env *localtest.Env, cfg *config.Config) (stop func()) {
	t.Helper()
	ctx := context.Background()
	var daemons []*replicate.Daemon
	for _, r := range env.Regions {
		// As the daemon role: the keys carry the rendered key policies.
		d, err := replicate.NewDaemon(ctx, env.ConfigAs(cfg, iam.RoleDaemon), zap.NewNop(), replicate.DaemonOptions{WaitTime: time.Second, Region: r})
		require.NoError(t, err)
		require.NoError(t, d.Start(ctx))
		daemons = append(daemons, d)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		for _, d := range daemons {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			d.Stop(sctx)
			cancel()
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestGamedayOpensWithoutRegion: the game day, while the home region is lost, opens an envelope
// sealed before the loss and one sealed during it as plain `envdr open` does, and reports the
// region that served each.
func TestGamedayOpensWithoutRegion(t *testing.T) {
	// A game day seals and opens: it runs as its own role, envdr-gameday (docs/POLICY.md).
	env := localtest.New(t)
	cfgPath := env.ConfigPathAs(nil, iam.RoleGameday)
	cfg, err := config.Load(cfgPath)
	require.NoError(t, err)
	startDaemons(t, env, cfg)
	report := filepath.Join(t.TempDir(), "gd")
	stdout, stderr, code := runSplit(t, "--config", cfgPath, "gameday", "--lose", "us-east-1", "--before", "2s", "--during", "3s",
		"--rate", "4", "--within", "1m", "--region-timeout", "2s", "--output", "json", "--report", report)
	require.Equal(t, exitOK, code, stderr)
	var rep struct {
		Passed bool `json:"passed"`
		Opened []struct {
			ID       string   `json:"id"`
			SealedIn string   `json:"sealed_in"`
			Region   string   `json:"region"`
			Error    string   `json:"error"`
			Skipped  []string `json:"skipped"`
		} `json:"opened_without_region"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
	require.True(t, rep.Passed)
	require.Len(t, rep.Opened, 2)
	require.Equal(t, "us-east-1", rep.Opened[0].SealedIn, "sealed before the loss, at home")
	require.Equal(t, "eu-west-1", rep.Opened[0].Region)
	require.Equal(t, []string{"us-east-1"}, rep.Opened[0].Skipped)
	require.Equal(t, "eu-west-1", rep.Opened[1].SealedIn, "sealed during the loss: fell over to eu-west-1")
	require.Equal(t, "eu-west-1", rep.Opened[1].Region)
	require.Empty(t, rep.Opened[1].Skipped)
	require.Contains(t, stderr, "open without --region, us-east-1 lost: record "+rep.Opened[0].ID+" (sealed in us-east-1) opened through eu-west-1")
	requireGamedayReportVerifies(t, report+".json")
}

// requireGamedayReportVerifies: drill verify-report accepts a game day report (text and JSON
// output), and any edited byte fails it with exit 1; report merge refuses it.
func requireGamedayReportVerifies(t *testing.T, path string) {
	t.Helper()
	js, err := os.ReadFile(path)
	require.NoError(t, err)
	var rep struct {
		Kind   string `json:"kind"`
		SHA256 string `json:"sha256"`
		Sealed int    `json:"sealed"`
		Envdr  struct {
			Version string `json:"version"`
		} `json:"envdr"`
	}
	require.NoError(t, json.Unmarshal(js, &rep))
	require.Equal(t, "gameday", rep.Kind)
	require.Equal(t, buildVersion().Version, rep.Envdr.Version)
	stdout, stderr, code := runSplit(t, "drill", "verify-report", path)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, stdout, "digest OK (sha256 "+rep.SHA256+"): game day lose us-east-1 PASSED, "+fmt.Sprint(rep.Sealed)+" envelopes")
	require.Contains(t, stdout, "caller arn:aws:sts::111122223333:assumed-role/envdr-gameday/")
	stdout, stderr, code = runSplit(t, "drill", "verify-report", "--output", "json", path)
	require.Equal(t, exitOK, code, stderr)
	var res verifyReportResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &res), stdout)
	require.True(t, res.DigestOK)
	require.Equal(t, "gameday", res.Kind)
	require.Equal(t, "us-east-1", res.Lost)
	require.True(t, res.Passed)

	// One edited byte, anywhere: a figure, the structure, the digest itself.
	edited := filepath.Join(t.TempDir(), "edited.json")
	for _, at := range []int{bytes.Index(js, []byte(`"p99_99_seconds": `)) + 18, bytes.Index(js, []byte(`"lost"`)), len(js) - 8} {
		bad := bytes.Clone(js)
		bad[at] ^= 0x01
		require.NoError(t, os.WriteFile(edited, bad, 0o600))
		_, stderr, code := runSplit(t, "drill", "verify-report", edited)
		require.Equalf(t, exitFailure, code, "byte %d edited and still verified", at)
		require.Contains(t, stderr, "report digest mismatch")
	}
	_, stderr, code = runSplit(t, "report", "merge", "--out", filepath.Join(t.TempDir(), "m"), path)
	require.Equal(t, exitUsage, code, stderr)
	require.Contains(t, stderr, "game days are not sharded")
}

// replicateAll runs a daemon per region until each record holds a wrap in every region.
func replicateAll(t *testing.T, env *localtest.Env, cfgPath string, ids ...string) {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	require.NoError(t, err)
	ctx := context.Background()
	defer startDaemons(t, env, cfg)()
	topo, err := regions.New(ctx, cfg, regions.Options{})
	require.NoError(t, err)
	home, err := topo.HomeRegion()
	require.NoError(t, err)
	store := replicate.NewStore(cfg.Table, home.Name, home.DynamoDB(), cfg.RegionNames())
	require.Eventually(t, func() bool {
		for _, id := range ids {
			rec, err := store.Get(ctx, id)
			if err != nil {
				return false
			}
			for _, r := range env.Regions {
				if !rec.Regions[r].HasWrap() {
					return false
				}
			}
		}
		return true
	}, 90*time.Second, 250*time.Millisecond)
	env.Settle()
}

// TestOpenFallsOverSilentAnd5xx: open without --region skips a sealing region whose KMS answers
// only 5xx, and one that never answers, within --region-timeout, naming why.
func TestOpenFallsOverSilentAnd5xx(t *testing.T) {
	env := localtest.New(t)
	roles := newRoleConfigs(t, env, nil)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.txt")
	require.NoError(t, os.WriteFile(in, []byte("gray failures\n"), 0o600))
	sealed := filepath.Join(dir, "in.envdr")
	_, stderr, code := runSplit(t, "--config", roles.path("seal"), "seal", in, sealed)
	require.Equal(t, exitOK, code, stderr)

	for _, c := range []struct {
		name  string
		fault localaws.Fault
		why   string
	}{
		{"5xx", localaws.Fault{ErrorRate: 1}, "region us-east-1 skipped: (server error|no answer within)"},
		{"silent", localaws.Fault{Blackhole: true}, `region us-east-1 skipped: no answer within --region-timeout 1s`},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.NoError(t, env.Stack.SetFault("us-east-1", "kms", c.fault))
			defer func() { require.NoError(t, env.Stack.ClearFaults("us-east-1", "")) }()
			start := time.Now()
			stdout, stderr, code := runSplit(t, "--config", roles.path("open"), "open", "--region-timeout", "1s", "--output", "json", sealed, filepath.Join(dir, c.name+".out"))
			require.Equal(t, exitOK, code, stderr)
			require.Less(t, time.Since(start), 5*time.Second, "bounded by --region-timeout")
			require.Regexp(t, c.why, stderr)
			var res openResult
			require.NoError(t, json.Unmarshal([]byte(stdout), &res), stdout)
			require.Equal(t, "eu-west-1", res.Region)
			require.Len(t, res.Skipped, 1)
			require.Equal(t, "us-east-1", res.Skipped[0].Region)
		})
	}

	// Every region out: open fails, naming each region and why, and leaves no output.
	for _, r := range env.Regions {
		env.Down(r)
	}
	out := filepath.Join(dir, "none.out")
	_, stderr, code = runSplit(t, "--config", roles.path("open"), "open", "--region-timeout", "1s", sealed, out)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "no region could open it (tried [us-east-1 eu-west-1 ap-southeast-2])")
	require.NoFileExists(t, out)
}
