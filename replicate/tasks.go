package replicate

import (
	"context"
	"sync"
	"time"

	"github.com/panjf2000/ants/v2"
)

// Events' work runs on long-lived goroutines (an ants pool) rather than a fresh goroutine per
// event and per region task. An AWS SDK call runs through a deep middleware chain, so a fresh
// goroutine grows (copies) its stack several times in its first call: a tenth of the daemon's CPU
// per envelope went to that (issue 14, pprof). A pooled goroutine keeps the stack it grew.
//
// The pool never blocks: when every pooled goroutine is busy (or the pool cannot be made) a task
// runs on a goroutine of its own, as before, so nested tasks cannot deadlock.

// taskPoolSize bounds the pooled goroutines; idle ones exit after taskIdle.
const (
	taskPoolSize = 4096
	taskIdle     = 30 * time.Second
)

var sharedTasks = sync.OnceValue(func() *ants.Pool {
	p, err := ants.NewPool(taskPoolSize, ants.WithNonblocking(true), ants.WithExpiryDuration(taskIdle))
	if err != nil {
		return nil
	}
	return p
})

// goTask runs fn on a pooled goroutine, or on a new one when none is free.
func goTask(fn func()) {
	run := func() { growStack(); fn() }
	if p := sharedTasks(); p == nil || p.Submit(run) != nil {
		go run()
	}
}

// growStack grows the calling goroutine's stack once, while it is shallow, to what an AWS SDK
// call needs. Growing it there copies one frame; growing it deep inside the SDK's middleware
// chain copies and adjusts dozens, several times over. (The garbage collector shrinks an idle
// pooled goroutine's stack again, so a long-lived goroutine would otherwise pay it again.)
//
//go:noinline
func growStack() {
	var pad [stackHint]byte
	keepStack(pad[:])
}

// stackHint is about the stack an SDK call through the middleware chain uses.
const stackHint = 16 << 10

//go:noinline
func keepStack([]byte) {}

// taskGroup is errgroup.WithContext on pooled goroutines: Wait waits for every task and returns
// the first error, which also cancels the group's context.
type taskGroup struct {
	wg     sync.WaitGroup
	cancel context.CancelFunc
	once   sync.Once
	err    error
}

func newTaskGroup(ctx context.Context) (*taskGroup, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	return &taskGroup{cancel: cancel}, ctx
}

// Go runs fn in the group.
func (g *taskGroup) Go(fn func() error) {
	g.wg.Add(1)
	goTask(func() {
		defer g.wg.Done()
		if err := fn(); err != nil {
			g.once.Do(func() {
				g.err = err
				if g.cancel != nil {
					g.cancel()
				}
			})
		}
	})
}

// Wait waits for the group's tasks and returns the first error.
func (g *taskGroup) Wait() error {
	g.wg.Wait()
	if g.cancel != nil {
		g.cancel()
	}
	return g.err
}
