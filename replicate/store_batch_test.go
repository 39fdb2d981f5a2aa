package replicate_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/replicate"
)

// batchStore is the home region's store of a fresh stand-in, holding n records loaded with
// Load (fake wraps: UpdateBatch never calls KMS), read back as a scan would hand them over.
func batchStore(t *testing.T, n int) (*localtest.Env, *replicate.Store, []*envelope.Record) {
	t.Helper()
	env := localtest.New(t)
	home := env.Config.HomeRegion
	st := replicate.NewStore(env.Config.Table, home, localaws.NewDynamoDB(env.AWSConfig(home)), env.Config.RegionNames())
	ctx := context.Background()
	var recs []*envelope.Record
	for i := 0; i < n; i++ {
		id, err := envelope.NewID()
		require.NoError(t, err)
		ec, err := envelope.NewContext(id, map[string]string{"app": "batch-test"})
		require.NoError(t, err)
		r := &envelope.Record{ID: id, Context: ec, Commitment: randBytes(32), SourceRegion: home, CreatedAt: time.Now().UTC(),
			Regions: map[string]*envelope.RegionWrap{}}
		for _, reg := range env.Regions {
			r.Regions[reg] = &envelope.RegionWrap{KeyARN: "arn:aws:kms:" + reg + ":111122223333:key/mrk-test", Wrapped: randBytes(40), WrappedAt: r.CreatedAt}
		}
		recs = append(recs, r)
	}
	require.NoError(t, st.Load(ctx, recs))
	out := make([]*envelope.Record, n)
	for i, r := range recs {
		got, err := st.Get(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, int64(1), got.Regions[home].Version)
		out[i] = got
	}
	return env, st, out
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// stampAll is verify's kind of update: verified_at = at on every region whose wrap is still the
// one in checked.
func stampAll(checked *envelope.Record, at time.Time) func(*envelope.Record) (*envelope.Record, error) {
	return func(cur *envelope.Record) (*envelope.Record, error) {
		if cur == nil {
			return nil, nil
		}
		next := cur.Clone()
		changed := false
		for n, w := range next.Regions {
			if c := checked.Regions[n]; c != nil && string(c.Wrapped) == string(w.Wrapped) && at.After(w.VerifiedAt) {
				w.VerifiedAt, changed = at, true
			}
		}
		if !changed {
			return nil, nil
		}
		return next, nil
	}
}

func stampUpdates(recs []*envelope.Record, at time.Time) []replicate.BatchUpdate {
	ups := make([]replicate.BatchUpdate, len(recs))
	for i, r := range recs {
		ups[i] = replicate.BatchUpdate{ID: r.ID, Cur: r, Mutate: stampAll(r, at)}
	}
	return ups
}

// rewrapIn replaces region's wrap of id, as rewrap or the replicator would (a fresh wrap, not
// verified yet), and returns the new wrap.
func rewrapIn(ctx context.Context, t *testing.T, st *replicate.Store, id, region string) []byte {
	t.Helper()
	w := randBytes(40)
	_, err := st.Update(ctx, id, func(cur *envelope.Record) (*envelope.Record, error) {
		next := cur.Clone()
		next.Regions[region] = &envelope.RegionWrap{KeyARN: cur.Regions[region].KeyARN, Wrapped: w, WrappedAt: time.Now().UTC()}
		return next, nil
	})
	require.NoError(t, err)
	return w
}

// Every record is stamped, in transactions of at most 100 items that never split a record, and
// each stamp is exactly the one asked for, at the next item version.
func TestUpdateBatchStampsEveryRecord(t *testing.T) {
	t.Parallel()
	env, st, recs := batchStore(t, 120)
	ctx := context.Background()
	at := time.Now().UTC().Truncate(time.Millisecond)
	res, stats := st.UpdateBatch(ctx, stampUpdates(recs, at))
	// 3 items a record, 33 records (99 items) a transaction: 33 + 33 + 33 + 21.
	require.Equal(t, replicate.BatchStats{Writes: 4, Items: 360}, stats)
	for i, r := range res {
		require.NoError(t, r.Err)
		require.True(t, r.Wrote)
		require.False(t, r.Fallback)
		require.Equal(t, recs[i].ID, r.Rec.ID)
	}
	for _, r := range recs {
		got, err := st.Get(ctx, r.ID)
		require.NoError(t, err)
		for _, n := range env.Regions {
			require.True(t, got.Regions[n].VerifiedAt.Equal(at), "%s in %s: verified_at %s", r.ID, n, got.Regions[n].VerifiedAt)
			require.Equal(t, int64(2), got.Regions[n].Version)
			require.Equal(t, r.Regions[n].Wrapped, got.Regions[n].Wrapped)
		}
	}
	// Nothing left to change (read afresh): no write at all.
	var again []*envelope.Record
	for _, r := range recs[:5] {
		got, err := st.Get(ctx, r.ID)
		require.NoError(t, err)
		again = append(again, got)
	}
	res, stats = st.UpdateBatch(ctx, stampUpdates(again, at))
	require.Equal(t, replicate.BatchStats{}, stats)
	for _, r := range res {
		require.NoError(t, r.Err)
		require.False(t, r.Wrote)
	}
}

// One record of the batch changed after it was read: the transaction is cancelled, the other
// records are written in a second transaction, and the changed one alone from a fresh read: the
// concurrent write (a new wrap) is kept, not stamped, and the record's other wraps are stamped.
func TestUpdateBatchOneConflictingRecord(t *testing.T) {
	t.Parallel()
	_, st, recs := batchStore(t, 10)
	ctx := context.Background()
	const region = "eu-west-1"
	fresh := rewrapIn(ctx, t, st, recs[4].ID, region)
	at := time.Now().UTC()
	res, stats := st.UpdateBatch(ctx, stampUpdates(recs, at))
	require.Equal(t, replicate.BatchStats{Writes: 1, Items: 27, Cancelled: 1, Fallbacks: 1}, stats)
	for i, r := range res {
		require.NoError(t, r.Err)
		require.True(t, r.Wrote, "record %d", i)
		require.Equal(t, i == 4, r.Fallback, "record %d", i)
	}
	got, err := st.Get(ctx, recs[4].ID)
	require.NoError(t, err)
	require.Equal(t, fresh, got.Regions[region].Wrapped, "the concurrent wrap was clobbered")
	require.False(t, got.Regions[region].Verified(), "a wrap never checked was stamped")
	for _, n := range []string{"us-east-1", "ap-southeast-2"} {
		require.True(t, got.Regions[n].VerifiedAt.Equal(at), "%s not stamped", n)
	}
	for _, i := range []int{0, 9} {
		got, err := st.Get(ctx, recs[i].ID)
		require.NoError(t, err)
		require.True(t, got.Regions[region].Verified())
	}
}

// Writers racing the batches: half the records get a new wrap in one region before the batch
// (certain conflicts), the other half while batches are being written. No concurrent wrap is
// lost, no wrap other than the one read is stamped, and every untouched wrap is stamped.
func TestUpdateBatchConcurrentWriters(t *testing.T) {
	t.Parallel()
	_, st, recs := batchStore(t, 60)
	ctx := context.Background()
	const region = "ap-southeast-2"
	fresh := make([][]byte, len(recs))
	for i := 0; i < len(recs); i += 2 {
		fresh[i] = rewrapIn(ctx, t, st, recs[i].ID, region)
	}
	at := time.Now().UTC()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i < len(recs); i += 2 {
			w := rewrapIn(ctx, t, st, recs[i].ID, region)
			mu.Lock()
			fresh[i] = w
			mu.Unlock()
		}
	}()
	// Two batches at once over the same records, as two verify workers of two verify runs.
	var stats [2]replicate.BatchStats
	for k := range stats {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, s := st.UpdateBatch(ctx, stampUpdates(recs, at))
			for i, r := range res {
				if r.Err != nil {
					t.Errorf("record %d: %v", i, r.Err)
				}
			}
			stats[k] = s
		}()
	}
	wg.Wait()
	require.GreaterOrEqual(t, stats[0].Fallbacks+stats[1].Fallbacks, len(recs)/2, "the records rewrapped before the batch fell back")
	for i, r := range recs {
		got, err := st.Get(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, fresh[i], got.Regions[region].Wrapped, "record %d: concurrent wrap lost", i)
		require.False(t, got.Regions[region].Verified(), "record %d: a wrap never checked was stamped", i)
		for _, n := range []string{"us-east-1", "eu-west-1"} {
			require.True(t, got.Regions[n].Verified(), "record %d: %s not stamped", i, n)
		}
	}
}

// A record listed twice is written once per transaction (DynamoDB refuses two writes of one
// item in a transaction): the second is batched later, from its own Cur, so it falls back.
func TestUpdateBatchSameRecordTwice(t *testing.T) {
	t.Parallel()
	_, st, recs := batchStore(t, 2)
	ctx := context.Background()
	ups := stampUpdates([]*envelope.Record{recs[0], recs[1], recs[0]}, time.Now().UTC())
	res, stats := st.UpdateBatch(ctx, ups)
	for i, r := range res {
		require.NoError(t, r.Err, fmt.Sprint(i))
	}
	require.Equal(t, 1, stats.Fallbacks)
	require.True(t, res[0].Wrote)
	require.False(t, res[2].Wrote, "the stamp was already there")
}
