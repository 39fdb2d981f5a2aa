package replicate

import (
	"context"
	"errors"
	"sync"
	"time"

	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// With a write linger (SetWriteLinger) the conditional writes of different records share one
// TransactWriteItems call (at most MaxTransactItems items, no record twice): a write waits up
// to the linger for others to join it. Each record's writes keep their own conditions; DynamoDB
// applies the call all or nothing, so when a condition fails (TransactionCanceledException) the
// records that lost their condition (the cancellation reasons, as UpdateBatch reads them) are
// sent again on their own, and only they see the conflict (Update then reads afresh and
// retries, as without batching); the others go together again. The daemon sets it on its own
// replica, where each event writes its record and then its verification stamps: together they
// were two thirds of its DynamoDB round trips (issue 14).

type writeReq struct {
	ctx   context.Context
	id    string
	items []ddbtypes.TransactWriteItem
	done  chan error
}

// SetWriteLinger makes the store's conditional writes wait up to d for others to share their
// call (0: each write goes out at once). Set it before the store is used.
func (s *Store) SetWriteLinger(d time.Duration) { s.batchWrites.linger = d }

func (s *Store) initWrites() {
	s.batchWrites.max = MaxTransactItems
	s.batchWrites.size = func(r *writeReq) int { return len(r.items) }
	s.batchWrites.take = takeWrites
	s.batchWrites.send = s.sendWrites
}

// submit writes items (one record's conditional writes), batched with other records' when the
// store lingers.
func (s *Store) submit(ctx context.Context, id string, items []ddbtypes.TransactWriteItem) error {
	if s.batchWrites.linger <= 0 || len(items) >= MaxTransactItems/2 {
		return s.write(ctx, items)
	}
	req := &writeReq{ctx: ctx, id: id, items: items, done: make(chan error, 1)}
	s.batchWrites.add(req)
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// takeWrites takes the live requests that fit one call (packTransact: at most MaxTransactItems
// items, each record once; a second write of a record waits for the next call).
func takeWrites(pending []*writeReq) (batch, rest []*writeReq) {
	live := pending[:0:0]
	for _, r := range pending {
		if r.ctx.Err() != nil {
			r.done <- r.ctx.Err()
			continue
		}
		live = append(live, r)
	}
	return packTransact(live, func(r *writeReq) (string, int) { return r.id, len(r.items) })
}

func (s *Store) sendWrites(batch []*writeReq) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(batch[0].ctx), readBatchTimeout)
	defer cancel()
	s.sendWritesIn(ctx, batch)
}

// sendWritesIn writes a batch in one call. When DynamoDB cancels it, nothing was written: the
// records whose condition failed (the cancellation reasons; all of them when the reasons do not
// say) are written again on their own, so only they see the conflict, and the others together
// again.
func (s *Store) sendWritesIn(ctx context.Context, batch []*writeReq) {
	if len(batch) == 1 {
		batch[0].done <- s.write(ctx, batch[0].items)
		return
	}
	var all []ddbtypes.TransactWriteItem
	for _, r := range batch {
		all = append(all, r.items...)
	}
	err := s.write(ctx, all)
	var tce *ddbtypes.TransactionCanceledException
	if !errors.As(err, &tce) {
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	failed := failedIn(batch, func(r *writeReq) int { return len(r.items) }, err)
	var wg sync.WaitGroup
	var rest []*writeReq
	for k, r := range batch {
		if failed != nil && !failed[k] {
			rest = append(rest, r)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.done <- s.write(ctx, r.items)
		}()
	}
	if len(rest) > 0 {
		s.sendWritesIn(ctx, rest)
	}
	wg.Wait()
}
