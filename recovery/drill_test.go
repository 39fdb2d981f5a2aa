package recovery_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/replicate"
	"github.com/envdr/envdr/replicate/replicatetest"
)

func pendingIDs(r *recovery.DrillReport) []string {
	var out []string
	for _, p := range r.Pending {
		out = append(out, p.ID)
	}
	return out
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return s
}

// The acceptance scenario: the daemon runs, a region is lost mid-run, and a drill losing that
// region reports every replicated record recoverable and lists exactly the records whose
// replication had not finished. Once the region is back and the daemon catches up, a drill on
// the healthy setup reports 100% with nothing pending.
func TestDrillAfterRegionLostMidRun(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	d := replicatetest.StartDaemon(t, ctx, f.as(t, iam.RoleDaemon), zap.NewNop(), replicate.DaemonOptions{
		WaitTime: time.Second, RetryBase: time.Second, Regions: fastRegions})

	before := f.enqueue(t, 40)
	waitFor(t, 60*time.Second, "the first batch to replicate everywhere", func() bool {
		n, err := d.QueueDepth(ctx)
		return err == nil && n == 0 && f.wrapped(before, f.env.Regions...)
	})

	const lost = "ap-southeast-2"
	f.env.Down(lost)
	after := f.enqueue(t, 25)
	waitFor(t, 60*time.Second, "the second batch to reach the surviving regions", func() bool {
		return f.wrapped(after, "us-east-1", "eu-west-1")
	})

	rep, err := recovery.Drill(ctx, f.as(t, iam.RoleOperator), recovery.DrillOptions{Lose: lost, Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, int64(len(before)+len(after)), rep.Records)
	require.Equal(t, rep.Records, rep.Recoverable, "failures: %+v", rep.Failures)
	require.Equal(t, int64(len(before)), rep.Replicated)
	require.Equal(t, 100.0, rep.ReplicatedRecoverablePercent)
	require.Zero(t, rep.Unrecoverable)
	require.Equal(t, sorted(after), pendingIDs(rep), "exactly the records not yet replicated")
	for _, p := range rep.Pending {
		require.Equal(t, []string{lost}, p.Missing)
		require.True(t, p.Recoverable)
	}
	require.NotNil(t, rep.RecoveryPoint.QueuedEvents)
	require.Equal(t, int64(len(after)), *rep.RecoveryPoint.QueuedEvents, "their events are still queued")
	require.Equal(t, int64(2*len(after)), rep.RecoveryPoint.AtRisk)
	require.Zero(t, rep.Isolation.LostRegionRequests)
	require.True(t, rep.Passed)

	f.env.Up(lost)
	waitFor(t, 90*time.Second, "the daemon to fill in the lost region", func() bool {
		n, err := d.QueueDepth(ctx)
		return err == nil && n == 0 && f.wrapped(after, f.env.Regions...)
	})
	healthy, err := recovery.Drill(ctx, f.as(t, iam.RoleOperator), recovery.DrillOptions{Lose: lost, Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, 100.0, healthy.RecoverablePercent)
	require.Equal(t, healthy.Records, healthy.Replicated)
	require.Empty(t, healthy.Pending)
	require.True(t, healthy.Passed)
}

// Losing the home region: records whose only wrap is there are unrecoverable and named; the
// queue goes with the region; envelope files open through a replica; and not one request
// reaches the lost region (its KMS counters do not move).
func TestDrillLoseHomeRegion(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	good := f.seed(t, 30, f.env.Regions...)
	homeOnly := f.seed(t, 5, "us-east-1")
	partial := f.seed(t, 3, "us-east-1", "eu-west-1")
	file, hdr := f.sealed(t)
	f.env.ResetCounters()

	rep, err := recovery.Drill(ctx, f.as(t, iam.RoleOperator), recovery.DrillOptions{Lose: "us-east-1", Open: []string{file}, Regions: fastRegions, Segments: 3, Workers: 4})
	require.NoError(t, err)
	require.Equal(t, int64(38), rep.Records)
	require.Equal(t, int64(33), rep.Recoverable)
	require.Equal(t, int64(5), rep.NoSurvivingWrap)
	var failed []string
	for _, x := range rep.Failures {
		failed = append(failed, x.ID)
		require.Equal(t, recovery.OutcomeNotReplicated, x.Outcome)
		require.Contains(t, x.Reason, "only wrap is in the lost region us-east-1")
	}
	require.Equal(t, sorted(homeOnly), failed)
	require.Equal(t, sorted(append(append([]string{}, homeOnly...), partial...)), pendingIDs(rep))
	require.Equal(t, int64(len(good)), rep.Replicated)
	require.Equal(t, 100.0, rep.ReplicatedRecoverablePercent)
	require.Nil(t, rep.RecoveryPoint.QueuedEvents)
	require.Contains(t, rep.RecoveryPoint.QueueNote, "lost region")
	require.Len(t, rep.Files, 1)
	require.True(t, rep.Files[0].OK, rep.Files[0].Error)
	require.Equal(t, hdr.RecordID(), rep.Files[0].ID)
	require.Equal(t, int64(3000), rep.Files[0].Bytes)
	require.False(t, rep.Passed)
	require.Zero(t, rep.Isolation.LostRegionRequests)
	require.Zero(t, f.env.Counters()["us-east-1"]["Decrypt"], "the drill called the lost region's KMS")

	// --all-surviving: the 3 records wrapped in eu-west-1 only now fail too.
	all, err := recovery.Drill(ctx, f.as(t, iam.RoleOperator), recovery.DrillOptions{Lose: "us-east-1", AllSurviving: true, Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, int64(30), all.Recoverable)
	require.Equal(t, int64(3), all.DecryptFailed)
	for _, row := range all.Matrix {
		if row.Region == "ap-southeast-2" {
			require.Equal(t, int64(30), row.OK)
			require.Equal(t, int64(8), row.NoWrap)
		}
	}

	// The three report formats.
	dir := t.TempDir()
	if d := os.Getenv("ENVDR_DRILL_REPORT_DIR"); d != "" {
		dir = d // keep the report to look at (docs/DRILLS.md: rendering the report)
	}
	paths, err := rep.WriteFiles(filepath.Join(dir, "drill-us-east-1"))
	require.NoError(t, err)
	require.Len(t, paths, 3)
	md, err := os.ReadFile(paths[0])
	require.NoError(t, err)
	require.Contains(t, string(md), "# envdr drill: lose us-east-1 — FAILED")
	for _, id := range homeOnly {
		require.Contains(t, string(md), id)
	}
	js, err := os.ReadFile(paths[2])
	require.NoError(t, err)
	var back recovery.DrillReport
	require.NoError(t, json.Unmarshal(js, &back))
	require.Equal(t, rep.Records, back.Records)
	html, err := os.ReadFile(paths[1])
	require.NoError(t, err)
	checkHTML(t, string(html), rep)
}

// checkHTML checks the report page's structure: one verdict, the summary cards, a matrix row
// per region, a row per unrecoverable record, the configuration, and balanced tags.
func checkHTML(t *testing.T, page string, rep *recovery.DrillReport) {
	t.Helper()
	require.True(t, strings.HasPrefix(page, "<!DOCTYPE html>"))
	require.Contains(t, page, `<span class="badge fail" id="verdict">FAILED</span>`)
	for _, id := range []string{`id="summary"`, `id="matrix"`, `id="failures"`, `id="pending"`, `id="files"`, `id="timings"`, `id="config"`} {
		require.Equal(t, 1, strings.Count(page, id), id)
	}
	matrix := section(page, `id="matrix"`, "</table>")
	require.Equal(t, len(rep.Matrix), strings.Count(matrix, "<tr")-1, "one row per region plus the header")
	require.Contains(t, matrix, `<tr class="lost"><td>us-east-1</td>`)
	failures := section(page, `id="failures"`, "</table>")
	require.Equal(t, len(rep.Failures), strings.Count(failures, "<tr>")-1)
	for _, tag := range []string{"table", "tr", "td", "th", "section", "main", "div", "p", "h2"} {
		open := strings.Count(page, "<"+tag+">") + strings.Count(page, "<"+tag+" ")
		require.Equal(t, open, strings.Count(page, "</"+tag+">"), "unbalanced <%s>", tag)
	}
	require.NotContains(t, page, "<no value>")
	require.NotContains(t, page, "ZgotmplZ", "a template value was rejected by html/template")
}

func section(page, start, end string) string {
	i := strings.Index(page, start)
	if i < 0 {
		return ""
	}
	j := strings.Index(page[i:], end)
	if j < 0 {
		return page[i:]
	}
	return page[i : i+j]
}

// A bad wrap (another record's, so KMS refuses it under this context) no longer strands its
// region: the drill falls back to another region's multi-Region wrap in the region's own table,
// opened through the region's own replica key, and counts the fallback (issue 20, finding 4).
// Before, us-east-1 failed the record even though it could open it alone.
func TestDrillBadWrapFallsBack(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ids := f.seed(t, 2, f.env.Regions...)
	other, err := f.home.Get(ctx, ids[1])
	require.NoError(t, err)
	_, err = f.home.Update(ctx, ids[0], func(cur *envelope.Record) (*envelope.Record, error) {
		next := cur.Clone()
		next.Regions["us-east-1"].Wrapped = bytes.Clone(other.Regions["us-east-1"].Wrapped)
		return next, nil
	})
	require.NoError(t, err)
	f.env.Settle()
	rep, err := recovery.Drill(ctx, f.as(t, iam.RoleOperator), recovery.DrillOptions{Lose: "ap-southeast-2", AllSurviving: true, Regions: fastRegions})
	require.NoError(t, err)
	require.Zero(t, rep.DecryptFailed, "%+v", rep.Failures)
	require.Equal(t, int64(2), rep.Recoverable)
	for _, g := range rep.Matrix {
		want := int64(0)
		if g.Region == "us-east-1" {
			want = 1
		}
		require.Equalf(t, want, g.Fallbacks, "region %s: checks that opened with another wrap than its own", g.Region)
	}
	// verify does not fall back: a region's own wrap that fails is a finding to fix.
	ver, err := recovery.Verify(ctx, f.as(t, iam.RoleOperator), recovery.VerifyOptions{Region: "us-east-1", NoWrite: true, Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, int64(1), ver.Failed)
	require.Equal(t, ids[0], ver.Failures[0].ID)
}

// A drill as it runs on AWS (a config without a local: section, credentials from the
// environment) with AWS_CA_BUNDLE set: the guard wraps the client the SDK built with the bundle.
// Before issue 21 the drill failed before doing anything: "unable to add custom RootCAs
// HTTPClient, has no WithTransportOptions, *recovery.guard".
func TestDrillWithCABundle(t *testing.T) {
	f := setup(t)
	ids := f.seed(t, 5, f.env.Regions...)
	cfg := *f.cfg
	local := f.as(t, iam.RoleDrill).Local // the drill's own role, as the environment's credentials
	cfg.Local = nil
	dir := t.TempDir()
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_ACCESS_KEY_ID", local.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", local.SecretKey)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CA_BUNDLE", testCABundle(t))

	rep, err := recovery.Drill(context.Background(), &cfg, recovery.DrillOptions{Lose: "ap-southeast-2", Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, int64(len(ids)), rep.Records)
	require.Equal(t, rep.Records, rep.Recoverable)
	require.Zero(t, rep.Isolation.LostRegionRequests)
}

// testCABundle writes a self-signed CA certificate as PEM and returns its path.
func testCABundle(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "envdr test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(cryptorand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return p
}
