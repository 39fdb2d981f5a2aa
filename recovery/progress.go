package recovery

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Progress reports records done: a progress bar on a terminal, a plain line every few seconds
// otherwise (logs, CI), nothing when quiet.
type Progress struct {
	label string
	w     io.Writer
	bar   *progressbar.ProgressBar
	done  atomic.Int64
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
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionFullWidth(),
		)
	}
	return p
}

// SetTotal sets the expected number of records (approximate; the bar grows if exceeded).
func (p *Progress) SetTotal(n int64) {
	if p.bar != nil && n > 0 {
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
		fmt.Fprintf(p.w, "%s: %d records (%.0f/s)\n", p.label, done, rate(done, now.Sub(p.start)))
	}
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
