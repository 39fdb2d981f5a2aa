package recovery

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/envdr/envdr/replicate"
)

// Progress reports records done: a progress bar on a terminal, a plain line every few seconds
// otherwise (logs, CI), nothing when quiet. Both show the estimated total and time left once a
// total is known (ApproxRecords).
type Progress struct {
	label string
	w     io.Writer
	bar   *progressbar.ProgressBar
	done  atomic.Int64
	total atomic.Int64
	start time.Time
	mu    sync.Mutex
	last  time.Time
	every time.Duration
	quiet bool
}

// NewProgress returns a Progress writing to w (a bar when w is a terminal).
func NewProgress(w io.Writer, label string, quiet bool) *Progress {
	p := &Progress{label: label, w: w, start: time.Now(), every: 5 * time.Second, quiet: quiet}
	if quiet {
		return p
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("records"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionFullWidth(),
		)
	}
	return p
}

// SetTotal sets the expected number of records (approximate; the bar grows if exceeded).
func (p *Progress) SetTotal(n int64) {
	if n <= 0 {
		return
	}
	p.total.Store(n)
	if p.bar != nil {
		p.bar.ChangeMax64(n)
	}
}

// Add counts n records done.
func (p *Progress) Add(n int) {
	done := p.done.Add(int64(n))
	if p.quiet {
		return
	}
	if p.bar != nil {
		if max := p.bar.GetMax64(); max > 0 && done > max {
			p.bar.ChangeMax64(done)
		}
		_ = p.bar.Add(n)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := time.Now(); now.Sub(p.last) >= p.every {
		p.last = now
		fmt.Fprintf(p.w, "%s: %s\n", p.label, progressLine(done, p.total.Load(), now.Sub(p.start)))
	}
}

// progressLine is "N records (R/s)", with "of about T (P%), about D left" when the total is
// known. The total is an estimate: past it, only the count and rate are shown.
func progressLine(done, total int64, elapsed time.Duration) string {
	r := rate(done, elapsed)
	if total <= 0 || done > total {
		return fmt.Sprintf("%d records (%.0f/s)", done, r)
	}
	eta := "unknown"
	if r > 0 {
		eta = (time.Duration(float64(total-done) / r * float64(time.Second))).Round(time.Second).String()
	}
	return fmt.Sprintf("%d of about %d records (%.0f%%, %.0f/s), about %s left", done, total, 100*float64(done)/float64(total), r, eta)
}

// ApproxRecords estimates the records in the table from DynamoDB's item count: each record is
// a header item plus one item per region (docs/FORMAT.md §6), so items / (1 + regions), which is
// exact once every record holds a wrap in every region and too low before (the bar then grows).
// For progress only: DynamoDB refreshes the count about every six hours.
func ApproxRecords(ctx context.Context, store *replicate.Store, db interface {
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
}, regionCount int) (int64, error) {
	items, err := store.ApproxCount(ctx, db)
	if err != nil {
		return 0, err
	}
	return items / int64(1+max(regionCount, 0)), nil
}

// Finish clears the bar (a terminal) or prints the final count (plain output).
func (p *Progress) Finish() {
	if p.quiet {
		return
	}
	if p.bar != nil {
		_ = p.bar.Finish()
		return
	}
	done := p.done.Load()
	fmt.Fprintf(p.w, "%s: %d records done in %s (%.0f/s)\n", p.label, done, time.Since(p.start).Round(time.Millisecond), rate(done, time.Since(p.start)))
}
