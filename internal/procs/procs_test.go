package procs

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	p := DefaultPolicy
	w := time.Second
	cases := []struct {
		name       string
		cur, most  int
		used       time.Duration
		calm, want int
		wantCalm   int
	}{
		{"busy one P doubles", 1, 8, 800 * time.Millisecond, 0, 2, 0},
		{"busy doubles up to the most", 4, 6, 3500 * time.Millisecond, 0, 6, 0},
		{"busy at the most stays", 2, 2, 2 * time.Second, 0, 2, 0},
		{"half used stays", 2, 2, time.Second, 3, 2, 0},
		{"one P never goes below one", 1, 4, 0, 5, 1, 0},
		{"quiet counts a calm window", 2, 4, 100 * time.Millisecond, 2, 2, 3},
		{"quiet long enough takes one back", 4, 4, 100 * time.Millisecond, 5, 3, 0},
		{"a busy window resets the calm", 2, 4, 600 * time.Millisecond, 5, 2, 0},
	}
	for _, c := range cases {
		calm := c.calm
		if got := p.Next(c.cur, c.most, c.used, w, &calm); got != c.want || calm != c.wantCalm {
			t.Errorf("%s: Next(%d, %d, %v) = %d (calm %d), want %d (calm %d)", c.name, c.cur, c.most, c.used, got, calm, c.want, c.wantCalm)
		}
	}
}

// follow starts from one P, doubles under load, comes back one at a time after calm windows,
// and stops at ctx's end.
func TestFollowTracksTheLoad(t *testing.T) {
	ticks := make(chan time.Time)
	var mu sync.Mutex
	var used time.Duration
	var sets []int
	cpu := func() (time.Duration, bool) { mu.Lock(); defer mu.Unlock(); return used, true }
	set := func(n int) int { mu.Lock(); defer mu.Unlock(); sets = append(sets, n); return 0 }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Unix(0, 0)
	go func() {
		defer close(done)
		follow(ctx, Policy{Every: time.Second, Busy: 0.7, Idle: 0.35, Calm: 2}, 4, start, 0, ticks, cpu, set, nil)
	}()
	at := start
	tick := func(cpuInWindow time.Duration) {
		mu.Lock()
		used += cpuInWindow
		mu.Unlock()
		at = at.Add(time.Second)
		ticks <- at
	}
	tick(900 * time.Millisecond)  // 1 -> 2
	tick(1900 * time.Millisecond) // 2 -> 4
	tick(3 * time.Second)         // stays at the most
	tick(100 * time.Millisecond)  // calm 1
	tick(100 * time.Millisecond)  // calm 2: 4 -> 3
	tick(100 * time.Millisecond)  // calm 1
	tick(100 * time.Millisecond)  // calm 2: 3 -> 2
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	want := []int{2, 4, 3, 2}
	if len(sets) != len(want) {
		t.Fatalf("GOMAXPROCS set to %v, want %v", sets, want)
	}
	for i := range want {
		if sets[i] != want[i] {
			t.Fatalf("GOMAXPROCS set to %v, want %v", sets, want)
		}
	}
}

// An operator's GOMAXPROCS is left alone.
func TestFollowLeavesAnExplicitGOMAXPROCS(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	calls := 0
	Follow(context.Background(), DefaultPolicy, func(int, int) { calls++ })
	if calls != 0 {
		t.Fatal("Follow changed GOMAXPROCS although the environment set it")
	}
}
