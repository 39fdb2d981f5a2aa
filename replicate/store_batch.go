package replicate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/sethvargo/go-retry"

	"github.com/envdr/envdr/envelope"
)

// MaxTransactItems is DynamoDB's limit of actions in one TransactWriteItems call.
const MaxTransactItems = 100

// BatchUpdate is one record's change for UpdateBatch.
type BatchUpdate struct {
	// ID is the record's envelope ID.
	ID string
	// Cur is the record as the caller last read it from this store's table (nil: known to be
	// absent). The batched write is conditional on Cur's item versions, as UpdateFrom's first
	// try is.
	Cur *envelope.Record
	// Mutate is as in Update: a pure function of its input (it may run again on a fresh read),
	// returning nil to write nothing.
	Mutate func(cur *envelope.Record) (*envelope.Record, error)
}

// BatchResult is the outcome of one BatchUpdate, at the same index.
type BatchResult struct {
	// Rec is the record as written, or as it stood when nothing was written (nil on error).
	Rec *envelope.Record
	// Wrote: the last call of Mutate asked for a write and the write was made.
	Wrote bool
	// Fallback: the record was written on its own (Update: a fresh read, Mutate again), because
	// its items changed since Cur was read (a cancelled transaction named it) or the batch
	// could not be written.
	Fallback bool
	Err      error
}

// BatchStats counts what UpdateBatch did.
type BatchStats struct {
	// Writes are the batched writes made (TransactWriteItems, or PutItem for a lone item),
	// Items the items they wrote.
	Writes, Items int
	// Cancelled counts batched writes refused as a whole (a transaction cancelled, a lone
	// conditional put that failed); their records without a failed condition are batched again.
	Cancelled int
	// Fallbacks counts the records written on their own.
	Fallbacks int
}

// Add adds o to s.
func (s *BatchStats) Add(o BatchStats) {
	s.Writes += o.Writes
	s.Items += o.Items
	s.Cancelled += o.Cancelled
	s.Fallbacks += o.Fallbacks
}

// pendingWrite is one record's writes waiting for a batch.
type pendingWrite struct {
	i      int
	writes []ddbtypes.TransactWriteItem
	next   *envelope.Record
}

// UpdateBatch applies many records' changes with few writes: each record's conditional writes
// (the same writes, on the same item versions, as Update would make from BatchUpdate.Cur) are
// packed into transactions of at most MaxTransactItems items, a record never split between two.
// A transaction is all or nothing; when one is cancelled its CancellationReasons name the items
// whose condition failed (the record changed since it was read: a concurrent replicator,
// rewrap or verify), and only those records fall back to Update, which reads them afresh and
// runs Mutate again, so a concurrent write is never lost and the record is still updated or its
// error reported. The other records of the cancelled transaction are batched again.
//
// Results are in the order of ups. Each result's error names the region, record and table.
func (s *Store) UpdateBatch(ctx context.Context, ups []BatchUpdate) ([]BatchResult, BatchStats) {
	out := make([]BatchResult, len(ups))
	var st BatchStats
	var queue []pendingWrite
	for i, u := range ups {
		var cur *envelope.Record
		if u.Cur != nil {
			cur = u.Cur.Clone()
		}
		next, err := u.Mutate(cur)
		if err != nil {
			out[i] = BatchResult{Err: err}
			continue
		}
		var writes []ddbtypes.TransactWriteItem
		if next != nil {
			if writes, err = s.writes(u.Cur, next); err != nil {
				out[i] = BatchResult{Err: err}
				continue
			}
		}
		if len(writes) == 0 {
			out[i] = BatchResult{Rec: u.Cur}
			continue
		}
		queue = append(queue, pendingWrite{i: i, writes: writes, next: next})
	}
	var fallback []int
	for len(queue) > 0 {
		var group []pendingWrite
		group, queue = packBatch(queue)
		if len(group) == 0 { // a record alone needs more items than a transaction holds
			fallback = append(fallback, queue[0].i)
			queue = queue[1:]
			continue
		}
		var items []ddbtypes.TransactWriteItem
		for _, p := range group {
			items = append(items, p.writes...)
		}
		err := s.write(ctx, items)
		if err == nil {
			st.Writes++
			st.Items += len(items)
			for _, p := range group {
				out[p.i] = BatchResult{Rec: p.next, Wrote: true}
			}
			continue
		}
		if ctx.Err() != nil {
			for _, p := range group {
				out[p.i] = BatchResult{Err: s.batchErr(ups[p.i].ID, err)}
			}
			for _, p := range queue {
				out[p.i] = BatchResult{Err: s.batchErr(ups[p.i].ID, ctx.Err())}
			}
			return out, st
		}
		st.Cancelled++
		failed := failedRecords(group, err)
		var again []pendingWrite
		for _, p := range group {
			if failed == nil || failed[p.i] {
				fallback = append(fallback, p.i)
			} else {
				again = append(again, p)
			}
		}
		queue = append(again, queue...)
	}
	for _, i := range fallback {
		st.Fallbacks++
		if s.OnConflict != nil {
			s.OnConflict()
		}
		out[i] = s.updateAlone(ctx, ups[i])
	}
	return out, st
}

