package localaws

import (
	"bytes"
	"sort"
	"sync/atomic"
	"time"
)

// The two rules of global tables that decide what another region sees, and when:
//
//   - "Items are replicated individually. Items that are updated within a single transaction
//     might not be replicated together." and "The sequence of write operations within a remote
//     Region might not match the sequence of write operations that happened within the source
//     Region." (https://docs.aws.amazon.com/prescriptive-guidance/latest/dynamodb-global-tables/overview.html);
//     "Transactional operations provide ACID ... guarantees ONLY within the Region where the
//     write is made originally ... you may observe partially completed transactions"
//     (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/V2globaltables_HowItWorks.html).
//     Here: every item of a write gets its own due time per destination (pair.enqueue), lag
//     plus a random jitter, and the destination applies changes in due order.
//   - "a last writer wins mechanism, based on the timestamp of the write operations ... Each
//     item has a last write timestamp held as a private system property ... a conditional write
//     operation that requires the incoming item's timestamp to be greater than the existing
//     item's timestamp" (the prescriptive-guidance page above). Here: regionClock stamps each
//     write with the writing region's clock (offset by its skew), and itemVersion.newer decides.

// regionClock is one region's write clock: the stand-in's wall clock plus the region's skew.
type regionClock struct {
	skew atomic.Int64 // time.Duration
	last int64        // Unix ns of the last time handed out; g.mu is held
}

// stamp returns the time of a write made at now (the stand-in's clock) to an item whose version
// in this region is prev (zero: none): now plus the region's skew, strictly after the last time
// this clock handed out, and strictly after prev. The last rule keeps replicas converging under
// skew: a region whose clock is behind still overwrites the item it holds, and its write wins
// everywhere else too, as it did locally (AWS does not document how it stamps such a write; a
// local write never losing to the version it replaced is the only choice that converges).
// g.mu is held.
func (c *regionClock) stamp(now, prev time.Time) time.Time {
	t := now.UnixNano() + c.skew.Load()
	if t <= c.last {
		t = c.last + 1
	}
	if !prev.IsZero() && t <= prev.UnixNano() {
		t = prev.UnixNano() + 1
	}
	c.last = t
	return time.Unix(0, t)
}

// enqueue inserts c into p's queue in due order, after every change due at the same time (so a
// tie keeps write order) and after the changes being applied. A change is never due before an
// earlier write of the same item still queued: that one's due time is raised to, so two writes
// of an item arrive in the order they were made, whatever their jitter. (On AWS the later one
// would win by last writer wins anyway; keeping the order spares a needless conflict.) g.mu is
// held.
func (p *pair) enqueue(c change) {
	after := func(due time.Time) int {
		i := sort.Search(len(p.queue), func(i int) bool { return p.queue[i].due.After(due) })
		return max(i, p.inflight)
	}
	i := after(c.due)
	for j := len(p.queue) - 1; j >= i; j-- {
		if q := p.queue[j]; q.table == c.table && bytes.Equal(q.key, c.key) {
			c.due = q.due // the latest due of the item's queued writes: it sorts last
			i = after(c.due)
			break
		}
	}
	p.queue = append(p.queue, change{})
	copy(p.queue[i+1:], p.queue[i:])
	p.queue[i] = c
}
