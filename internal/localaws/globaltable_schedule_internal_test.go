package localaws

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A region's write clock: the stand-in's clock plus the region's skew, strictly increasing, and
// strictly after the version of the item the region holds ("the incoming item's timestamp
// [must] be greater than the existing item's timestamp", so a local write that is not later
// than the version it replaced would be lost elsewhere and the replicas would diverge).
// https://docs.aws.amazon.com/prescriptive-guidance/latest/dynamodb-global-tables/overview.html
func TestRegionClockStamp(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ns := func(n int64) time.Time { return time.Unix(0, t0.UnixNano()+n) }
	for _, c := range []struct {
		name      string
		skew      time.Duration
		last      time.Time // the clock's last stamp (zero: none)
		now, prev time.Time
		want      time.Time
	}{
		{"no skew: the wall clock", 0, time.Time{}, t0, time.Time{}, t0},
		{"ahead", 300 * time.Millisecond, time.Time{}, t0, time.Time{}, t0.Add(300 * time.Millisecond)},
		{"behind", -300 * time.Millisecond, time.Time{}, t0, time.Time{}, t0.Add(-300 * time.Millisecond)},
		{"strictly after the last stamp", 0, t0, t0, time.Time{}, ns(1)},
		{"the clock never runs back", 0, t0.Add(time.Second), t0, time.Time{}, ns(int64(time.Second) + 1)},
		{"behind, but after the version it replaces", -300 * time.Millisecond, time.Time{}, t0, t0.Add(-time.Millisecond), ns(-int64(time.Millisecond) + 1)},
		{"an older version does not move it", 0, time.Time{}, t0, t0.Add(-time.Second), t0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var rc regionClock
			rc.skew.Store(int64(c.skew))
			if !c.last.IsZero() {
				rc.last = c.last.UnixNano()
			}
			require.Equal(t, c.want.UnixNano(), rc.stamp(c.now, c.prev).UnixNano())
		})
	}

	var rc regionClock
	last := rc.stamp(time.Now(), time.Time{})
	for range 10000 {
		n := rc.stamp(time.Now(), time.Time{})
		require.True(t, n.After(last))
		last = n
	}
}

// Items replicate individually, each due at its own time: the destination's queue is in due
// order, whatever order the items were written in ("The sequence of write operations within a
// remote Region might not match the sequence ... within the source Region"), except that two
// writes of one item stay in write order and the changes being applied stay at the head.
// https://docs.aws.amazon.com/prescriptive-guidance/latest/dynamodb-global-tables/overview.html
func TestEnqueueOrdersByDuePerItemInWriteOrder(t *testing.T) {
	now := time.Unix(1000, 0)
	ch := func(id string, due time.Duration) change {
		return change{table: "t", key: json.RawMessage(`{"id":{"S":"` + id + `"}}`), image: json.RawMessage(id), due: now.Add(due)}
	}
	order := func(q []change) string {
		var s []string
		for _, c := range q {
			s = append(s, fmt.Sprintf("%s@%d", c.image, c.due.Sub(now)/time.Millisecond))
		}
		return strings.Join(s, " ")
	}
	for _, c := range []struct {
		name     string
		inflight int
		writes   []change
		want     string
	}{
		{"one transaction's items in due order", 0,
			[]change{ch("a", 30*time.Millisecond), ch("b", 10*time.Millisecond), ch("c", 20*time.Millisecond)}, "b@10 c@20 a@30"},
		{"ties keep write order", 0,
			[]change{ch("a", 10*time.Millisecond), ch("b", 10*time.Millisecond), ch("c", 5*time.Millisecond)}, "c@5 a@10 b@10"},
		{"a later write of an item waits for the earlier", 0,
			[]change{ch("a", 50*time.Millisecond), ch("b", 20*time.Millisecond), ch("a2", 10*time.Millisecond)}, "b@20 a@50 a2@50"},
		{"changes being applied stay at the head", 2,
			[]change{ch("x", 40*time.Millisecond), ch("y", 50*time.Millisecond), ch("z", 0)}, "x@40 y@50 z@0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &pair{}
			for i, w := range c.writes {
				if w.image[0] == 'a' {
					w.key = json.RawMessage(`{"id":{"S":"a"}}`) // a2 is a second write of a
				}
				if i == c.inflight && c.inflight > 0 {
					p.inflight = c.inflight
				}
				p.enqueue(w)
			}
			require.Equal(t, c.want, order(p.queue))
		})
	}
}

