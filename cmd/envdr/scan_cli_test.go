package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
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

	type result struct {
		out  string
		code int
	}
	merged := make(chan result, 1)
	go func() {
		out, code, _ := runCLI(t, append([]string{"report", "merge", "--wait", "2m", "--out", filepath.Join(dir, "merged")}, files...)...)
		merged <- result{out, code}
	}()
	for i := 0; i < 3; i++ {
		out, code, _ := runCLI(t, "--config", cfg, "verify", "--no-write", "--quiet", "--segments", "2",
			"--shard", fmt.Sprintf("%d/3", i), "--shard-base", "0", "--report", filepath.Join(dir, fmt.Sprintf("shard-%d", i)))
		require.Equal(t, exitOK, code, out)
		require.Contains(t, out, fmt.Sprintf("shard %d/3", i+1), "reports name the shard from 1, as report merge expects")
		if i < 2 {
			select {
			case r := <-merged:
				t.Fatalf("merge returned before every shard's report existed: %d %s", r.code, r.out)
			default:
			}
		}
	}
	var r result
	select {
	case r = <-merged:
	case <-time.After(time.Minute):
		t.Fatal("merge did not finish within a minute of the last shard")
	}
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
