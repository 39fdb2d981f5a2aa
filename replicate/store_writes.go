package replicate

import (
	"context"
	"errors"
	"sync"
	"time"

	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// writeBatcher coalesces the conditional writes of different records into one
// TransactWriteItems call (at most maxTransactItems items, no record twice), when the store has a
// write linger (SetWriteLinger): a write waits up to the linger for others to join it. Each
// record's writes keep their own conditions; DynamoDB applies the call all or nothing, so when a
// condition fails (TransactionCanceledException) every record's writes are sent again on their
// own, and only the records that lost their condition see the conflict (Update then reads afresh
// and retries, as without batching). The daemon sets it on its own replica, where each event
// writes its record and then its verification stamps: together they were two thirds of its
// DynamoDB round trips (issue 14).
type writeBatcher struct {
	s       *Store
	linger  time.Duration
	mu      sync.Mutex
	pending []*writeReq
	items   int // items pending
	running int
	timer   bool
}

type writeReq struct {
	ctx   context.Context
	id    string
	items []ddbtypes.TransactWriteItem
	done  chan error
}

// maxTransactItems is DynamoDB's limit of actions in one TransactWriteItems call.
const maxTransactItems = 100

// SetWriteLinger makes the store's conditional writes wait up to d for others to share their
// call (0: each write goes out at once). Set it before the store is used.
func (s *Store) SetWriteLinger(d time.Duration) { s.batchWrites.linger = d }

// submit writes items (one record's conditional writes), batched with other records' when the
// store lingers.
func (s *Store) submit(ctx context.Context, id string, items []ddbtypes.TransactWriteItem) error {
	b := &s.batchWrites
	if b.linger <= 0 || len(items) >= maxTransactItems/2 {
		return s.write(ctx, items)
	}
	req := &writeReq{ctx: ctx, id: id, items: items, done: make(chan error, 1)}
	b.mu.Lock()
	b.pending = append(b.pending, req)
	b.items += len(items)
	switch {
	case b.items >= maxTransactItems && b.running < maxInFlight:
		b.running++
		go b.run()
	default:
		b.armLocked()
	}
	b.mu.Unlock()
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run sends batches while a full one is waiting, and then the rest once (its timer fired).
func (b *writeBatcher) run() {
	b.mu.Lock()
	for {
		batch := b.take()
		if len(batch) == 0 {
			break
		}
		b.mu.Unlock()
		b.send(batch)
		b.mu.Lock()
		if b.items < maxTransactItems {
			if len(b.pending) > 0 {
				b.armLocked()
			}
			break
		}
	}
	b.running--
	b.mu.Unlock()
}

func (b *writeBatcher) armLocked() {
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
			b.armLocked()
		}
		b.mu.Unlock()
		if start {
			b.run()
		}
	})
}

// take removes from pending the live requests that fit one call: at most maxTransactItems
// items, each record once (a second write of a record waits for the next call). b.mu held.
func (b *writeBatcher) take() []*writeReq {
	var batch []*writeReq
	ids := map[string]bool{}
	n := 0
	rest := b.pending[:0]
	for _, r := range b.pending {
		switch {
		case r.ctx.Err() != nil:
			b.items -= len(r.items)
			r.done <- r.ctx.Err()
		case !ids[r.id] && n+len(r.items) <= maxTransactItems:
			ids[r.id] = true
			n += len(r.items)
			b.items -= len(r.items)
			batch = append(batch, r)
		default:
			rest = append(rest, r)
		}
	}
	clear(b.pending[len(rest):])
	b.pending = rest
	return batch
}

func (b *writeBatcher) send(batch []*writeReq) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(batch[0].ctx), readBatchTimeout)
	defer cancel()
	if len(batch) == 1 {
		batch[0].done <- b.s.write(ctx, batch[0].items)
		return
	}
	var all []ddbtypes.TransactWriteItem
	for _, r := range batch {
		all = append(all, r.items...)
	}
	err := b.s.write(ctx, all)
	var tce *ddbtypes.TransactionCanceledException
	if errors.As(err, &tce) {
		// Nothing was written: each record's writes again on their own, so only those whose
		// conditions failed see the conflict.
		var wg sync.WaitGroup
		for _, r := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.done <- b.s.write(ctx, r.items)
			}()
		}
		wg.Wait()
		return
	}
	for _, r := range batch {
		r.done <- err
	}
}
