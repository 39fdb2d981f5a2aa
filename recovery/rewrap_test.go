package recovery_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/recovery"
)

// records reads every record by ID from the home table.
func (f *fixture) records(t testing.TB, ids []string) map[string]*envelope.Record {
	t.Helper()
	out := map[string]*envelope.Record{}
	for _, id := range ids {
		rec, err := f.home.Get(context.Background(), id)
		require.NoError(t, err)
		out[id] = rec
	}
	return out
}

// Rotate the key, rewrap, kill the rewrap midway, rerun: every record is re-wrapped exactly once
// (one write each) and none is skipped.
func TestRewrapAfterRotationResumes(t *testing.T) {
	rewrapKillResume(t, 300)
}

// rewrapKillResume is the rotation scenario on n records (the test: a few hundred; make
// rewrap-soak: 10,000). It returns the two runs' reports.
func rewrapKillResume(t testing.TB, n int) (*recovery.RewrapReport, *recovery.RewrapReport) {
	f := setup(t)
	ctx := context.Background()
	ids := f.seed(t, n, f.env.Regions...)
	before := f.records(t, ids)
	home, err := f.topo.HomeRegion()
	require.NoError(t, err)
	_, err = home.KMS().RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(f.env.Keys["us-east-1"].MRK)})
	require.NoError(t, err)
	const region = "eu-west-1"
	target := f.env.Keys[region].MRK

	dry, err := recovery.Rewrap(ctx, f.as(t, iam.RoleRewrap), recovery.RewrapOptions{Region: region, DryRun: true, Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, int64(n), dry.Changed, "dry run counts every record as to change")
	require.False(t, dry.Since.IsZero(), "since comes from the key's rotation")
	for id, rec := range f.records(t, ids) {
		require.Equal(t, before[id].Version, rec.Version, "a dry run writes nothing")
	}

	cp := filepath.Join(t.TempDir(), "rewrap.json")
	opts := recovery.RewrapOptions{Region: region, Checkpoint: cp, Segments: 3, Workers: 4, PageSize: 20, Regions: fastRegions}
	killCtx, kill := context.WithCancel(ctx)
	var done atomic.Int64
	first := opts
	first.Progress = func(k int) {
		if done.Add(int64(k)) >= int64(n/3) {
			kill()
		}
	}
	f.env.ResetCounters()
	rep1, err := recovery.Rewrap(killCtx, f.as(t, iam.RoleRewrap), first)
	kill()
	require.NoError(t, err)
	require.True(t, rep1.Interrupted)
	require.Less(t, rep1.Changed, int64(n))
	require.Positive(t, rep1.Changed)
	_, err = os.Stat(cp)
	require.NoError(t, err, "the checkpoint survives the kill")

	rep2, err := recovery.Rewrap(ctx, f.as(t, iam.RoleRewrap), opts)
	require.NoError(t, err)
	require.True(t, rep2.Resumed)
	require.False(t, rep2.Interrupted)
	require.Zero(t, rep2.Failed, "%+v", rep2.Failures)
	require.Less(t, rep2.Records, int64(n), "the resumed run skips the pages already done")
	// A write in flight when the run was killed may land without being counted by it.
	require.InDelta(t, n, rep1.Changed+rep2.Changed, float64(opts.Workers))
	_, err = os.Stat(cp)
	require.ErrorIs(t, err, os.ErrNotExist, "a finished rewrap removes its checkpoint")

	for id, rec := range f.records(t, ids) {
		w := rec.Regions[region]
		require.Equal(t, before[id].Version+1, rec.Version, "record %s written exactly once", id)
		require.Equal(t, target, w.KeyARN)
		require.False(t, w.WrappedAt.Before(rep2.Since), "record %s not re-wrapped", id)
		require.True(t, w.Verified())
		require.Equal(t, before[id].Regions["us-east-1"].Wrapped, rec.Regions["us-east-1"].Wrapped, "other regions untouched")
	}
	require.GreaterOrEqual(t, f.env.Counters()[region]["ReEncrypt"], int64(n))
	require.Zero(t, f.env.Counters()["ap-southeast-2"]["ReEncrypt"], "rewrap stays in its region")

	again, err := recovery.Rewrap(ctx, f.as(t, iam.RoleRewrap), opts)
	require.NoError(t, err)
	require.Zero(t, again.Changed)
	require.Equal(t, int64(n), again.Unchanged)

	v, err := recovery.Verify(ctx, f.as(t, iam.RoleOperator), recovery.VerifyOptions{Regions: fastRegions, NoWrite: true})
	require.NoError(t, err)
	require.True(t, v.Passed(), "%+v", v.Failures)
	return rep1, rep2
}

