package sim

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Figures sum a campaign.
type Figures struct {
	Schedules, Ops, Events, Handled, Acks, Poison, Kills, Forged, Verifies, Rewraps, Drills, Opens int
	Violations                                                                                     int
	Failed                                                                                         []Result
	Errors                                                                                         []Result
	Elapsed                                                                                        time.Duration
	ByInvariant                                                                                    map[string]int
}

// Campaign runs n schedules from seeds first, first+1, ... with par at once.
func Campaign(ctx context.Context, first uint64, n, par int, progress io.Writer) Figures {
	start := time.Now()
	f := Figures{ByInvariant: map[string]int{}}
	var mu sync.Mutex
	seeds := make(chan uint64)
	var wg sync.WaitGroup
	for i := 0; i < par; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range seeds {
				res := Run(ctx, Generate(seed), nil)
				mu.Lock()
				f.Schedules++
				st := res.Stats
				f.Ops += st.Ops
				f.Events += st.Events
				f.Handled += st.Handled
				f.Acks += st.Acks
				f.Poison += st.Poison
				f.Kills += st.Kills
				f.Forged += st.Forged
				f.Verifies += st.Verifies
				f.Rewraps += st.Rewraps
				f.Drills += st.Drills
				f.Opens += st.Opens
				if res.Err != nil {
					f.Errors = append(f.Errors, res)
				}
				if len(res.Violations) > 0 {
					f.Violations += len(res.Violations)
					f.Failed = append(f.Failed, res)
					kinds := map[string]bool{}
					for _, v := range res.Violations {
						kinds[v.Inv] = true
					}
					for k := range kinds {
						f.ByInvariant[k]++
					}
					if progress != nil {
						fmt.Fprintf(progress, "seed %d: %d violations: %s\n", seed, len(res.Violations), res.Violations[0])
					}
				}
				if progress != nil && f.Schedules%100 == 0 {
					fmt.Fprintf(progress, "%d schedules, %d with violations, %s\n", f.Schedules, len(f.Failed), time.Since(start).Round(time.Second))
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		seeds <- first + uint64(i)
	}
	close(seeds)
	wg.Wait()
	sort.Slice(f.Failed, func(i, j int) bool { return f.Failed[i].Seed < f.Failed[j].Seed })
	f.Elapsed = time.Since(start)
	return f
}

func (f Figures) String() string {
	kinds := make([]string, 0, len(f.ByInvariant))
	for k, n := range f.ByInvariant {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("%d schedules, %d operations, %d events (%d forged), %d deliveries handled (%d acked, %d dead-lettered), %d kills, %d verify runs, %d rewraps, %d drills, %d opens; %d violations in %d schedules [%s]; %d setup errors; %s",
		f.Schedules, f.Ops, f.Events, f.Forged, f.Handled, f.Acks, f.Poison, f.Kills, f.Verifies, f.Rewraps, f.Drills, f.Opens,
		f.Violations, len(f.Failed), strings.Join(kinds, ", "), len(f.Errors), f.Elapsed.Round(time.Second))
}

// Shrink reduces a failing schedule's ops (delta debugging, ddmin) to a smaller list that still
// breaks invariant inv (an invariant's name, or a part of a violation's text); each candidate runs tries times (timing varies between runs).
func Shrink(ctx context.Context, s Schedule, inv string, tries int, budget time.Duration, log io.Writer) []bool {
	deadline := time.Now().Add(budget)
	fails := func(keep []bool) bool {
		for i := 0; i < tries; i++ {
			res := Run(ctx, s, keep)
			for _, v := range res.Violations {
				if v.Inv == inv || strings.Contains(v.String(), inv) {
					return true
				}
			}
		}
		return false
	}
	idx := make([]int, len(s.Ops))
	for i := range idx {
		idx[i] = i
	}
	mask := func(ix []int) []bool {
		k := make([]bool, len(s.Ops))
		for _, i := range ix {
			k[i] = true
		}
		return k
	}
	n := 2
	for len(idx) >= 2 && time.Now().Before(deadline) && ctx.Err() == nil {
		chunk := (len(idx) + n - 1) / n
		reduced := false
		for start := 0; start < len(idx); start += chunk {
			end := min(start+chunk, len(idx))
			rest := append(append([]int(nil), idx[:start]...), idx[end:]...)
			if len(rest) == 0 {
				continue
			}
			if fails(mask(rest)) {
				idx = rest
				n = max(n-1, 2)
				reduced = true
				if log != nil {
					fmt.Fprintf(log, "  shrink: %d ops still break %s\n", len(idx), inv)
				}
				break
			}
			if !time.Now().Before(deadline) {
				break
			}
		}
		if !reduced {
			if n >= len(idx) {
				break
			}
			n = min(2*n, len(idx))
		}
	}
	return mask(idx)
}

// KeepString renders a mask as the OPS= list that replays it.
func KeepString(keep []bool) string {
	var xs []string
	for i, k := range keep {
		if k {
			xs = append(xs, strconv.Itoa(i))
		}
	}
	return strings.Join(xs, ",")
}

// ParseKeep parses OPS= (empty: every op).
func ParseKeep(s string, n int) ([]bool, error) {
	if s == "" {
		return nil, nil
	}
	keep := make([]bool, n)
	for _, x := range strings.Split(s, ",") {
		i, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil || i < 0 || i >= n {
			return nil, fmt.Errorf("OPS: %q is not an op index below %d", x, n)
		}
		keep[i] = true
	}
	return keep, nil
}

// Report prints a failing schedule: its seed, violations, and (after shrinking) the ops that
// still break the first violated invariant, with the command that replays them.
func Report(ctx context.Context, w io.Writer, res Result, shrink bool, budget time.Duration, inv string) {
	s := Generate(res.Seed)
	fmt.Fprintf(w, "VIOLATION seed %d (replay: make sim SEED=%d)\n", res.Seed, res.Seed)
	for _, v := range res.Violations {
		fmt.Fprintf(w, "  %s\n", v)
	}
	if !shrink || len(res.Violations) == 0 {
		fmt.Fprint(w, s.describe(nil))
		return
	}
	if inv == "" {
		inv = res.Violations[0].Inv
	}
	keep := Shrink(ctx, s, inv, 2, budget, w)
	fmt.Fprintf(w, "shrunk schedule breaking %s (replay: make sim SEED=%d OPS=%s)\n", inv, res.Seed, KeepString(keep))
	fmt.Fprint(w, s.describe(keep))
}
