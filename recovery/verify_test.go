package recovery_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/recovery"
)

// verify checks every region alone, marks verified_at, and names a record whose wrap in one
// region does not open there.
func TestVerify(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ids := f.seed(t, 40, f.env.Regions...)
	missing := f.seed(t, 2, "us-east-1", "eu-west-1")

	// Swap in another record's wrap for eu-west-1: KMS refuses it under this record's context.
	bad := ids[0]
	other, err := f.home.Get(ctx, ids[1])
	require.NoError(t, err)
	_, err = f.home.Update(ctx, bad, func(cur *envelope.Record) (*envelope.Record, error) {
		next := cur.Clone()
		next.Regions["eu-west-1"].Wrapped = bytes.Clone(other.Regions["eu-west-1"].Wrapped)
		return next, nil
	})
	require.NoError(t, err)
	f.env.Settle()

	rep, err := recovery.Verify(ctx, f.as(t, iam.RoleRewrap), recovery.VerifyOptions{Regions: fastRegions, Segments: 2, Workers: 4})
	require.NoError(t, err)
	require.False(t, rep.Passed())
	require.Equal(t, int64(42), rep.Records)
	require.Equal(t, int64(39), rep.OK)
	require.Equal(t, int64(3), rep.Failed)
	got := map[string]string{}
	for _, x := range rep.Failures {
		got[x.ID+"/"+x.Region] = x.Outcome
	}
	require.Equal(t, map[string]string{
		bad + "/eu-west-1":             recovery.OutcomeFailed,
		missing[0] + "/ap-southeast-2": recovery.OutcomeNoWrap,
		missing[1] + "/ap-southeast-2": recovery.OutcomeNoWrap,
	}, got)

	good, err := f.home.Get(ctx, ids[5])
	require.NoError(t, err)
	for _, n := range f.env.Regions {
		require.True(t, good.Regions[n].Verified(), "verified_at set in %s", n)
	}
	broken, err := f.home.Get(ctx, bad)
	require.NoError(t, err)
	require.False(t, broken.Regions["eu-west-1"].Verified())
	// Failures are reported, never written to the region's item (docs/FORMAT.md §6.1, I3).
	require.Empty(t, broken.Regions["eu-west-1"].LastError)
	require.True(t, broken.Regions["us-east-1"].Verified())

	// A region holding no entry at all for some records: nothing to mark, the records named.
	ap, err := recovery.Verify(ctx, f.as(t, iam.RoleRewrap), recovery.VerifyOptions{Region: "ap-southeast-2", Regions: fastRegions})
	require.NoError(t, err)
	require.Equal(t, int64(2), ap.Failed)
	require.Equal(t, int64(40), ap.Updated)

	// --region: only that region's endpoints are used; the others may be down.
	f.env.Down("us-east-1")
	f.env.Down("ap-southeast-2")
	one, err := recovery.Verify(ctx, f.as(t, iam.RoleOperator), recovery.VerifyOptions{Region: "eu-west-1", Regions: fastRegions, NoWrite: true})
	require.NoError(t, err)
	require.Equal(t, []string{"eu-west-1"}, one.Regions)
	require.Equal(t, int64(42), one.Records)
	require.Equal(t, int64(1), one.Failed)
	require.Equal(t, bad, one.Failures[0].ID)

	// --id: one record.
	single, err := recovery.Verify(ctx, f.as(t, iam.RoleRewrap), recovery.VerifyOptions{Region: "eu-west-1", ID: ids[3], Regions: fastRegions})
	require.NoError(t, err)
	require.True(t, single.Passed())
	require.Equal(t, int64(1), single.Records)
}

// verify's stamps are batched on the versions the scan read. A record rewrapped by another
// writer after verify checked it, while its stamp waits in a batch, makes the transaction
// cancel: the other records are written in a batch again, and this one alone from a fresh
// read: the new wrap is kept (not clobbered, not stamped: verify never checked it) and the
// record's other regions are stamped.
func TestVerifyBatchedStampsKeepConcurrentWrite(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.seed(t, 10, f.env.Regions...)
	page, err := f.home.ScanPage(ctx, 0, 1, "", 0)
	require.NoError(t, err)
	require.Len(t, page.Records, 10)
	first, other := page.Records[0], page.Records[1]
	const region = "ap-southeast-2"
	swapped := bytes.Clone(other.Regions[region].Wrapped)
	calls := 0
	rep, err := recovery.Verify(ctx, f.as(t, iam.RoleRewrap), recovery.VerifyOptions{Regions: fastRegions, Segments: 1, Workers: 1,
		Progress: func(int) {
			calls++
			if calls != 1 {
				return
			}
			// The first record is checked and its stamp held: rewrap it now.
			_, err := f.home.Update(ctx, first.ID, func(cur *envelope.Record) (*envelope.Record, error) {
				next := cur.Clone()
				next.Regions[region] = &envelope.RegionWrap{KeyARN: cur.Regions[region].KeyARN, Wrapped: swapped, WrappedAt: time.Now().UTC()}
				return next, nil
			})
			require.NoError(t, err)
		}})
	require.NoError(t, err)
	require.True(t, rep.Passed(), "%+v", rep.Failures)
	require.Equal(t, int64(10), rep.Updated)
	require.Equal(t, int64(1), rep.StampFallbacks)
	require.Equal(t, int64(1), rep.StampWrites, "the nine other records in one transaction")
	got, err := f.home.Get(ctx, first.ID)
	require.NoError(t, err)
	require.Equal(t, swapped, got.Regions[region].Wrapped, "the concurrent rewrap was clobbered")
	require.False(t, got.Regions[region].Verified(), "a wrap verify never checked was stamped")
	require.True(t, got.Regions["us-east-1"].Verified())
	require.True(t, got.Regions["eu-west-1"].Verified())
	for _, r := range page.Records[1:] {
		got, err := f.home.Get(ctx, r.ID)
		require.NoError(t, err)
		for _, n := range f.env.Regions {
			require.True(t, got.Regions[n].Verified(), "%s in %s", r.ID, n)
		}
	}
}