// The items of one transaction (here: one write of each, as GlobalTables.write records them)
// reach the destination as separate BatchWriteItem calls, in an order the jitter decides, and
// a seed replays the same order.
func TestDeliverJitterSplitsAndReordersTransaction(t *testing.T) {
	run := func(seed uint64) [][]string {
		bt := newBatchTest(t, nil)
		bt.g.SetSeed(seed)
		require.NoError(t, bt.g.SetLag("", "", 0))
		require.NoError(t, bt.g.SetJitter("", "", 200*time.Millisecond))
		for i := range 8 {
			bt.write("a", fmt.Sprintf("t%d", i), "1")
		}
		bt.bUp.Store(true)
		bt.settle(t, "a", "b")
		for i := range 8 {
			_, ok := bt.fake.item("b", fmt.Sprintf("t%d", i))
			require.True(t, ok, "t%d", i)
		}
		bt.fake.mu.Lock()
		defer bt.fake.mu.Unlock()
		return append([][]string(nil), bt.fake.calls...)
	}
	flat := func(calls [][]string) []string {
		var out []string
		for _, c := range calls {
			out = append(out, c...)
		}
		return out
	}
	// They leave in due order, which the seed fixes: replaying it gives the same order.
	first := run(42)
	require.Equal(t, flat(first), flat(run(42)), "the same seed, the same order")
	reordered := false
	for seed := uint64(1); seed < 20 && !reordered; seed++ {
		o := flat(run(seed))
		reordered = strings.Join(o, " ") != "t0 t1 t2 t3 t4 t5 t6 t7"
	}
	require.True(t, reordered, "no seed reordered the transaction's items")
}

// Last writer wins by the writing region's clock: with a's clock 300 ms ahead, a's write made
// before b's wins everywhere, and b's is the conflict.
// https://docs.aws.amazon.com/prescriptive-guidance/latest/dynamodb-global-tables/overview.html
func TestDeliverLastWriterWinsBySkewedClock(t *testing.T) {
	bt := newBatchTest(t, func(int, []string) (int, map[string]bool) { return http.StatusOK, nil })
	require.NoError(t, bt.g.SetSkew("a", 300*time.Millisecond))
	bt.write("a", "x", "from-a")
	bt.write("b", "x", "from-b") // later in real time, earlier by the clocks
	bt.bUp.Store(true)
	require.EqualValues(t, 1, bt.settle(t, "b", "a").Conflicts, "b's write reached a and lost")
	st := bt.settle(t, "a", "b")
	require.EqualValues(t, 1, st.Replicated)
	v, _ := bt.fake.item("b", "x")
	require.Equal(t, "from-a", v)
	_, ok := bt.fake.item("a", "x")
	require.False(t, ok, "b's write was applied in a")
	require.Equal(t, map[string]time.Duration{"a": 300 * time.Millisecond, "b": 0}, bt.g.Skew())
	require.ErrorIs(t, bt.g.SetSkew("c", time.Second), ErrUnknownRegion)
	require.ErrorIs(t, bt.g.SetJitter("c", "", time.Second), ErrUnknownRegion)
	require.Error(t, bt.g.SetJitter("", "", -time.Second))
}

// With jitter, items a BatchWriteItem leaves unprocessed are still re-sent until applied, and
// counted once.
func TestDeliverJitterResendsUnprocessed(t *testing.T) {
	var once sync.Once
	bt := newBatchTest(t, func(n int, ids []string) (int, map[string]bool) {
		left := map[string]bool{}
		once.Do(func() {
			for _, id := range ids {
				left[id] = true
			}
		})
		return http.StatusOK, left
	})
	require.NoError(t, bt.g.SetJitter("", "", 50*time.Millisecond))
	for i := range 40 {
		bt.write("a", fmt.Sprintf("i%02d", i), "1")
	}
	bt.bUp.Store(true)
	st := bt.settle(t, "a", "b")
	require.EqualValues(t, 40, st.Replicated)
	require.Zero(t, st.Conflicts)
	for i := range 40 {
		_, ok := bt.fake.item("b", fmt.Sprintf("i%02d", i))
		require.True(t, ok, "i%02d", i)
	}
}
