package replicate

import (
	"context"
	"sync"
	"time"
)

// readBatcher coalesces concurrent Gets of one Store into BatchGetItem calls. A Get is sent at
// once when fewer than maxInFlight batch reads are under way, so a lone reader waits for nothing;
// under load the Gets that arrive while every slot is busy go out together in the next call (up to
// maxBatchRecords records, 100 keys). So the daemon's 64 workers, most of them waiting on the
// same few replicas, cost a fraction of a call each (issue 14: DynamoDB round trips were most of
// the daemon's CPU per envelope).
//
// With a linger (SetReadLinger), a read waits up to that long for others to join its batch:
// worth it where reads wait anyway, as the verification reads of another region's replica do
// for replication.
type readBatcher struct {
	s       *Store
	linger  time.Duration
	mu      sync.Mutex
	pending []*readReq
	running int
	timer   bool // a linger timer is set
}

// SetReadLinger makes the store's reads wait up to d for other reads to batch with (0: none).
// Set it before the store is used.
func (s *Store) SetReadLinger(d time.Duration) { s.reads.linger = d }

// maxInFlight bounds the concurrent batch reads of one store (one region's replica);
// maxBatchRecords is how many records one BatchGetItem reads (each record is 1 + regions keys,
// and a call takes at most 100 keys).
const (
	maxInFlight      = 4
	readBatchTimeout = 30 * time.Second
)

type readReq struct {
	ctx  context.Context
	id   string
	done chan assembled
}

func (s *Store) maxBatchRecords() int { return max(1, 100/(1+len(s.names))) }

// get reads one record, in a batch with whatever other reads are waiting.
func (b *readBatcher) get(ctx context.Context, id string) assembled {
	req := &readReq{ctx: ctx, id: id, done: make(chan assembled, 1)}
	b.mu.Lock()
	b.pending = append(b.pending, req)
	switch {
	case b.linger > 0 && len(b.pending) < b.s.maxBatchRecords():
		b.armLocked()
	case b.running < maxInFlight:
		b.running++
		go b.run()
	}
	b.mu.Unlock()
	select {
	case r := <-req.done:
		return r
	case <-ctx.Done():
		return assembled{err: ctx.Err()}
	}
}

// run sends batches until nothing is pending (with a linger: while a full batch is waiting; a
// partial one waits for its timer). Requests whose caller has given up are dropped
// before the call; a batch runs under its first live request's context values, without its
// cancellation (the other requests' callers still wait for the answer), bounded by
// readBatchTimeout (every attempt is also bounded by the client's per-call timeout).
func (b *readBatcher) run() {
	b.mu.Lock()
	for {
		batch := b.take()
		if len(batch) == 0 {
			break
		}
		b.mu.Unlock()
		b.send(batch)
		b.mu.Lock()
		if b.linger > 0 && len(b.pending) < b.s.maxBatchRecords() {
			if len(b.pending) > 0 {
				b.armLocked() // the rest lingers for company
			}
			break
		}
	}
	b.running--
	b.mu.Unlock()
}

// armLocked sets the linger timer unless one is set (b.mu held); when it fires, what is pending
// is sent.
func (b *readBatcher) armLocked() {
	if b.timer {
		return
	}
	b.timer = true
	time.AfterFunc(b.linger, func() {
		b.mu.Lock()
		b.timer = false
		start := len(b.pending) > 0 && b.running < maxInFlight
		if start {
			b.running++
		} else if len(b.pending) > 0 {
			b.armLocked() // every slot busy: try again after another linger
		}
		b.mu.Unlock()
		if start {
			b.run()
		}
	})
}

// take removes up to maxBatchRecords distinct, live records' requests from pending (b.mu held).
func (b *readBatcher) take() map[string][]*readReq {
	limit := b.s.maxBatchRecords()
	batch := map[string][]*readReq{}
	rest := b.pending[:0]
	for _, r := range b.pending {
		switch {
		case r.ctx.Err() != nil:
			// The caller has returned; nothing to answer.
		case batch[r.id] != nil || len(batch) < limit:
			batch[r.id] = append(batch[r.id], r)
		default:
			rest = append(rest, r)
		}
	}
	clear(b.pending[len(rest):])
	b.pending = rest
	return batch
}

func (b *readBatcher) send(batch map[string][]*readReq) {
	ids := make([]string, 0, len(batch))
	var base context.Context
	for id, rs := range batch {
		ids = append(ids, id)
		if base == nil {
			base = rs[0].ctx
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(base), readBatchTimeout)
	defer cancel()
	recs, err := b.s.assemble(ctx, ids)
	for id, rs := range batch {
		a := assembled{err: err}
		if err == nil {
			a = recs[id]
		}
		for i, r := range rs {
			if i > 0 && a.rec != nil {
				a.rec = a.rec.Clone() // each caller owns its record
			}
			r.done <- a
		}
	}
}
