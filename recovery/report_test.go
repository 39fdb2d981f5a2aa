package recovery_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/recovery"
)

// A drill report is audit evidence: who ran it (the stand-in's STS answers like AWS's), where,
// with which envdr, when, RPO and RTO in seconds, the thresholds and checks it was judged by,
// and a digest that any single changed byte breaks.
func TestDrillReportEvidence(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	replicated := f.seed(t, 6, f.env.Regions...)
	pending := f.seed(t, 4, "us-east-1", "eu-west-1") // ap-southeast-2 not yet wrapped
	time.Sleep(1100 * time.Millisecond)               // the pending records are > 1 s old

	build := recovery.Build{Version: "v1.2.3-test", Commit: "abc123"}
	rep, err := recovery.Drill(ctx, f.as(t, iam.RoleOperator), recovery.DrillOptions{Lose: "eu-west-1", Regions: fastRegions, Envdr: build})
	require.NoError(t, err)
	require.True(t, rep.Passed, "checks: %+v", rep.Checks)
	require.Equal(t, recovery.ReportSchemaVersion, rep.SchemaVersion)
	require.Equal(t, build, rep.Envdr)
	host, _ := os.Hostname()
	require.Equal(t, host, rep.Host)
	require.Empty(t, rep.Caller.Error)
	require.Equal(t, "111122223333", rep.Caller.Account)
	require.Equal(t, "arn:aws:sts::111122223333:assumed-role/envdr-operator/envdr-local", rep.Caller.ARN)
	require.Equal(t, "us-east-1", rep.Caller.Region)
	require.Equal(t, int64(len(replicated)+len(pending)), rep.Records)
	require.Equal(t, int64(len(pending)), rep.RecoveryPoint.NotReplicated)
	require.GreaterOrEqual(t, rep.RecoveryPoint.RPOSeconds, 1.0, "the oldest not-replicated record is over a second old")
	require.Less(t, rep.RecoveryPoint.RPOSeconds, 120.0)
	require.NotNil(t, rep.RecoveryPoint.OldestNotReplicated)
	require.Greater(t, rep.RTOSeconds, 0.0)
	require.LessOrEqual(t, rep.RTOSeconds, rep.DurationSeconds)
	require.False(t, rep.FinishedAt.Before(rep.StartedAt))
	require.Equal(t, 100.0, rep.Thresholds.MinRecoverablePercent)
	require.Nil(t, rep.Thresholds.MaxRPOSeconds)

	// --max-rpo below the recovery point's age fails the drill, naming the check.
	strict, err := recovery.Drill(ctx, f.as(t, iam.RoleOperator), recovery.DrillOptions{Lose: "eu-west-1", Regions: fastRegions, MaxRPO: 500 * time.Millisecond})
	require.NoError(t, err)
	require.False(t, strict.Passed)
	failed := strict.FailedChecks()
	require.Len(t, failed, 1)
	require.Equal(t, "rpo", failed[0].Name)
	require.Equal(t, 0.5, *strict.Thresholds.MaxRPOSeconds)
	loose, err := recovery.Drill(ctx, f.as(t, iam.RoleOperator), recovery.DrillOptions{Lose: "eu-west-1", Regions: fastRegions, MaxRPO: time.Hour})
	require.NoError(t, err)
	require.True(t, loose.Passed, "checks: %+v", loose.Checks)

	// The files: the JSON carries its digest, the Markdown and HTML show it; the digest verifies.
	dir := t.TempDir()
	paths, err := rep.WriteFiles(filepath.Join(dir, "eu"))
	require.NoError(t, err)
	js, err := os.ReadFile(paths[2])
	require.NoError(t, err)
	require.Len(t, rep.SHA256, 64)
	for _, p := range paths[:2] {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.Contains(t, string(b), rep.SHA256, p)
		require.Contains(t, string(b), "arn:aws:sts::111122223333:assumed-role/envdr-operator/envdr-local", p)
		require.Contains(t, string(b), "v1.2.3-test", p)
	}
	got, err := recovery.VerifyDrillReport(js)
	require.NoError(t, err)
	require.Equal(t, rep.SHA256, got.SHA256)
	require.Equal(t, rep.Records, got.Records)
	require.True(t, bytes.HasSuffix(js, []byte(`"sha256": "`+rep.SHA256+"\"\n}\n")), "the digest is the last member")

	// Every single edited byte fails: the body, the structure, whitespace and the digest itself.
	for i := range js {
		bad := append([]byte(nil), js...)
		bad[i] ^= 0x01
		_, err := recovery.VerifyDrillReport(bad)
		require.Error(t, err, "byte %d (%q) edited and still verified", i, js[i])
	}
	// A plausible forgery: a different count with the old digest.
	forged := bytes.Replace(js, []byte(`"records": 10,`), []byte(`"records": 11,`), 1)
	require.NotEqual(t, js, forged)
	_, err = recovery.VerifyDrillReport(forged)
	require.True(t, errors.Is(err, recovery.ErrReportDigest), "%v", err)
	// A report without a digest (schema 1) is refused, saying so.
	_, err = recovery.VerifyDrillReport([]byte(`{"records": 1}`))
	require.ErrorContains(t, err, "no \"sha256\" digest")
	require.True(t, strings.Contains(string(js), `"schema_version": 2`))
}
