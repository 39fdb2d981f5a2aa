package recovery

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// DefaultRegionTimeout bounds a region's reachability probe (--region-timeout).
const DefaultRegionTimeout = 5 * time.Second

// probeID is the record ID a reachability probe asks for: no record has it, so any region that
// answers answers "not found".
const probeID = "envdr-reachability-probe"

// SkippedRegion is a region an operation left out because it did not answer, and why.
type SkippedRegion struct {
	Region string `json:"region"`
	Reason string `json:"reason"`
}

// Probe asks region r's table replica for a record that does not exist, within timeout, and
// returns why the region counts as lost: unreachable, silent past the timeout, or answering 5xx
// (regions.IsOutage). Any other answer ("not found", or even access denied, which the real
// operation will then report) means the region is there: "".
func Probe(ctx context.Context, cfg *config.Config, r *regions.Region, timeout time.Duration) string {
	if timeout <= 0 {
		timeout = DefaultRegionTimeout
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	store := replicate.NewStore(cfg.Table, r.Name, r.DynamoDB(), cfg.RegionNames())
	_, err := store.Get(tctx, probeID)
	switch {
	case err == nil || ctx.Err() != nil:
		return ""
	case tctx.Err() != nil:
		return fmt.Sprintf("its table replica did not answer within %s", timeout)
	case regions.IsConnError(err):
		return "unreachable: " + shortCause(err)
	case regions.IsOutage(err):
		return "server error: " + shortCause(err)
	}
	return ""
}

// shortCause is the end of an error's message, where an SDK error keeps its cause ("... dial
// tcp ...: connection refused"); the region is named by the caller.
func shortCause(err error) string {
	s := err.Error()
	if len(s) > 100 {
		s = "…" + s[len(s)-100:]
	}
	return s
}

// ProbeAll probes the named regions at once and returns the lost ones, in the order given.
func ProbeAll(ctx context.Context, cfg *config.Config, topo *regions.Topology, names []string, timeout time.Duration) []SkippedRegion {
	reasons := make([]string, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		r, err := topo.Region(n)
		if err != nil {
			continue // not in this topology: the caller excluded it
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			reasons[i] = Probe(ctx, cfg, r, timeout)
		}()
	}
	wg.Wait()
	var lost []SkippedRegion
	for i, n := range names {
		if reasons[i] != "" {
			lost = append(lost, SkippedRegion{Region: n, Reason: reasons[i]})
		}
	}
	return lost
}

// ReadOrder is the order in which a reader picks the table replica to read: the home region,
// then the seal order.
func ReadOrder(cfg *config.Config) []string {
	order := []string{cfg.HomeRegion}
	for _, n := range cfg.SealOrder() {
		if !slices.Contains(order, n) {
			order = append(order, n)
		}
	}
	return order
}

// FirstReachable returns the first region in order whose table replica answers, and the regions
// skipped before it (with why). It fails, naming every region and reason, when none answers.
func FirstReachable(ctx context.Context, cfg *config.Config, topo *regions.Topology, order []string, timeout time.Duration) (string, []SkippedRegion, error) {
	var skipped []SkippedRegion
	for _, n := range order {
		r, err := topo.Region(n)
		if err != nil {
			continue
		}
		why := Probe(ctx, cfg, r, timeout)
		if ctx.Err() != nil {
			return "", skipped, ctx.Err()
		}
		if why == "" {
			return n, skipped, nil
		}
		skipped = append(skipped, SkippedRegion{Region: n, Reason: why})
	}
	return "", skipped, fmt.Errorf("%w: no table replica answered (tried %v): %v", regions.ErrRegionUnavailable, order, skipped)
}
