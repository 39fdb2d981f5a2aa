package replicate

import (
	"context"
	"time"
)

// Concurrent Gets of one Store are coalesced into BatchGetItem calls (up to maxBatchRecords
// records, 100 keys): so the daemon's 64 workers, most of them waiting on the same few
// replicas, cost a fraction of a call each (issue 14: DynamoDB round trips were most of the
// daemon's CPU per envelope). With a linger (SetReadLinger) a read waits up to that long for
// others to join its batch: worth it where reads wait anyway, as the verification reads of
// another region's replica do for replication.

// readBatchTimeout bounds one batch call (every attempt is also bounded by the client's
// per-call timeout).
const readBatchTimeout = 30 * time.Second

type readReq struct {
	ctx  context.Context
	id   string
	done chan assembled
}

func (s *Store) maxBatchRecords() int { return max(1, 100/(1+len(s.names))) }

// SetReadLinger makes the store's reads wait up to d for other reads to batch with (0: none).
// Set it before the store is used.
func (s *Store) SetReadLinger(d time.Duration) { s.reads.linger = d }

func (s *Store) initReads() {
	s.reads.max = s.maxBatchRecords()
	s.reads.size = func(*readReq) int { return 1 }
	s.reads.take = s.takeReads
	s.reads.send = s.sendReads
}

// get reads one record, in a batch with whatever other reads are waiting.
func (s *Store) get(ctx context.Context, id string) assembled {
	req := &readReq{ctx: ctx, id: id, done: make(chan assembled, 1)}
	s.reads.add(req)
	select {
	case r := <-req.done:
		return r
	case <-ctx.Done():
		return assembled{err: ctx.Err()}
	}
}

// takeReads takes the requests of up to maxBatchRecords distinct records, dropping those whose
// caller has given up.
func (s *Store) takeReads(pending []*readReq) (batch, rest []*readReq) {
	ids := map[string]bool{}
	for _, r := range pending {
		switch {
		case r.ctx.Err() != nil:
		case ids[r.id] || len(ids) < s.reads.max:
			ids[r.id] = true
			batch = append(batch, r)
		default:
			rest = append(rest, r)
		}
	}
	return batch, rest
}

// sendReads reads a batch's records in one call, under its first request's context values
// without its cancellation (the other callers still wait for the answer). Each caller gets its
// own copy of a record asked for twice.
func (s *Store) sendReads(batch []*readReq) {
	ids := make([]string, 0, len(batch))
	seen := map[string]bool{}
	for _, r := range batch {
		if !seen[r.id] {
			seen[r.id] = true
			ids = append(ids, r.id)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(batch[0].ctx), readBatchTimeout)
	defer cancel()
	recs, err := s.assemble(ctx, ids)
	given := map[string]bool{}
	for _, r := range batch {
		a := assembled{err: err}
		if err == nil {
			a = recs[r.id]
			if given[r.id] && a.rec != nil {
				a.rec = a.rec.Clone()
			}
			given[r.id] = true
		}
		r.done <- a
	}
}