// Two shards rewrap a region after a rotation (--shard 1/2 and 2/2), each with its own default
// checkpoint: shard 1 is killed midway, shard 2 finishes meanwhile without touching shard 1's
// checkpoint, shard 1 resumes on its own; every record is re-wrapped exactly once. A shard's
// checkpoint is refused by another shard.
func TestRewrapShardsResumeOnTheirOwn(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	const n = 160
	f := setup(t)
	ctx := context.Background()
	ids := f.seed(t, n, f.env.Regions...)
	before := f.records(t, ids)
	home, err := f.topo.HomeRegion()
	require.NoError(t, err)
	_, err = home.KMS().RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(f.env.Keys["us-east-1"].MRK)})
	require.NoError(t, err)
	const region = "eu-west-1"
	cfg := f.as(t, iam.RoleRewrap)
	one, two := recovery.Shard{Index: 0, Count: 2}, recovery.Shard{Index: 1, Count: 2}
	cp1, cp2 := recovery.DefaultCheckpoint(cfg.Table, region, one), recovery.DefaultCheckpoint(cfg.Table, region, two)
	require.NotEqual(t, cp1, cp2, "each shard has its own checkpoint")
	require.NotEqual(t, recovery.DefaultCheckpoint(cfg.Table, region, recovery.Shard{}), cp1)
	opts := func(s recovery.Shard) recovery.RewrapOptions {
		return recovery.RewrapOptions{Region: region, Shard: s, Segments: 3, Workers: 4, PageSize: 10, Regions: fastRegions}
	}

	killCtx, kill := context.WithCancel(ctx)
	var done atomic.Int64
	first := opts(one)
	first.Progress = func(k int) {
		if done.Add(int64(k)) >= n/6 {
			kill()
		}
	}
	rep1, err := recovery.Rewrap(killCtx, cfg, first)
	kill()
	require.NoError(t, err)
	require.True(t, rep1.Interrupted)
	require.Equal(t, "1/2", rep1.Shard)
	require.Equal(t, cp1, rep1.Checkpoint)
	require.Positive(t, rep1.Changed)
	saved, err := os.ReadFile(cp1)
	require.NoError(t, err, "shard 1's checkpoint survives the kill")
	require.Contains(t, string(saved), `"shard": "1/2"`)

	rep2, err := recovery.Rewrap(ctx, cfg, opts(two))
	require.NoError(t, err)
	require.False(t, rep2.Resumed)
	require.Zero(t, rep2.Failed, "%+v", rep2.Failures)
	_, err = os.Stat(cp2)
	require.ErrorIs(t, err, os.ErrNotExist, "a finished shard removes its own checkpoint")
	after, err := os.ReadFile(cp1)
	require.NoError(t, err)
	require.Equal(t, saved, after, "shard 2 leaves shard 1's checkpoint alone")

	// Another shard, or a whole scan, refuses shard 1's checkpoint.
	wrong := opts(two)
	wrong.Checkpoint = cp1
	_, err = recovery.Rewrap(ctx, cfg, wrong)
	require.ErrorIs(t, err, recovery.ErrCheckpointMismatch)
	require.ErrorContains(t, err, "shard 1/2")
	whole := opts(recovery.Shard{})
	whole.Checkpoint = cp1
	_, err = recovery.Rewrap(ctx, cfg, whole)
	require.ErrorIs(t, err, recovery.ErrCheckpointMismatch)

	rep3, err := recovery.Rewrap(ctx, cfg, opts(one))
	require.NoError(t, err)
	require.True(t, rep3.Resumed)
	require.Zero(t, rep3.Failed, "%+v", rep3.Failures)
	_, err = os.Stat(cp1)
	require.ErrorIs(t, err, os.ErrNotExist)
	// A write in flight when shard 1 was killed may land without being counted by it.
	require.InDelta(t, n, rep1.Changed+rep2.Changed+rep3.Changed, 4)
	require.Positive(t, rep2.Changed)
	require.Positive(t, rep3.Changed)

	for id, rec := range f.records(t, ids) {
		require.Equal(t, before[id].Version+1, rec.Version, "record %s written exactly once", id)
		require.Equal(t, f.env.Keys[region].MRK, rec.Regions[region].KeyARN)
		require.False(t, rec.Regions[region].WrappedAt.Before(rep3.Since), "record %s not re-wrapped", id)
	}
}

