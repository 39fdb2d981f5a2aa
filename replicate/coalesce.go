package replicate

import (
	"sync"
	"time"
)

// coalescer gathers requests and sends them in batches, for the store's batched reads and
// writes. Without a linger a request goes out at once when fewer than maxInFlight batches are
// under way, and the requests that arrive while every slot is busy go out together next. With a
// linger a request waits up to that long for company, unless a full batch (max size units) is
// waiting.
type coalescer[R any] struct {
	linger time.Duration
	max    int
	size   func(R) int
	// take splits pending into the batch to send now (dropping requests nobody waits for) and
	// the rest; send sends a batch and answers its requests.
	take func(pending []R) (batch, rest []R)
	send func(batch []R)

	mu      sync.Mutex
	pending []R
	n       int // size units pending
	running int
	timer   bool // a linger timer is set
}

// maxInFlight bounds the concurrent batch calls of one coalescer (one region's replica).
const maxInFlight = 4

func (c *coalescer[R]) add(r R) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, r)
	c.n += c.size(r)
	if c.linger > 0 && c.n < c.max {
		c.armLocked()
		return
	}
	c.startLocked()
}

// startLocked starts a sender when a slot is free; otherwise a running one picks the requests
// up (c.mu held).
func (c *coalescer[R]) startLocked() {
	if c.running < maxInFlight {
		c.running++
		goTask(c.run)
	}
}

// run sends batches until nothing is pending (with a linger: while a full batch is waiting; a
// partial one waits for its timer).
func (c *coalescer[R]) run() {
	c.mu.Lock()
	for len(c.pending) > 0 {
		var batch []R
		batch, c.pending = c.take(c.pending)
		c.n = 0
		for _, r := range c.pending {
			c.n += c.size(r)
		}
		if len(batch) > 0 {
			c.mu.Unlock()
			c.send(batch)
			c.mu.Lock()
		}
		if c.linger > 0 && c.n < c.max {
			if len(c.pending) > 0 {
				c.armLocked() // the rest lingers for company
			}
			break
		}
	}
	c.running--
	c.mu.Unlock()
}

// armLocked sets the linger timer unless one is set (c.mu held); when it fires, what is pending
// is sent, or, with every slot busy, waits another linger.
func (c *coalescer[R]) armLocked() {
	if c.timer {
		return
	}
	c.timer = true
	time.AfterFunc(c.linger, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.timer = false
		switch {
		case len(c.pending) == 0:
		case c.running < maxInFlight:
			c.startLocked()
		default:
			c.armLocked()
		}
	})
}
