package replicate

import (
	"errors"
	"testing"
	"time"

	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
)

// The wait before the first read of another region's replica follows the replication lag up
// (reads that missed) and down (reads that found the wrap at once), and stays within maxLagWait.
func TestReplicaLagFollowsObservations(t *testing.T) {
	var l replicaLag
	require.Zero(t, l.first(), "no estimate yet: read at once")
	for i := 0; i < 30; i++ {
		l.observe(false, 300*time.Millisecond) // every first read missed; found after 300 ms
	}
	require.InDelta(t, 300*time.Millisecond, l.first(), float64(10*time.Millisecond))
	for i := 0; i < 30; i++ {
		l.observe(true, 300*time.Millisecond) // lag fell: the first reads find the wrap
	}
	require.Less(t, l.first(), 100*time.Millisecond, "the estimate decays while first reads succeed")
	for i := 0; i < 50; i++ {
		l.observe(false, time.Minute)
	}
	require.Equal(t, maxLagWait, l.first())
	var none *replicaLag // the daemon's own replica: never waits
	none.observe(false, time.Second)
	require.Zero(t, none.first())
}

// The wait before a read counts from when the wrap was made: a later verified_at or error
// stamp on the item does not change whether the replica holds the wrap.
func TestWrapMadeAt(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	require.True(t, wrapMadeAt(nil).IsZero())
	require.True(t, wrapMadeAt(&envelope.RegionWrap{WrappedAt: t0}).IsZero(), "no wrap: nothing replicating yet")
	w := &envelope.RegionWrap{Wrapped: []byte{1}, WrappedAt: t0, LastErrorAt: t0.Add(time.Second)}
	require.Equal(t, t0, wrapMadeAt(w))
	w.VerifiedAt = t0.Add(time.Minute)
	require.Equal(t, t0, wrapMadeAt(w), "a verification stamp does not restart the wait")
}

// failedIn reads a cancelled transaction's reasons item by item: only the writes whose items
// failed are named; a cancellation without matching reasons names them all (nil).
func TestFailedInNamesTheLosingWrites(t *testing.T) {
	group := [][]string{{"None"}, {"None", "ConditionalCheckFailed"}, {"None"}}
	var reasons []ddbtypes.CancellationReason
	for _, w := range group {
		for _, code := range w {
			reasons = append(reasons, ddbtypes.CancellationReason{Code: &code})
		}
	}
	tce := &ddbtypes.TransactionCanceledException{CancellationReasons: reasons}
	items := func(w []string) int { return len(w) }
	require.Equal(t, []bool{false, true, false}, failedIn(group, items, tce))
	require.Nil(t, failedIn(group, items, &ddbtypes.TransactionCanceledException{}), "no reasons: every write")
	require.Nil(t, failedIn(group, items, errors.New("timeout")), "not a cancellation")
}
