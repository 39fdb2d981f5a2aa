package replicate

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
)

func TestTaskGroupWaitsAndReturnsTheFirstError(t *testing.T) {
	g, ctx := newTaskGroup(context.Background())
	boom := errors.New("boom")
	var mu sync.Mutex
	ran := 0
	for i := range 50 {
		g.Go(func() error {
			mu.Lock()
			ran++
			mu.Unlock()
			if i == 7 {
				return boom
			}
			return nil
		})
	}
	if err := g.Wait(); !errors.Is(err, boom) {
		t.Fatalf("Wait = %v, want %v", err, boom)
	}
	if ran != 50 {
		t.Fatalf("%d of 50 tasks ran before Wait returned", ran)
	}
	if ctx.Err() == nil {
		t.Fatal("the group's context was not cancelled by the error")
	}
}

// deepCall uses about as much stack as an AWS SDK call's middleware chain (tens of frames).
//
//go:noinline
func deepCall(n int) byte {
	var frame [256]byte
	frame[n%len(frame)] = byte(n)
	if n == 0 {
		return frame[0]
	}
	return deepCall(n-1) + frame[n%len(frame)]
}

// BenchmarkTaskDeepStack compares a deep call on a fresh goroutine with one on a fresh goroutine
// that grows its stack once, shallow, first (goTask); a GC, untimed, between tasks as the daemon's
// GCs do. The ratio, not the times, is the figure.
func BenchmarkTaskDeepStack(b *testing.B) {
	const depth = 40 // ~12 KiB of frames
	run := func(b *testing.B, start func(func())) {
		var wg sync.WaitGroup
		for i := 0; i < b.N; i++ {
			wg.Add(1)
			start(func() { defer wg.Done(); deepCall(depth) })
			wg.Wait()
			b.StopTimer()
			runtime.GC()
			b.StartTimer()
		}
	}
	b.Run("go", func(b *testing.B) { run(b, func(fn func()) { go fn() }) })
	b.Run("goTask", func(b *testing.B) { run(b, goTask) })
}
