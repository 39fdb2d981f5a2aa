package recovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/envdr/envdr/envelope"
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
)

// regionCheck is one region's means to open records alone: its clients and its table.
type regionCheck struct {
	r     *regions.Region
	store *replicate.Store
	tally *tally
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
		return rec, OutcomeFailed, fmt.Errorf("region %s: record %s: key %s: %w", c.r.Name, rec.ID, w.KeyARN, err)
	}
	return rec, OutcomeOK, nil
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
		Unavailable: t.outcomes[OutcomeUnavailable], Skipped: t.outcomes[OutcomeSkipped],
		Calls: t.calls, MaxMillis: ms(t.max)}
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
