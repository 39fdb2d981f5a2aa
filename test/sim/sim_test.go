package sim

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Knobs: ENVDR_SIM_N schedules (default 50: the short form), ENVDR_SIM_SEED the first seed (a
// replay runs exactly that seed when ENVDR_SIM_N is unset), ENVDR_SIM_OPS the ops to keep (a
// shrunk schedule), ENVDR_SIM_PAR schedules at once, ENVDR_SIM_SHRINK=0 to skip shrinking,
// ENVDR_SIM_INV the invariant a replay's shrinking keeps broken (default: the first broken),
// ENVDR_SIM_HISTORY=1 prints a replay's history of the records a violation names.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

func TestSimulation(t *testing.T) {
	ctx := context.Background()
	seedStr := os.Getenv("ENVDR_SIM_SEED")
	if seedStr != "" && os.Getenv("ENVDR_SIM_N") == "" {
		seed, err := strconv.ParseUint(seedStr, 10, 64)
		if err != nil {
			t.Fatalf("ENVDR_SIM_SEED=%q: %v", seedStr, err)
		}
		s := Generate(seed)
		keep, err := ParseKeep(os.Getenv("ENVDR_SIM_OPS"), len(s.Ops))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("replaying seed %d:\n%s", seed, s.describe(keep))
		if os.Getenv("ENVDR_SIM_HISTORY") != "" {
			// Every version of the violating records' region items, in the order replicas got them.
			debugHook = func(w *world, res Result) {
				for _, line := range w.historyOf(res.Violations) {
					t.Log(line)
				}
			}
			defer func() { debugHook = nil }()
		}
		res := Run(ctx, s, keep)
		if res.Err != nil {
			t.Fatalf("seed %d: %v", seed, res.Err)
		}
		t.Logf("seed %d: %+v in %s", seed, res.Stats, res.Duration.Round(time.Millisecond))
		for _, n := range res.Notes {
			t.Logf("note: %s", n)
		}
		if len(res.Violations) > 0 {
			var b strings.Builder
			shrink := keep == nil && os.Getenv("ENVDR_SIM_SHRINK") != "0"
			Report(ctx, &b, res, shrink, 10*time.Minute, os.Getenv("ENVDR_SIM_INV"))
			t.Fatal(b.String())
		}
		return
	}
	n := envInt(t, "ENVDR_SIM_N", 50)
	first := uint64(1)
	if seedStr != "" {
		s, err := strconv.ParseUint(seedStr, 10, 64)
		if err != nil {
			t.Fatalf("ENVDR_SIM_SEED=%q: %v", seedStr, err)
		}
		first = s
	}
	// Most of a schedule's time is waiting (replication lag, retries): run many at once.
	par := envInt(t, "ENVDR_SIM_PAR", max(8, 8*runtime.GOMAXPROCS(0)))
	f := Campaign(ctx, first, n, par, testWriter{t})
	t.Logf("simulation: %s", f)
	for _, r := range f.Errors {
		t.Errorf("seed %d: the schedule could not run: %v", r.Seed, r.Err)
	}
	if len(f.Failed) == 0 {
		return
	}
	shrink := os.Getenv("ENVDR_SIM_SHRINK") != "0"
	for i, r := range f.Failed {
		var b strings.Builder
		Report(ctx, &b, r, shrink && i < 3, 3*time.Minute, "")
		t.Error(b.String())
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