// A checkpoint of another rewrap is refused, naming the file.
func TestRewrapCheckpointMismatch(t *testing.T) {
	f := setup(t)
	f.seed(t, 3, f.env.Regions...)
	cp := filepath.Join(t.TempDir(), "cp.json")
	require.NoError(t, os.WriteFile(cp, []byte(`{"version":1,"table":"other","region":"eu-west-1","target_key":"x","segments":[{}]}`), 0o600))
	_, err := recovery.Rewrap(context.Background(), f.cfg, recovery.RewrapOptions{Region: "eu-west-1", Checkpoint: cp, Regions: fastRegions})
	require.ErrorIs(t, err, recovery.ErrCheckpointMismatch)
	require.Contains(t, err.Error(), cp)

	require.NoError(t, os.WriteFile(cp, []byte(`{}`), 0o600))
	_, err = recovery.Rewrap(context.Background(), f.cfg, recovery.RewrapOptions{Region: "eu-west-1", Checkpoint: cp, Regions: fastRegions})
	require.ErrorContains(t, err, "delete it to start over")
}

// Add a fourth region to the config and backfill it; then move a region to another key.
func TestRewrapBackfillNewRegionAndKeyChange(t *testing.T) {
	const west = "us-west-2"
	// us-west-2 is served (its endpoints, a replica of the table) but not yet configured.
	f := setupWith(t, localtest.Options{ExtraRegions: []string{west}})
	ctx := context.Background()
	ids := f.seed(t, 40, f.env.Regions...)

	home, err := f.topo.HomeRegion()
	require.NoError(t, err)
	out, err := home.KMS().ReplicateKey(ctx, &kms.ReplicateKeyInput{KeyId: aws.String(f.env.Keys["us-east-1"].MRK), ReplicaRegion: aws.String(west)})
	require.NoError(t, err)
	// The new replica is Creating for a moment, as on AWS.
	require.Eventually(t, func() bool {
		d, err := kms.NewFromConfig(f.env.AWSConfig(west)).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: out.ReplicaKeyMetadata.Arn})
		return err == nil && d.KeyMetadata.KeyState == kmstypes.KeyStateEnabled
	}, 10*time.Second, 20*time.Millisecond)
	cfg4 := *f.cfg
	cfg4.Regions = append(append([]config.Region(nil), f.cfg.Regions...), config.Region{
		Name: west, Key: aws.ToString(out.ReplicaKeyMetadata.Arn), Mode: config.ModeMRK, KMSRate: 1000,
		Endpoints: f.env.Endpoints(west)})
	cfg4.Policy.Required = append(append([]string(nil), f.cfg.Policy.Required...), west)
	require.NoError(t, cfg4.Validate())
	// The roles' policies for the four-region config, as an operator re-applies them: the new
	// replica has KMS's default key policy, which leaves its use to IAM.
	require.NoError(t, localaws.LoadRenderedPolicies(f.env.IAM, &cfg4))

	pre, err := recovery.Verify(ctx, f.env.ConfigAs(&cfg4, iam.RoleOperator), recovery.VerifyOptions{Regions: fastRegions, NoWrite: true})
	require.NoError(t, err)
	require.Equal(t, int64(40), pre.Failed, "nothing is wrapped in the new region yet")

	rep, err := recovery.Rewrap(ctx, f.env.ConfigAs(&cfg4, iam.RoleRewrap), recovery.RewrapOptions{Region: west, Checkpoint: filepath.Join(t.TempDir(), "cp.json"), Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, int64(40), rep.Changed)
	require.Zero(t, rep.Failed, "%+v", rep.Failures)
	f.env.Settle()
	post, err := recovery.Verify(ctx, f.env.ConfigAs(&cfg4, iam.RoleRewrap), recovery.VerifyOptions{Regions: fastRegions})
	require.NoError(t, err)
	require.True(t, post.Passed(), "%+v", post.Failures)
	drill, err := recovery.Drill(ctx, f.env.ConfigAs(&cfg4, iam.RoleOperator), recovery.DrillOptions{Lose: "us-east-1", AllSurviving: true, Regions: fastRegions})
	require.NoError(t, err)
	require.True(t, drill.Passed)
	require.Equal(t, int64(40), drill.Recoverable)

	// Move eu-west-1 to its independent key (--to-key), then run with that config.
	const eu = "eu-west-1"
	indep := f.env.Keys[eu].Independent
	mv, err := recovery.Rewrap(ctx, f.as(t, iam.RoleRewrap), recovery.RewrapOptions{Region: eu, ToKey: indep, Checkpoint: filepath.Join(t.TempDir(), "cp2.json"), Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, int64(40), mv.Changed)
	f.env.Settle()
	cfgInd := *f.cfg
	cfgInd.Regions = append([]config.Region(nil), f.cfg.Regions...)
	for i := range cfgInd.Regions {
		if cfgInd.Regions[i].Name == eu {
			cfgInd.Regions[i].Key, cfgInd.Regions[i].Mode = indep, config.ModeIndependent
		}
	}
	ind, err := recovery.Verify(ctx, f.env.ConfigAs(&cfgInd, iam.RoleRewrap), recovery.VerifyOptions{Region: eu, Regions: fastRegions})
	require.NoError(t, err)
	require.True(t, ind.Passed(), "%+v", ind.Failures)
	for _, rec := range f.records(t, ids) {
		require.Equal(t, indep, rec.Regions[eu].KeyARN)
	}

	// Independent backfill: drop eu-west-1's wraps and re-make them by Decrypt elsewhere +
	// Encrypt under the independent key.
	for _, id := range ids[:5] {
		_, err := f.home.Update(ctx, id, func(cur *envelope.Record) (*envelope.Record, error) {
			next := cur.Clone()
			delete(next.Regions, eu)
			return next, nil
		})
		require.NoError(t, err)
	}
	f.env.Settle()
	bf, err := recovery.Rewrap(ctx, f.env.ConfigAs(&cfgInd, iam.RoleRewrap), recovery.RewrapOptions{Region: eu, Checkpoint: filepath.Join(t.TempDir(), "cp3.json"), Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, int64(5), bf.Changed)
	require.Equal(t, int64(35), bf.Unchanged)
	f.env.Settle()
	ind, err = recovery.Verify(ctx, f.env.ConfigAs(&cfgInd, iam.RoleOperator), recovery.VerifyOptions{Regions: fastRegions, NoWrite: true})
	require.NoError(t, err)
	require.True(t, ind.Passed(), "%+v", ind.Failures)
}

// A region whose current wrap no longer opens (its old key disabled) is repaired by backfilling
// from another region's good wrap. Before issue 13, rewrap only tried ReEncrypt from the dead
// wrap, and every such record failed on every run.
func TestRewrapRepairsDeadWrap(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	const eu = "eu-west-1"
	ids := f.seed(t, 10, f.env.Regions...)
	indep := f.env.Keys[eu].Independent
	mv, err := recovery.Rewrap(ctx, f.as(t, iam.RoleRewrap), recovery.RewrapOptions{Region: eu, ToKey: indep, Checkpoint: filepath.Join(t.TempDir(), "cp1.json"), Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, int64(10), mv.Changed)

	// The independent key is disabled; eu-west-1 goes back to the multi-Region replica, with the
	// old key listed in previous_keys (the runbook's first step).
	r, err := f.topo.Region(eu)
	require.NoError(t, err)
	_, err = r.KMS().DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(indep)})
	require.NoError(t, err)
	cfg := *f.cfg
	cfg.Regions = append([]config.Region(nil), f.cfg.Regions...)
	cfg.Regions[1].PreviousKeys = []string{indep}
	require.Equal(t, eu, cfg.Regions[1].Name)
	require.NoError(t, cfg.Validate())

	rep, err := recovery.Rewrap(ctx, f.env.ConfigAs(&cfg, iam.RoleRewrap), recovery.RewrapOptions{Region: eu, Checkpoint: filepath.Join(t.TempDir(), "cp2.json"), Regions: fastRegions})
	require.NoError(t, err)
	require.Zero(t, rep.Failed, "%+v", rep.Failures)
	require.Equal(t, int64(10), rep.Changed)
	for _, rec := range f.records(t, ids) {
		require.Equal(t, f.env.Keys[eu].MRK, rec.Regions[eu].KeyARN)
	}
	f.env.Settle() // the rewrap wrote through the home region; verify reads eu-west-1's replica
	ver, err := recovery.Verify(ctx, f.env.ConfigAs(&cfg, iam.RoleOperator), recovery.VerifyOptions{Region: eu, Regions: fastRegions, NoWrite: true})
	require.NoError(t, err)
	require.True(t, ver.Passed(), "%+v", ver.Failures)
}
