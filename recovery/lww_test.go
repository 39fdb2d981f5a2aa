package recovery_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/replicate"
)

// settle waits until every replication direction has applied its pending changes.
func (f *fixture) settle(t *testing.T) {
	t.Helper()
	f.env.Settle()
}

// store is region's own replica of the records table.
func (f *fixture) store(t *testing.T, region string) *replicate.Store {
	t.Helper()
	r, err := f.topo.Region(region)
	require.NoError(t, err)
	return replicate.NewStore(f.cfg.Table, region, r.DynamoDB(), f.cfg.RegionNames())
}

// The review finding of issue 10, reproduced on the stand-in's global tables:
//  1. region Y (ap-southeast-2) comes back after an outage;
//  2. the home region adds Y's wrap (v6) and verifies it;
//  3. X's replica (eu-west-1) still holds v5, because of replication lag;
//  4. `envdr verify --region X` reads v5 and writes through X;
//  5. last writer wins: X's write must not remove Y's wrap anywhere.
func TestVerifyInLaggingRegionKeepsOtherRegionsWraps(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const x, y = "eu-west-1", "ap-southeast-2"
	f.env.SetLag(20 * time.Millisecond)

	full, err := f.newRecord(ctx, "us-east-1", x, y)
	require.NoError(t, err)
	id := full.ID
	yWrap := full.Regions[y]
	v5 := full.Clone()
	delete(v5.Regions, y) // Y was down: no wrap yet
	_, err = f.home.Update(ctx, id, func(*envelope.Record) (*envelope.Record, error) { return v5.Clone(), nil })
	require.NoError(t, err)
	f.settle(t)
	xStore := f.store(t, x)
	got, err := xStore.Get(ctx, id)
	require.NoError(t, err)
	require.False(t, got.Regions[y].HasWrap())

	// From now on X hears of home's writes only after 3 s.
	require.NoError(t, f.env.Stack.GlobalTables().SetLag("us-east-1", x, 3*time.Second))
	verifiedAt := time.Now().UTC()
	_, err = f.home.Update(ctx, id, func(cur *envelope.Record) (*envelope.Record, error) {
		next := cur.Clone()
		w := *yWrap
		w.VerifiedAt = verifiedAt
		next.Regions[y] = &w
		return next, nil
	})
	require.NoError(t, err)

	rep, err := recovery.Verify(ctx, f.as(t, iam.RoleRewrap), recovery.VerifyOptions{Region: x, ID: id, Regions: fastRegions})
	require.NoError(t, err)
	require.True(t, rep.Passed(), "%+v", rep.Failures)

	require.NoError(t, f.env.Stack.GlobalTables().SetLag("", "", 20*time.Millisecond))
	f.settle(t)
	for _, r := range f.env.Regions {
		rec, err := f.store(t, r).Get(ctx, id)
		require.NoError(t, err, r)
		require.True(t, rec.Regions[y].Verified(), "region %s's replica lost %s's acked, verified wrap", r, y)
		require.True(t, rec.Regions[x].Verified(), "region %s's replica lost the verification of %s", r, x)
	}
}
