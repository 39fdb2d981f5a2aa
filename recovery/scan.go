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
	// resume, optional, says where a segment starts ("" from the beginning) or that it is done.
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
	for seg := 0; seg < e.segments; seg++ {
		g.Go(func() error {
			after, done := "", false
			if e.resume != nil {
				after, done = e.resume(seg)
			}
			if done {
				return nil
			}
			for {
				p, err := e.scanPage(gctx, seg, after)
				if err != nil {
					return err
				}
				var page sync.WaitGroup
				for _, rec := range p.Records {
					page.Add(1)
					select {
					case jobs <- job{rec: rec, wg: &page}:
					case <-gctx.Done():
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
				if err := gctx.Err(); err != nil {
					return err
				}
				if e.pageDone != nil {
					if err := e.pageDone(seg, p.Next); err != nil {
						return err
					}
				}
				if p.Next == "" {
					return nil
				}
				after = p.Next
			}
		})
	}
	err := g.Wait()
	close(jobs)
	workers.Wait()
	return err
}

// scanPage reads one page, retrying transient failures (connection resets, throttling, 5xx,
// truncated responses) with backoff: a long scan should not die of one bad response.
func (e *engine) scanPage(ctx context.Context, seg int, after string) (*replicate.Page, error) {
	var p *replicate.Page
	// 5 tries, 200 ms doubling between them.
	b := retry.WithMaxRetries(4, retry.NewExponential(200*time.Millisecond))
	err := retry.Do(ctx, b, func(ctx context.Context) error {
		var err error
		p, err = e.store.ScanPage(ctx, seg, e.segments, after, e.pageSize)
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