// updateAlone is the per-record fallback of UpdateBatch: Update, noting whether it wrote.
func (s *Store) updateAlone(ctx context.Context, u BatchUpdate) BatchResult {
	wrote := false
	rec, err := s.Update(ctx, u.ID, func(cur *envelope.Record) (*envelope.Record, error) {
		next, err := u.Mutate(cur)
		wrote = err == nil && next != nil
		return next, err
	})
	if err != nil {
		return BatchResult{Fallback: true, Err: err}
	}
	return BatchResult{Rec: rec, Wrote: wrote, Fallback: true}
}

func (s *Store) batchErr(id string, err error) error {
	return fmt.Errorf("region %s: write record %s to table %s: %w", s.Region, id, s.Table, err)
}

// packBatch takes from the front of queue the records whose writes fit in one transaction (at
// most MaxTransactItems items, no record twice: a transaction may touch an item once) and
// returns them and the rest, in order. It returns no group when the first record alone needs
// more items than a transaction holds.
func packBatch(queue []pendingWrite) (group, rest []pendingWrite) {
	return packTransact(queue, func(p pendingWrite) (string, int) { return p.next.ID, len(p.writes) })
}

// packTransact is packBatch over any kind of queued write: of says a write's record and its
// number of items.
func packTransact[W any](queue []W, of func(W) (id string, items int)) (group, rest []W) {
	n := 0
	ids := map[string]bool{}
	for _, p := range queue {
		id, k := of(p)
		if n+k > MaxTransactItems || ids[id] {
			rest = append(rest, p)
			continue
		}
		ids[id] = true
		n += k
		group = append(group, p)
	}
	return group, rest
}

// failedRecords maps a refused batched write to the records whose condition failed (by their
// index in the caller's updates). nil means every record of the group: the error does not say
// which (not a cancelled transaction, or reasons that do not match the items).
func failedRecords(group []pendingWrite, err error) map[int]bool {
	failed := failedIn(group, func(p pendingWrite) int { return len(p.writes) }, err)
	if failed == nil {
		return nil
	}
	out := map[int]bool{}
	for k, f := range failed {
		if f {
			out[group[k].i] = true
		}
	}
	return out
}

// failedIn is failedRecords over any kind of batched write (items says how many items a write
// put in the transaction): failed[k] is whether group[k]'s condition failed; nil means every
// write of the group (the error does not say which, or names none).
func failedIn[W any](group []W, items func(W) int, err error) []bool {
	var tce *ddbtypes.TransactionCanceledException
	if !errors.As(err, &tce) {
		return nil
	}
	n := 0
	for _, w := range group {
		n += items(w)
	}
	if len(tce.CancellationReasons) != n {
		return nil
	}
	failed := make([]bool, len(group))
	some, k := false, 0
	for j, w := range group {
		for range items(w) {
			if code := aws.ToString(tce.CancellationReasons[k].Code); code != "" && code != "None" {
				failed[j], some = true, true
			}
			k++
		}
	}
	if !some {
		return nil
	}
	return failed
}

// BatchWriter is the DynamoDB call Load needs besides DynamoAPI.
type BatchWriter interface {
	BatchWriteItem(context.Context, *dynamodb.BatchWriteItemInput, ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error)
}

// maxBatchWriteItems is DynamoDB's limit of requests in one BatchWriteItem call.
const maxBatchWriteItems = 25

// Load writes whole records (the header and each region's item, as Update would lay out a new
// record) with BatchWriteItem, 25 items a call, unconditionally: an item already there is
// overwritten. It is for filling a table nobody else writes to (seeding a benchmark, loading
// a fresh table), not for live tables, where Update and UpdateBatch keep concurrent writers
// safe. The store's client must implement BatchWriter. recs' versions are set.
func (s *Store) Load(ctx context.Context, recs []*envelope.Record) error {
	bw, ok := s.db.(BatchWriter)
	if !ok {
		return fmt.Errorf("region %s: load into table %s: the DynamoDB client cannot BatchWriteItem", s.Region, s.Table)
	}
	var reqs []ddbtypes.WriteRequest
	for _, r := range recs {
		writes, err := s.writes(nil, r)
		if err != nil {
			return fmt.Errorf("region %s: load record %s into table %s: %w", s.Region, r.ID, s.Table, err)
		}
		for _, w := range writes {
			reqs = append(reqs, ddbtypes.WriteRequest{PutRequest: &ddbtypes.PutRequest{Item: w.Put.Item}})
		}
	}
	for len(reqs) > 0 {
		batch := reqs[:min(len(reqs), maxBatchWriteItems)]
		reqs = reqs[len(batch):]
		// Unprocessed items (the table's write capacity) are sent again, up to 16 times.
		b := retry.WithMaxRetries(16, retry.WithCappedDuration(200*time.Millisecond, retry.NewExponential(10*time.Millisecond)))
		err := retry.Do(ctx, b, func(ctx context.Context) error {
			res, err := bw.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]ddbtypes.WriteRequest{s.Table: batch}})
			if err != nil {
				return err
			}
			if batch = res.UnprocessedItems[s.Table]; len(batch) > 0 {
				return retry.RetryableError(fmt.Errorf("%d items left unprocessed", len(batch)))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("region %s: load into table %s: %w", s.Region, s.Table, err)
		}
	}
	return nil
}
