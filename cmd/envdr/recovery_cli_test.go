package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// runCLI runs the CLI in-process; it returns stdout+stderr, the exit code, and the error line.
func runCLI(t *testing.T, args ...string) (string, int, string) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return out.String(), exitOK, ""
	}
	var ee *exitError
	require.True(t, errors.As(err, &ee), "untyped error %v", err)
	return out.String(), ee.code, err.Error()
}

// seedCLI stores n records with real KMS wraps in the given regions.
func seedCLI(t *testing.T, env *localtest.Env, n int, in ...string) []string {
	t.Helper()
	ctx := context.Background()
	topo, err := regions.New(ctx, env.Config, regions.Options{})
	require.NoError(t, err)
	home, err := topo.HomeRegion()
	require.NoError(t, err)
	store := replicate.NewStore(env.Config.Table, home.Name, home.DynamoDB(), env.Config.RegionNames())
	var ids []string
	for i := 0; i < n; i++ {
		id, err := envelope.NewID()
		require.NoError(t, err)
		ec, err := envelope.NewContext(id, map[string]string{"app": "cli"})
		require.NoError(t, err)
		dek, wrapped, arn, err := home.GenerateDataKeyRaw(ctx, ec.Map())
		require.NoError(t, err)
		com, err := envelope.Commitment(dek)
		envelope.Wipe(dek)
		require.NoError(t, err)
		now := time.Now().UTC()
		rec := &envelope.Record{ID: id, Context: ec, Commitment: com, SourceRegion: home.Name, SourceKeyARN: arn, CreatedAt: now,
			Regions: map[string]*envelope.RegionWrap{}}
		for _, name := range in {
			if name == home.Name {
				rec.Regions[name] = &envelope.RegionWrap{KeyARN: arn, Wrapped: wrapped, WrappedAt: now}
				continue
			}
			r, err := topo.Region(name)
			require.NoError(t, err)
			src, err := regions.ReplicaARN(arn, name)
			require.NoError(t, err)
			w, k, err := r.ReEncrypt(ctx, wrapped, src, "", ec.Map())
			require.NoError(t, err)
			rec.Regions[name] = &envelope.RegionWrap{KeyARN: k, Wrapped: w, WrappedAt: now}
		}
		_, err = store.Update(ctx, id, func(*envelope.Record) (*envelope.Record, error) { return rec.Clone(), nil })
		require.NoError(t, err)
		ids = append(ids, id)
	}
	env.Settle() // every region's replica holds the records
	return ids
}

func TestRecoveryCommands(t *testing.T) {
	env := localtest.New(t)
	cfg := env.ConfigPath
	seedCLI(t, env, 6, env.Regions...)
	homeOnly := seedCLI(t, env, 2, "us-east-1")

	out, code, msg := runCLI(t, "--config", cfg, "verify", "--quiet")
	require.Equal(t, exitFindings, code, out)
	require.Contains(t, out, "verify FAILED: 8 records, 6 ok, 2 failed")
	require.Contains(t, msg, "record "+sortedFirst(homeOnly))

	out, code, _ = runCLI(t, "--config", cfg, "verify", "--quiet", "--json", "--region", "us-east-1")
	require.Equal(t, exitOK, code, out)
	var v struct {
		Records int64 `json:"records"`
		OK      int64 `json:"ok"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	require.Equal(t, int64(8), v.OK)

	env.Down("eu-west-1")
	dir := t.TempDir()
	out, code, _ = runCLI(t, "--config", cfg, "drill", "--lose", "eu-west-1", "--quiet", "--report", filepath.Join(dir, "eu"))
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "drill lose eu-west-1 PASSED: 8 records, 8 recoverable")
	require.Contains(t, out, "not yet replicated: record")
	for _, ext := range []string{".md", ".html", ".json"} {
		_, err := os.Stat(filepath.Join(dir, "eu"+ext))
		require.NoError(t, err, ext)
	}
	// The report is evidence: its digest verifies, and one edited byte fails verify-report.
	report := filepath.Join(dir, "eu.json")
	out, code, _ = runCLI(t, "drill", "verify-report", report)
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "digest OK")
	require.Contains(t, out, "drill lose eu-west-1 PASSED")
	require.Contains(t, out, "caller arn:aws:sts::111122223333:assumed-role/envdr-admin/envdr-local")
	js, err := os.ReadFile(report)
	require.NoError(t, err)
	edited := bytes.Replace(js, []byte(`"recoverable": 8,`), []byte(`"recoverable": 9,`), 1)
	require.NotEqual(t, js, edited)
	require.NoError(t, os.WriteFile(report, edited, 0o644))
	_, code, msg = runCLI(t, "drill", "verify-report", report)
	require.Equal(t, exitFailure, code)
	require.Contains(t, msg, "drill report digest mismatch")
	// Thresholds: an RPO limit below the age of the records not yet replicated fails the drill.
	out, code, msg = runCLI(t, "--config", cfg, "drill", "--lose", "eu-west-1", "--quiet", "--max-rpo", "1ns")
	require.Equal(t, exitFindings, code, out)
	require.Contains(t, out, "check rpo FAILED")
	require.Contains(t, msg, "failed checks: rpo")
	_, code, _ = runCLI(t, "--config", cfg, "drill", "--lose", "eu-west-1", "--min-recoverable", "101")
	require.Equal(t, exitUsage, code)
	env.Up("eu-west-1")

	out, code, msg = runCLI(t, "--config", cfg, "drill", "--lose", "us-east-1", "--quiet")
	require.Equal(t, exitFindings, code, out)
	require.Contains(t, msg, "2 of 8 records unrecoverable")
	require.Contains(t, msg, sortedFirst(homeOnly))

	out, code, _ = runCLI(t, "--config", cfg, "rewrap", "--region", "eu-west-1", "--dry-run", "--quiet")
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "would change 2, unchanged 6")
	out, code, _ = runCLI(t, "--config", cfg, "rewrap", "--region", "eu-west-1", "--quiet", "--checkpoint", filepath.Join(dir, "cp.json"))
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "changed 2, unchanged 6, failed 0")

	// The stand-in's default key policy grants kms:* without a context condition.
	out, code, msg = runCLI(t, "--config", cfg, "doctor")
	require.Equal(t, exitFindings, code, out)
	require.Regexp(t, `(?m)^FAIL +key-policy `, out)
	require.Contains(t, out, "fix: ")
	require.Contains(t, msg, "key-policy in us-east-1")

	_, code, _ = runCLI(t, "--config", cfg, "drill")
	require.Equal(t, exitUsage, code)
	_, code, _ = runCLI(t, "--config", cfg, "verify", "--region", "mars-1")
	require.Equal(t, exitUsage, code)
}

func sortedFirst(ids []string) string {
	first := ids[0]
	for _, id := range ids {
		if id < first {
			first = id
		}
	}
	return first
}
