package recovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// Outcomes of checking one record in one region.
const (
	OutcomeOK            = "ok"             // the region's wrap decrypted alone and the commitment matched
	OutcomeNoWrap        = "no_wrap"        // the record holds no wrap for the region
	OutcomeNoRecord      = "no_record"      // the region's table has no such record
	OutcomeFailed        = "failed"         // KMS refused the wrap, or the commitment did not match
	OutcomeUnavailable   = "unavailable"    // the region's endpoints did not answer
	OutcomeSkipped       = "skipped"        // not needed (drill: another surviving region already opened it)
	OutcomeNotReplicated = "not_replicated" // drill: no surviving region holds a wrap
	OutcomeNotCurrent    = "not_current"    // verify --require-current: the wrap opens, but under a key that is not the region's current key
	// outcomeFallback counts, beside OutcomeOK, the drill checks where the region's own wrap was
	// bad and another wrap in its table opened through it alone.
	outcomeFallback = "fallback"
)

// regionCheck is one region's means to open records alone: its clients and its table.
type regionCheck struct {
	r     *regions.Region
	store *replicate.Store
	tally *tally
	// current, when set, is the region's current key (the configured key, an alias resolved):
	// a wrap under any other key is OutcomeNotCurrent (verify --require-current).
	current string
}

// check proves that region c can open the record on its own: the record as read from c's own
// table (rec when it came from there, else a fresh strongly consistent read), c's wrap
// decrypted with c's KMS and the context, the key commitment checked, the DEK wiped at once.
// It returns the record it checked (to update), the outcome, and why when not ok.
func (c *regionCheck) check(ctx context.Context, rec *envelope.Record, fromOwnTable bool) (*envelope.Record, string, error) {
	if !fromOwnTable {
		own, err := c.store.Get(ctx, rec.ID)
		switch {
		case errors.Is(err, replicate.ErrRecordNotFound):
			return nil, OutcomeNoRecord, fmt.Errorf("region %s: record %s is not in the region's table", c.r.Name, rec.ID)
		case err != nil:
			if regions.IsConnError(err) {
				return nil, OutcomeUnavailable, err
			}
			return nil, OutcomeFailed, err
		}
		if !bytes.Equal(own.Commitment, rec.Commitment) {
			return own, OutcomeFailed, fmt.Errorf("region %s: record %s: %w (the region's table holds another commitment)", c.r.Name, rec.ID, envelope.ErrCommitmentMismatch)
		}
		rec = own
	}
	w := rec.Regions[c.r.Name]
	if !w.HasWrap() {
		return rec, OutcomeNoWrap, fmt.Errorf("region %s: record %s has no wrap for this region", c.r.Name, rec.ID)
	}
	start := time.Now()
	dek, err := c.r.DecryptRaw(ctx, w.Wrapped, w.KeyARN, rec.Context.Map())
	c.tally.observe(time.Since(start))
	if err != nil {
		if errors.Is(err, regions.ErrRegionUnavailable) {
			return rec, OutcomeUnavailable, err
		}
		return rec, OutcomeFailed, fmt.Errorf("record %s: %w", rec.ID, err)
	}
	err = envelope.CheckCommitment(dek, rec.Commitment)
	envelope.Wipe(dek)
	if err != nil {
		return rec, OutcomeFailed, fmt.Errorf("region %s: record %s: key %s: %w (a bad wrap counts as none: envdr rewrap --region %s replaces it)", c.r.Name, rec.ID, w.KeyARN, err, c.r.Name)
	}
	if c.current != "" && w.KeyARN != c.current {
		return rec, OutcomeNotCurrent, fmt.Errorf("region %s: record %s: the wrap is under key %s, not the region's current key %s (envdr rewrap --region %s moves it)",
			c.r.Name, rec.ID, w.KeyARN, c.current, c.r.Name)
	}
	return rec, OutcomeOK, nil
}

// RequireCurrentByDefault reports whether verify checks by default that every wrap is under its
// region's current key: when a region lists previous_keys (a rotation to a new key is under
// way) or names its key by an alias (which may have moved). Then a passing verify is the gate
// before a key may be retired (docs/DRILLS.md).
func RequireCurrentByDefault(cfg *config.Config) bool {
	for _, r := range cfg.Regions {
		if len(r.PreviousKeys) > 0 || regions.KeyID(r.Key) == "" {
			return true
		}
	}
	return false
}

// currentKey resolves region r's configured key (an alias to its key) for --require-current.
func currentKey(ctx context.Context, r *regions.Region) (string, error) {
	ki, err := r.DescribeKey(ctx)
	if err != nil {
		return "", fmt.Errorf("region %s: resolving the current key for --require-current: %w", r.Name, err)
	}
	return ki.ARN, nil
}

// tally counts one region's outcomes and KMS latencies in constant memory.
type tally struct {
	mu       sync.Mutex
	outcomes map[string]int64
	calls    int64
	total    time.Duration
	max      time.Duration
}

func newTally() *tally { return &tally{outcomes: map[string]int64{}} }

func (t *tally) count(outcome string) {
	t.mu.Lock()
	t.outcomes[outcome]++
	t.mu.Unlock()
}

func (t *tally) observe(d time.Duration) {
	t.mu.Lock()
	t.calls++
	t.total += d
	if d > t.max {
		t.max = d
	}
	t.mu.Unlock()
}

