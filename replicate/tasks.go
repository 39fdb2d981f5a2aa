package replicate

import (
	"context"
	"sync"
)

// Events' work runs on fresh goroutines that grow their stacks once, while shallow, to what an
// AWS SDK call needs. An SDK call runs through a deep middleware chain, so a fresh goroutine
// otherwise grows (copies) its stack several times in its first call: a tenth of the daemon's
// CPU per envelope went to that (issue 14, pprof). The goroutines used to come from an ants pool
// so they kept a grown stack; with the stack grown in one step a pool no longer pays
// (BenchmarkTaskPoolFanOut, docs/BENCH.md "ants or errgroup"), so there is none. A task never
// waits for a free goroutine, so nested tasks cannot deadlock.

// goTask runs fn on a new goroutine whose stack is grown first.
func goTask(fn func()) {
	go func() { growStack(); fn() }()
}

// growStack grows the calling goroutine's stack once, while it is shallow, to what an AWS SDK
// call needs. Growing it there copies one frame; growing it deep inside the SDK's middleware
// chain copies and adjusts dozens, several times over.
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

// taskGroup is errgroup.WithContext whose tasks grow their stacks first: Wait waits for every
// task and returns the first error, which also cancels the group's context. Its zero value is a
// group without a context (pipeline.go makes one with &taskGroup{}), which a nil *errgroup.Group
// is not, hence the few lines here instead of errgroup itself.
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
