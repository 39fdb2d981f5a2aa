package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/s3fixture"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/recovery"
)

// The Helm chart's sharded scan as the cluster runs it (deploy/helm/envdr/templates/scan-job.yaml):
// the merge starts with the shards and waits for their reports (report merge --wait); each
// shard is a pod of an Indexed Job, numbered from 0 ($(JOB_COMPLETION_INDEX) with --shard-base 0),
// under the drill role with --no-write. The merged report covers every record once and
// verify-report accepts it.
func TestShardedScanAsTheChartRunsIt(t *testing.T) {
	env := localtest.New(t)
	cfg := env.ConfigPathAs(nil, iam.RoleDrill)
	seedCLI(t, env, 10, env.Regions...)
	dir := filepath.Join(t.TempDir(), "verify-r1")
	var files []string
	for i := 0; i < 3; i++ {
		files = append(files, filepath.Join(dir, fmt.Sprintf("shard-%d.json", i)))
	}

	merged := startMerge(t, append([]string{"report", "merge", "--wait", "2m", "--out", filepath.Join(dir, "merged")}, files...)...)
	for i := 0; i < 3; i++ {
		out, code, _ := runCLI(t, "--config", cfg, "verify", "--no-write", "--quiet", "--segments", "2",
			"--shard", fmt.Sprintf("%d/3", i), "--shard-base", "0", "--report", filepath.Join(dir, fmt.Sprintf("shard-%d", i)))
		require.Equal(t, exitOK, code, out)
		require.Contains(t, out, fmt.Sprintf("shard %d/3", i+1), "reports name the shard from 1, as report merge expects")
		if i < 2 {
			merged.notYet(t)
		}
	}
	r := merged.wait(t)
	require.Equal(t, exitOK, r.code, r.out)
	require.Contains(t, r.out, "verify PASSED: 10 records, 10 ok")
	out, code, _ := runCLI(t, "drill", "verify-report", filepath.Join(dir, "merged.json"))
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "verify merged from 3 shards PASSED, 10 records")
}

// merge --wait fails naming the report that never came (the --shard-base refusals are in
// testdata/script/usage.txtar).
func TestMergeWaitNamesTheMissingReport(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "shard-0.json")
	require.NoError(t, os.WriteFile(present, []byte("{}"), 0o644))
	missing := filepath.Join(dir, "shard-1.json")
	start := time.Now()
	_, code, msg := runCLI(t, "report", "merge", "--wait", "1s", "--out", filepath.Join(dir, "merged"), present, missing)
	require.Equal(t, exitFailure, code, msg)
	require.Contains(t, msg, "still no "+missing)
	require.NotContains(t, msg, present)
	require.Less(t, time.Since(start), 30*time.Second)
	_, code, _ = runCLI(t, "report", "merge", "--wait", "-1s", "--out", filepath.Join(dir, "merged"), present)
	require.Equal(t, exitUsage, code)
}

// The ECS module's sharded scan (terraform/modules/ecs-ops, aws_scheduler_schedule.scan): each
// shard is a task under the drill role that writes its report to S3 (--report
// s3://bucket/prefix/verify-TIME/shard-i), and the merge task reads them there, waiting for the
// last, and files the merged report beside them. verify-report accepts the merged report.
func TestShardedScanAsECSRunsIt(t *testing.T) {
	env := localtest.New(t)
	s3f := s3fixture.New(t, env)
	cfg := env.ConfigPathAs(nil, iam.RoleDrill)
	seedCLI(t, env, 10, env.Regions...)
	prefix := "s3://" + s3f.Bucket("us-east-1") + "/scans/verify-2026-12-07T03:00:00Z"
	var reports []string
	for i := 1; i <= 3; i++ {
		reports = append(reports, fmt.Sprintf("%s/shard-%d.json", prefix, i))
	}
	merged := startMerge(t, append([]string{"--config", cfg, "report", "merge", "--wait", "2m", "--out", prefix + "/merged"}, reports...)...)
	for i := 1; i <= 3; i++ {
		out, code, _ := runCLI(t, "--config", cfg, "verify", "--no-write", "--quiet", "--segments", "2",
			"--shard", fmt.Sprintf("%d/3", i), "--report", fmt.Sprintf("%s/shard-%d", prefix, i))
		require.Equal(t, exitOK, code, out)
		require.Contains(t, out, fmt.Sprintf("report: %s/shard-%d.json", prefix, i))
		body, ok := s3f.Get("us-east-1", fmt.Sprintf("scans/verify-2026-12-07T03:00:00Z/shard-%d.json", i))
		require.True(t, ok, "shard %d's report is an object in the bucket, not a local file", i)
		_, err := recovery.VerifyVerifyReport(body)
		require.NoError(t, err)
	}
	_, err := os.Stat("s3:")
	require.ErrorIs(t, err, os.ErrNotExist, "no local directory named after the URI")
	r := merged.wait(t)
	require.Equal(t, exitOK, r.code, r.out)
	require.Contains(t, r.out, "verify PASSED: 10 records, 10 ok")
	body, ok := s3f.Get("us-east-1", "scans/verify-2026-12-07T03:00:00Z/merged.json")
	require.True(t, ok, "the merged report is filed beside the shards'")
	m, err := recovery.VerifyVerifyReport(body)
	require.NoError(t, err)
	require.Equal(t, 3, len(m.MergedFrom))

	// verify-report reads it from S3 too; a second merge does not overwrite it.
	out, code, _ := runCLI(t, "--config", cfg, "drill", "verify-report", prefix+"/merged.json")
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "verify merged from 3 shards PASSED, 10 records")
	_, code, msg := runCLI(t, append([]string{"--config", cfg, "report", "merge", "--out", prefix + "/merged"}, reports...)...)
	require.Equal(t, exitUsage, code, msg)
	require.Contains(t, msg, "report object "+prefix+"/merged.json exists: refusing to overwrite it")
}

// mergeRun is a background report merge's output and exit code.
type mergeRun struct {
	out  string
	code int
}

// backgroundMerge is `envdr report merge --wait` started before the shards it waits for, as a
// sharded scan's merge step runs.
type backgroundMerge chan mergeRun

func startMerge(t *testing.T, args ...string) backgroundMerge {
	m := make(backgroundMerge, 1)
	go func() {
		out, code, _ := runCLI(t, args...)
		m <- mergeRun{out, code}
	}()
	return m
}

// notYet fails if the merge has already returned (a shard's report is still missing).
func (m backgroundMerge) notYet(t *testing.T) {
	select {
	case r := <-m:
		t.Fatalf("merge returned before every shard's report existed: %d %s", r.code, r.out)
	default:
	}
}

// wait returns the merge's result, failing after a minute.
func (m backgroundMerge) wait(t *testing.T) mergeRun {
	select {
	case r := <-m:
		return r
	case <-time.After(time.Minute):
		t.Fatal("merge did not finish within a minute of the last shard")
		return mergeRun{}
	}
}
