package recovery

import (
	"context"
	"sync"
	"time"

	"github.com/envdr/envdr/replicate"
)

// stamper gathers verify's per-record writes (verified_at, last_error) and writes them in
// batches (replicate.Store.UpdateBatch: transactions of conditional writes on the versions the
// scan read, a record that changed meanwhile written again on its own). The worker whose record
// fills a batch writes it, at most `writers` batches at once (a transaction of 100 items is a
// heavy write: many at once only queue up in the table), so a slow table slows the workers
// down instead of piling stamps up: at most one batch per worker is held.
type stamper struct {
	store *replicate.Store
	// items is the batch size: a batch is written once its records may need this many items.
	items int
	// writers bounds the batches written at once (a semaphore; its capacity is the bound).
	writers chan struct{}
	done    func(u replicate.BatchUpdate, r replicate.BatchResult)

	mu    sync.Mutex
	buf   []replicate.BatchUpdate
	need  int
	stats replicate.BatchStats
}

// stampFlushTimeout bounds the final write of the stamps still held when a run is interrupted.
const stampFlushTimeout = 10 * time.Second

// add queues one record's update; maxItems is how many items it may write (one per region
// stamped). When the batch is full, the caller writes it.
func (s *stamper) add(ctx context.Context, u replicate.BatchUpdate, maxItems int) {
	s.mu.Lock()
	// Others may add while this worker writes: check again before adding.
	for s.need+maxItems > s.items && len(s.buf) > 0 {
		full := s.buf
		s.buf, s.need = nil, 0
		s.mu.Unlock()
		s.write(ctx, full)
		s.mu.Lock()
	}
	s.buf = append(s.buf, u)
	s.need += maxItems
	s.mu.Unlock()
}

// flush writes what is left. It runs when the scan is over, also when it was interrupted: the
// records held were checked, so their stamps are written (within stampFlushTimeout).
func (s *stamper) flush(ctx context.Context) {
	s.mu.Lock()
	rest := s.buf
	s.buf, s.need = nil, 0
	s.mu.Unlock()
	if len(rest) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stampFlushTimeout)
	defer cancel()
	s.write(ctx, rest)
}

func (s *stamper) write(ctx context.Context, ups []replicate.BatchUpdate) {
	s.writers <- struct{}{}
	res, st := s.store.UpdateBatch(ctx, ups)
	<-s.writers
	s.mu.Lock()
	s.stats.Add(st)
	s.mu.Unlock()
	for i, r := range res {
		s.done(ups[i], r)
	}
}

func (s *stamper) snapshot() replicate.BatchStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// stampWriters is how many batches of stamps verify writes at once: one per 8 workers, at
// least 2 (with the default 16 workers: 2).
func stampWriters(workers int) int {
	if workers < 1 {
		workers = DefaultWorkers
	}
	return max(2, workers/8)
}
