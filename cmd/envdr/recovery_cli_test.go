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

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
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
	// Sealed as the producer, wrapped elsewhere as the daemon (the keys carry the rendered key
	// policies, which let the admin manage keys but not use them).
	topo, err := regions.New(ctx, env.ConfigAs(nil, iam.RoleDaemon), regions.Options{})
	require.NoError(t, err)
	producer, err := regions.New(ctx, env.ConfigAs(nil, iam.RoleProducer), regions.Options{})
	require.NoError(t, err)
	home, err := producer.HomeRegion()
	require.NoError(t, err)
	store := replicate.NewStore(env.Config.Table, home.Name, localaws.NewDynamoDB(env.AWSConfig(home.Name)), env.Config.RegionNames())
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
	// verify (recording) runs under the rewrap role, which may write records (docs/POLICY.md);
	// drill under the operator.
	cfg, operator := env.ConfigPathAs(nil, iam.RoleRewrap), env.ConfigPathAs(nil, iam.RoleOperator)
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
	out, code, _ = runCLI(t, "--config", operator, "drill", "--lose", "eu-west-1", "--quiet", "--report", filepath.Join(dir, "eu"))
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
	require.Contains(t, out, "caller arn:aws:sts::111122223333:assumed-role/envdr-operator/envdr-local")
	js, err := os.ReadFile(report)
	require.NoError(t, err)
	edited := bytes.Replace(js, []byte(`"recoverable": 8,`), []byte(`"recoverable": 9,`), 1)
	require.NotEqual(t, js, edited)
	require.NoError(t, os.WriteFile(report, edited, 0o644))
	_, code, msg = runCLI(t, "drill", "verify-report", report)
	require.Equal(t, exitFailure, code)
	require.Contains(t, msg, "report digest mismatch")
	// Thresholds: an RPO limit below the age of the records not yet replicated fails the drill.
	out, code, msg = runCLI(t, "--config", operator, "drill", "--lose", "eu-west-1", "--quiet", "--max-rpo", "1ns")
	require.Equal(t, exitFindings, code, out)
	require.Contains(t, out, "check rpo FAILED")
	require.Contains(t, msg, "failed checks: rpo")
	_, code, _ = runCLI(t, "--config", operator, "drill", "--lose", "eu-west-1", "--min-recoverable", "101")
	require.Equal(t, exitUsage, code)
	env.Up("eu-west-1")

	out, code, msg = runCLI(t, "--config", operator, "drill", "--lose", "us-east-1", "--quiet")
	require.Equal(t, exitFindings, code, out)
	require.Contains(t, msg, "2 of 8 records unrecoverable")
	require.Contains(t, msg, sortedFirst(homeOnly))

	out, code, _ = runCLI(t, "--config", cfg, "rewrap", "--region", "eu-west-1", "--dry-run", "--quiet")
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "would change 2, unchanged 6")
	out, code, _ = runCLI(t, "--config", cfg, "rewrap", "--region", "eu-west-1", "--quiet", "--checkpoint", filepath.Join(dir, "cp.json"))
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "changed 2, unchanged 6, failed 0")

	// The stand-in's keys carry the rendered key policies, which pass doctor's key-policy
	// check; their automatic rotation is off, which fails.
	out, code, msg = runCLI(t, "--config", operator, "doctor")
	require.Equal(t, exitFindings, code, out)
	require.Regexp(t, `(?m)^PASS +key-policy +us-east-1 `, out)
	require.NotRegexp(t, `(?m)^FAIL +key-policy `, out)
	require.Regexp(t, `(?m)^FAIL +key-rotation +us-east-1 `, out)
	require.Contains(t, out, "fix: ")
	require.Contains(t, msg, "key-rotation in us-east-1")

	_, code, _ = runCLI(t, "--config", operator, "drill")
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

