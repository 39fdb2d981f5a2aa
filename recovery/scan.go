// Package recovery proves and keeps envdr's promise that losing any one region loses no data:
// verify (every region opens every record on its own), drill (behave as if a region were gone
// and measure what is recoverable), rewrap (after key rotation, a key change or a new region)
// and doctor (is the live key, table and queue setup sound).
//
// Every operation streams the records table with parallel scan segments and a bounded worker
// pool, keeping counts and at most MaxFailures failure details: memory stays flat however many
// records there are.
package recovery

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	"github.com/sethvargo/go-retry"

	"golang.org/x/sync/errgroup"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// Defaults of the scan engine.
const (
	DefaultSegments    = 4
	DefaultWorkers     = 16
	DefaultMaxFailures = 1000
	// scanPageSize bounds the records each segment holds at once (a 1 MB DynamoDB page can hold
	// thousands), so peak memory depends on segments and workers, not on the table.
	scanPageSize = 250
)

// engine streams a table's records through a worker pool.
type engine struct {
	store    *replicate.Store
	segments int
	workers  int
	pageSize int32
	// plan, optional, is the segments to read (default: all of segments); segments then says
	// how many of them are read at once.
	plan plan
	// limit, when > 0, stops the scan once that many records were handed to handle (a sample).
	limit int64
	// resume, optional, says where a segment starts ("" from the beginning) or that it is done;
	// segments are numbered by their position in the plan.
	resume func(segment int) (after string, done bool)
	// pageDone, optional, is called once every record of a page has been handled, so a
	// checkpoint never claims a record that is still in flight.
	pageDone func(segment int, next string) error
	handle   func(ctx context.Context, rec *envelope.Record)
	bad      func(replicate.BadItem)
	progress func(n int)
}

type job struct {
	rec *envelope.Record
	wg  *sync.WaitGroup
}

func (e *engine) run(ctx context.Context) error {
	if e.segments < 1 {
		e.segments = DefaultSegments
	}
	if e.workers < 1 {
		e.workers = DefaultWorkers
	}
	if e.plan.total == 0 {
		e.plan = shardPlan(e.segments, Shard{})
	}
	// Bounded hand-off: memory holds at most a page per segment plus this channel.
	jobs := make(chan job, e.workers*2)
	g, gctx := errgroup.WithContext(ctx)
	var workers sync.WaitGroup
	for i := 0; i < e.workers; i++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range jobs {
				e.handle(gctx, j.rec)
				if e.progress != nil {
					e.progress(1)
				}
				j.wg.Done()
			}
		}()
	}
	var handed atomic.Int64
	positions := make(chan int)
	g.Go(func() error {
		defer close(positions)
		for pos := range e.plan.segments {
			if e.limit > 0 && handed.Load() >= e.limit {
				return nil // the sample is complete: no more segments
			}
			select {
			case positions <- pos:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for range min(e.segments, len(e.plan.segments)) {
		g.Go(func() error {
			for pos := range positions {
				if err := e.segment(gctx, pos, jobs, &handed); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err := g.Wait()
	close(jobs)
	workers.Wait()
	return err
}

// segment reads the plan's segment at pos page by page and hands its records to the workers,
// until e.limit records were handed out (a sample: then it stops without an error, and the
// records already handed out are still handled).
func (e *engine) segment(ctx context.Context, pos int, jobs chan<- job, handed *atomic.Int64) error {
	after, done := "", false
	if e.resume != nil {
		after, done = e.resume(pos)
	}
	if done {
		return nil
	}
	for {
		p, err := e.scanPage(ctx, e.plan.segments[pos], after)
		if err != nil {
			return err
		}
		var page sync.WaitGroup
		full := false
		for _, rec := range p.Records {
			if e.limit > 0 && handed.Add(1) > e.limit {
				full = true
				break
			}
			page.Add(1)
			select {
			case jobs <- job{rec: rec, wg: &page}:
			case <-ctx.Done():
				page.Done()
			}
		}
		for _, b := range p.Bad {
			if e.bad != nil {
				e.bad(b)
			}
			if e.progress != nil {
				e.progress(1)
			}
		}
		page.Wait()
		if full {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.pageDone != nil {
			if err := e.pageDone(pos, p.Next); err != nil {
				return err
			}
		}
		if p.Next == "" {
			return nil
		}
		after = p.Next
	}
}

// scanPage reads one page, retrying transient failures (connection resets, throttling, 5xx,
// truncated responses) with backoff: a long scan should not die of one bad response.
func (e *engine) scanPage(ctx context.Context, seg int, after string) (*replicate.Page, error) {
	var p *replicate.Page
	// 5 tries, 200 ms doubling between them.
	b := retry.WithMaxRetries(4, retry.NewExponential(200*time.Millisecond))
	err := retry.Do(ctx, b, func(ctx context.Context) error {
		var err error
		p, err = e.store.ScanPage(ctx, seg, e.plan.total, after, e.pageSize)
		if err != nil && transient(err) {
			return retry.RetryableError(err)
		}
		return err
	})
	return p, err
}

func transient(err error) bool {
	if regions.IsConnError(err) {
		return true
	}
	var de *smithy.DeserializationError
	if errors.As(err, &de) {
		return true
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded", "InternalServerError":
			return true
		}
	}
	return false
}

// Failure is one record that failed a check, in one region (empty when it concerns the record
// as a whole).
type Failure struct {
	ID      string `json:"id"`
	Region  string `json:"region,omitempty"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
}

// failures keeps at most max failure details and counts the rest.
type failures struct {
	mu      sync.Mutex
	max     int
	items   []Failure
	omitted int64
}

func newFailures(max int) *failures {
	if max <= 0 {
		max = DefaultMaxFailures
	}
	return &failures{max: max}
}

func (f *failures) add(x Failure) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.items) < f.max {
		f.items = append(f.items, x)
		return
	}
	f.omitted++
}

func (f *failures) list() ([]Failure, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]Failure{}, f.items...)
	sortFailures(out)
	return out, f.omitted
}

func trimErr(err error) string {
	s := err.Error()
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
