// Package procs lets a daemon that is mostly waiting on the network run on as few Ps
// (GOMAXPROCS) as its load needs, instead of one per core.
//
// Why: envdr run spends most of its time blocked on AWS calls. With a P per core, every
// response wakes an idle thread on another core (a futex wake, and on a VM an inter-processor
// interrupt), and idle Ps spin looking for work: at the daemon's usual rates that costs more CPU
// per envelope than the work itself (issue 14; docs/BENCH.md, "A lean daemon"). One P serves the
// same load with fewer wake-ups. When the load grows, Ps are added at once; when it falls, they
// are taken back slowly.
//
// GOMAXPROCS set in the environment turns this off: the operator's choice stands.
package procs

import (
	"context"
	"os"
	"runtime"
	"time"
)

// Policy is when Ps are added and taken back.
type Policy struct {
	Every time.Duration // how often the process's CPU use is sampled
	Busy  float64       // add Ps (double them) when the last window used this share of the current Ps
	Idle  float64       // take one P back when this share of one P fewer would have done...
	Calm  int           // ...for this many windows in a row
}

// DefaultPolicy samples twice a second, doubles the Ps above 70 % use, and takes one back after
// 3 s under 35 % of one P fewer.
var DefaultPolicy = Policy{Every: 500 * time.Millisecond, Busy: 0.70, Idle: 0.35, Calm: 6}

// Next returns the Ps for the next window, given the current Ps, the most allowed, the CPU
// time the process used in the last window and the window's length; calm counts the quiet
// windows in a row so far and is updated.
func (p Policy) Next(cur, most int, used, window time.Duration, calm *int) int {
	if window <= 0 || cur < 1 {
		return max(cur, 1)
	}
	capacity := float64(cur) * float64(window)
	if float64(used) >= p.Busy*capacity && cur < most {
		*calm = 0
		return min(cur*2, most)
	}
	if cur > 1 && float64(used) < p.Idle*float64(cur-1)*float64(window) {
		*calm++
		if *calm >= p.Calm {
			*calm = 0
			return cur - 1
		}
		return cur
	}
	*calm = 0
	return cur
}

// Follow sets one P and, in a goroutine of its own, follows the process's load until ctx ends,
// then restores the Ps it found (the runtime's default: the CPU count or container quota at
// start; setting GOMAXPROCS ends the runtime's own updates of it). It does nothing when
// GOMAXPROCS is set in the environment, when there is one P anyway, or where the process's CPU
// time cannot be read. onChange, if not nil, is told of each change.
func Follow(ctx context.Context, p Policy, onChange func(from, to int)) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	most := runtime.GOMAXPROCS(0)
	if most <= 1 {
		return
	}
	startCPU, ok := processCPU()
	if !ok {
		return
	}
	set := runtime.GOMAXPROCS
	set(1)
	if onChange != nil {
		onChange(most, 1)
	}
	go func() {
		defer set(most)
		t := time.NewTicker(p.Every)
		defer t.Stop()
		follow(ctx, p, most, time.Now(), startCPU, t.C, processCPU, set, onChange)
	}()
}

// follow adjusts the Ps, starting from one (at start, having used startCPU), at each tick until ctx ends. Its clock, CPU reader
// and GOMAXPROCS setter are given so that tests can fake them.
func follow(ctx context.Context, p Policy, most int, start time.Time, startCPU time.Duration, ticks <-chan time.Time,
	cpu func() (time.Duration, bool), set func(int) int, onChange func(from, to int)) {
	cur, calm := 1, 0
	last, lastAt := startCPU, start
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticks:
			used, _ := cpu()
			n := p.Next(cur, most, used-last, now.Sub(lastAt), &calm)
			last, lastAt = used, now
			if n != cur {
				set(n)
				if onChange != nil {
					onChange(cur, n)
				}
				cur = n
			}
		}
	}
}