// RegionTally is one region's outcome counts and KMS Decrypt timings.
type RegionTally struct {
	Region      string `json:"region"`
	OK          int64  `json:"ok"`
	NoWrap      int64  `json:"no_wrap"`
	NoRecord    int64  `json:"no_record"`
	Failed      int64  `json:"failed"`
	Unavailable int64  `json:"unavailable"`
	Skipped     int64  `json:"skipped"`
	NotCurrent  int64  `json:"not_current,omitempty"`
	// Fallbacks: drill checks that opened with another wrap than the region's own, bad one.
	Fallbacks int64 `json:"fallback_wraps,omitempty"`
	// Calls, MeanMillis and MaxMillis describe the region's KMS Decrypt calls.
	Calls      int64   `json:"kms_calls"`
	MeanMillis float64 `json:"kms_mean_ms"`
	MaxMillis  float64 `json:"kms_max_ms"`
}

func (t *tally) snapshot(region string) RegionTally {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := RegionTally{Region: region, OK: t.outcomes[OutcomeOK], NoWrap: t.outcomes[OutcomeNoWrap],
		NoRecord: t.outcomes[OutcomeNoRecord], Failed: t.outcomes[OutcomeFailed],
		Unavailable: t.outcomes[OutcomeUnavailable], Skipped: t.outcomes[OutcomeSkipped], NotCurrent: t.outcomes[OutcomeNotCurrent],
		Fallbacks: t.outcomes[outcomeFallback],
		Calls:     t.calls, MaxMillis: ms(t.max)}
	if t.calls > 0 {
		rt.MeanMillis = ms(t.total / time.Duration(t.calls))
	}
	return rt
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sortFailures(f []Failure) {
	sort.Slice(f, func(i, j int) bool {
		if f[i].ID != f[j].ID {
			return f[i].ID < f[j].ID
		}
		return f[i].Region < f[j].Region
	})
}

// rate returns n per second over d.
func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// wrapsIn are the wraps a drill opens record id's envelope with in region: the region's wrap from
// its own table first, then the header's own wrap where the region opens it (a bad recorded wrap
// falls back to it: issue 20, finding 4). With none, why says what was missing.
func wrapsIn(ctx context.Context, cfg *config.Config, c *regionCheck, hdr *envelope.Header, id, region string) (wraps []*envelope.Wrap, why string) {
	rec, recErr := c.store.Get(ctx, id)
	if recErr == nil && rec.Wrap(region) != nil {
		w := rec.Wrap(region)
		w.Source = "record"
		wraps = append(wraps, w)
	}
	if hw := HeaderWrapIn(cfg, hdr, region); hw != nil {
		wraps = append(wraps, hw)
	}
	if len(wraps) == 0 {
		why = "no wrap for this region in its table"
		if recErr != nil {
			why = trimErr(recErr)
		}
	}
	return wraps, why
}

// HeaderWrapIn is the envelope's own wrap as region opens it: as it is in the home region, or
// through the region's replica of a multi-Region key in an mrk region; nil otherwise. open and
// drill fall back to it when the region's recorded wrap does not open (issue 20, finding 4).
func HeaderWrapIn(cfg *config.Config, hdr *envelope.Header, region string) *envelope.Wrap {
	if region == hdr.HomeRegion {
		w := hdr.Wrap()
		w.Source = "header"
		return w
	}
	if rc, _ := cfg.Region(region); rc.Mode == config.ModeMRK && regions.IsMultiRegionKeyARN(hdr.KeyARN) {
		if arn, err := regions.ReplicaARN(hdr.KeyARN, region); err == nil {
			return &envelope.Wrap{Region: region, KeyARN: arn, Wrapped: hdr.WrappedDEK, Source: "header"}
		}
	}
	return nil
}

// badWrap reports whether err says the wrap itself is no wrap of the record's DEK (KMS refused
// it, or it opened to a DEK that fails the commitment), not that the region failed to answer.
func badWrap(err error) bool {
	return errors.Is(err, envelope.ErrCommitmentMismatch) || errors.Is(err, regions.ErrInvalidCiphertext)
}

// checkWithFallback is check for drills: when c's own wrap is bad, the region still opens the
// record if another wrap in c's own table opens through c alone: another region's multi-Region
// wrap, through c's replica of that key. used names the wrap that opened ("" for c's own).
func (c *regionCheck) checkWithFallback(ctx context.Context, rec *envelope.Record, fromOwnTable bool) (own *envelope.Record, outcome, used string, err error) {
	own, outcome, err = c.check(ctx, rec, fromOwnTable)
	if outcome != OutcomeFailed || own == nil || !badWrap(err) || c.r.Mode != config.ModeMRK {
		return own, outcome, "", err
	}
	for _, n := range slices.Sorted(maps.Keys(own.Regions)) {
		w := own.Regions[n]
		if n == c.r.Name || !w.HasWrap() || !regions.IsMultiRegionKeyARN(w.KeyARN) {
			continue
		}
		arn, aerr := regions.ReplicaARN(w.KeyARN, c.r.Name)
		if aerr != nil {
			continue
		}
		dek, derr := c.r.DecryptRaw(ctx, w.Wrapped, arn, own.Context.Map())
		if derr != nil {
			continue
		}
		cerr := envelope.CheckCommitment(dek, own.Commitment)
		envelope.Wipe(dek)
		if cerr == nil {
			c.tally.count(outcomeFallback)
			return own, OutcomeOK, n + "'s multi-Region wrap", nil
		}
	}
	return own, outcome, "", err
}