// Sharded verify through the CLI (issue 25): three shards write their reports, envdr report
// merge makes the report of the whole table, and drill verify-report accepts it; a statistical
// verify states its bound.
func TestShardedVerifyCLI(t *testing.T) {
	env := localtest.New(t)
	// verify (recording, --report) runs under the rewrap role, which may write records.
	cfg := env.ConfigPathAs(nil, iam.RoleRewrap)
	seedCLI(t, env, 12, env.Regions...)
	dir := t.TempDir()
	var files []string
	for i := 1; i <= 3; i++ {
		p := filepath.Join(dir, fmt.Sprintf("shard-%d", i))
		out, code, _ := runCLI(t, "--config", cfg, "verify", "--quiet", "--segments", "2", "--shard", fmt.Sprintf("%d/3", i), "--report", p)
		require.Equal(t, exitOK, code, out)
		require.Contains(t, out, fmt.Sprintf("shard %d/3", i))
		files = append(files, p+".json")
	}
	merged := filepath.Join(dir, "all")
	out, code, _ := runCLI(t, append([]string{"report", "merge", "--out", merged}, files...)...)
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "verify PASSED: 12 records, 12 ok")
	out, code, _ = runCLI(t, "drill", "verify-report", merged+".json")
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "digest OK")
	require.Contains(t, out, "verify merged from 3 shards PASSED, 12 records")

	_, code, msg := runCLI(t, append([]string{"report", "merge", "--out", merged}, files...)...)
	require.Equal(t, exitUsage, code, "an existing report is not overwritten")
	require.Contains(t, msg, "exists")
	_, code, msg = runCLI(t, append([]string{"report", "merge", "--out", filepath.Join(dir, "two")}, files[:2]...)...)
	require.Equal(t, exitUsage, code)
	require.Contains(t, msg, "missing shard [3/3]")

	out, code, _ = runCLI(t, "--config", cfg, "verify", "--quiet", "--no-write", "--confidence", "90%", "--max-defect", "20%")
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "verify PASSED: 11 records")
	require.Contains(t, out, "sample: a uniform random sample of 11 records")
	require.Contains(t, out, "max defect 20%")
}

// status and rewrap split across processes (issue 25): two shards of status count every record
// once between them; two shards of rewrap backfill a region, each in its own default checkpoint
// (left behind by neither, as both finish), and read every record once between them. A bad
// --shard is a usage error.
func TestShardedStatusAndRewrapCLI(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	env := localtest.New(t)
	cfg, operator := env.ConfigPathAs(nil, iam.RoleRewrap), env.ConfigPathAs(nil, iam.RoleOperator)
	const full, partial = 9, 7
	seedCLI(t, env, full, env.Regions...)
	seedCLI(t, env, partial, "us-east-1", "ap-southeast-2") // eu-west-1 to backfill

	var records, missingEU int
	for i := 1; i <= 2; i++ {
		stdout, stderr, code := runSplit(t, "--config", operator, "status", "--region", "us-east-1", "--quiet", "--json",
			"--segments", "3", "--shard", fmt.Sprintf("%d/2", i))
		require.Equal(t, exitOK, code, stderr)
		var rep statusReport
		require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
		require.Equal(t, fmt.Sprintf("%d/2", i), rep.Shard)
		records += rep.Records
		for _, rs := range rep.Regions {
			if rs.Region == "eu-west-1" {
				missingEU += rs.Missing
			}
		}
	}
	require.Equal(t, full+partial, records, "the shards count every record once")
	require.Equal(t, partial, missingEU)
	out, code, _ := runCLI(t, "--config", operator, "status", "--region", "us-east-1", "--quiet", "--shard", "1/2", "--shard-base", "0")
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "region us-east-1 shard 2/2 (this part of the table only)", "--shard-base 0 counts from 0")

	var changed, seen int64
	for i := 1; i <= 2; i++ {
		out, code, _ := runCLI(t, "--config", cfg, "rewrap", "--region", "eu-west-1", "--quiet", "--json", "--segments", "3",
			"--shard", fmt.Sprintf("%d/2", i))
		require.Equal(t, exitOK, code, out)
		var reps []struct {
			Shard      string `json:"shard"`
			Checkpoint string `json:"checkpoint"`
			Records    int64  `json:"records"`
			Changed    int64  `json:"changed"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &reps), out)
		require.Len(t, reps, 1)
		require.Equal(t, fmt.Sprintf("%d/2", i), reps[0].Shard)
		require.Contains(t, reps[0].Checkpoint, fmt.Sprintf("-eu-west-1-shard-%d-of-2.json", i))
		_, err := os.Stat(reps[0].Checkpoint)
		require.ErrorIs(t, err, os.ErrNotExist, "a finished shard removes its checkpoint")
		changed += reps[0].Changed
		seen += reps[0].Records
	}
	require.Equal(t, int64(partial), changed, "the two shards backfill every record missing a wrap once")
	require.Equal(t, int64(full+partial), seen, "the two shards read every record once")
	out, code, _ = runCLI(t, "--config", cfg, "rewrap", "--region", "eu-west-1", "--check", "--quiet")
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "would change 0")

	for _, bad := range []string{"3/2", "0/2", "1of2"} {
		_, code, msg := runCLI(t, "--config", cfg, "rewrap", "--region", "eu-west-1", "--shard", bad)
		require.Equal(t, exitUsage, code, bad)
		require.Contains(t, msg, "want i/N")
		_, code, _ = runCLI(t, "--config", operator, "status", "--shard", bad)
		require.Equal(t, exitUsage, code, bad)
	}
}
