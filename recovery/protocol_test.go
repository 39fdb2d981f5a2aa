package recovery_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/recovery"
)

// The key-retirement gate (issue 20, finding 3): verify used to accept wraps under
// previous_keys, so "config, rewrap, verify, retire" could retire a key records still needed.
// With a region moved back to its multi-Region key and the old key in previous_keys,
// --require-current is on by default and fails every wrap still under the old key; rewrap
// --check counts them; after the rewrap both pass.
func TestRetirementGate(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	const eu = "eu-west-1"
	f.seed(t, 6, f.env.Regions...)
	indep := f.env.Keys[eu].Independent
	_, err := recovery.Rewrap(ctx, f.as(t, iam.RoleRewrap), recovery.RewrapOptions{Region: eu, ToKey: indep, Checkpoint: filepath.Join(t.TempDir(), "cp1.json"), Regions: fastRegions})
	require.NoError(t, err)
	f.env.Settle()

	cfg := *f.cfg
	cfg.Regions = append([]config.Region(nil), f.cfg.Regions...)
	require.Equal(t, eu, cfg.Regions[1].Name)
	cfg.Regions[1].PreviousKeys = []string{indep}
	require.NoError(t, cfg.Validate())
	require.True(t, recovery.RequireCurrentByDefault(&cfg))
	require.False(t, recovery.RequireCurrentByDefault(f.cfg), "no previous_keys, no alias: off by default")

	loose, err := recovery.Verify(ctx, f.env.ConfigAs(&cfg, iam.RoleOperator), recovery.VerifyOptions{NoWrite: true, Regions: fastRegions})
	require.NoError(t, err)
	require.True(t, loose.Passed(), "without the gate the old key's wraps pass: %+v", loose.Failures)
	gate := func() *recovery.VerifyReport {
		rep, err := recovery.Verify(ctx, f.env.ConfigAs(&cfg, iam.RoleOperator), recovery.VerifyOptions{NoWrite: true, RequireCurrent: true, Regions: fastRegions})
		require.NoError(t, err)
		return rep
	}
	rep := gate()
	require.False(t, rep.Passed())
	require.Equal(t, int64(6), rep.Failed)
	for _, g := range rep.PerRegion {
		if g.Region == eu {
			require.Equal(t, int64(6), g.NotCurrent)
		} else {
			require.Zero(t, g.NotCurrent, g.Region)
		}
	}
	require.Equal(t, recovery.OutcomeNotCurrent, rep.Failures[0].Outcome)
	require.Contains(t, rep.Failures[0].Reason, indep)

	check := func() int64 {
		r, err := recovery.Rewrap(ctx, f.env.ConfigAs(&cfg, iam.RoleRewrap), recovery.RewrapOptions{Region: eu, DryRun: true, Regions: fastRegions})
		require.NoError(t, err)
		return r.Changed
	}
	require.Equal(t, int64(6), check(), "rewrap --check counts what still needs rewrapping")
	_, err = recovery.Rewrap(ctx, f.env.ConfigAs(&cfg, iam.RoleRewrap), recovery.RewrapOptions{Region: eu, Checkpoint: filepath.Join(t.TempDir(), "cp2.json"), Regions: fastRegions})
	require.NoError(t, err)
	f.env.Settle()
	require.Zero(t, check())
	rep = gate()
	require.True(t, rep.Passed(), "%+v", rep.Failures)
}

// A region whose recorded wrap opens to another data key (a wrap of the right key under the
// record's context, but of another DEK: what a forged event used to plant) counts as having no
// wrap: rewrap replaces it from another region's good wrap instead of re-wrapping it, and the
// region then verifies. Before issue 20, rewrap re-wrapped the bad wrap and failed the record
// with a commitment mismatch forever.
func TestRewrapReplacesBadWrap(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	const eu = "eu-west-1"
	ids := f.seed(t, 3, f.env.Regions...)
	r, err := f.producer.Region(eu) // the planted wrap: a data key the producer generated
	require.NoError(t, err)
	rec, err := f.home.Get(ctx, ids[0])
	require.NoError(t, err)
	dek, wrapped, arn, err := r.GenerateDataKeyRaw(ctx, rec.Context.Map())
	require.NoError(t, err)
	envelope.Wipe(dek)
	_, err = f.home.Update(ctx, ids[0], func(cur *envelope.Record) (*envelope.Record, error) {
		next := cur.Clone()
		next.Regions[eu] = &envelope.RegionWrap{KeyARN: arn, Wrapped: wrapped, WrappedAt: time.Now().UTC()}
		return next, nil
	})
	require.NoError(t, err)
	f.env.Settle()
	bad, err := recovery.Verify(ctx, f.as(t, iam.RoleOperator), recovery.VerifyOptions{Region: eu, NoWrite: true, Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, int64(1), bad.Failed)
	require.Contains(t, bad.Failures[0].Reason, "commitment")

	rep, err := recovery.Rewrap(ctx, f.as(t, iam.RoleRewrap), recovery.RewrapOptions{Region: eu, Since: time.Now().UTC(),
		Checkpoint: filepath.Join(t.TempDir(), "cp.json"), Regions: fastRegions})
	require.NoError(t, err)
	require.Zero(t, rep.Failed, "%+v", rep.Failures)
	require.Equal(t, int64(3), rep.Changed)
	f.env.Settle()
	good, err := recovery.Verify(ctx, f.as(t, iam.RoleOperator), recovery.VerifyOptions{Region: eu, NoWrite: true, Regions: fastRegions})
	require.NoError(t, err)
	require.True(t, good.Passed(), "%+v", good.Failures)
}
