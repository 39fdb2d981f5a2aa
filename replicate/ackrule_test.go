package replicate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
)

func TestAckRule(t *testing.T) {
	now := time.Now()
	wrap := func(verified bool) *envelope.RegionWrap {
		w := &envelope.RegionWrap{KeyARN: "arn:aws:kms:r:1:key/k", Wrapped: []byte{1}, WrappedAt: now}
		if verified {
			w.VerifiedAt = now
		}
		return w
	}
	rec := func(ws map[string]*envelope.RegionWrap) *envelope.Record {
		return &envelope.Record{ID: "rec-1", Regions: ws}
	}
	all := []string{"a", "b", "c"}
	for _, c := range []struct {
		name    string
		rule    AckRule
		rec     *envelope.Record
		ok      bool
		missing []string
	}{
		{"all verified", AckRule{Required: all, Regions: all, SamplePercent: 100},
			rec(map[string]*envelope.RegionWrap{"a": wrap(true), "b": wrap(true), "c": wrap(true)}), true, nil},
		{"one unverified", AckRule{Required: all, Regions: all, SamplePercent: 100},
			rec(map[string]*envelope.RegionWrap{"a": wrap(true), "b": wrap(false), "c": wrap(true)}), false, []string{"b"}},
		{"one missing, verify none", AckRule{Required: all, Regions: all, SamplePercent: 0},
			rec(map[string]*envelope.RegionWrap{"a": wrap(false), "c": wrap(false)}), false, []string{"b"}},
		{"verify none, wraps suffice", AckRule{Required: all, Regions: all, SamplePercent: 0},
			rec(map[string]*envelope.RegionWrap{"a": wrap(false), "b": wrap(false), "c": wrap(false)}), true, nil},
		{"quorum of two", AckRule{Quorum: 2, Regions: all, SamplePercent: 100},
			rec(map[string]*envelope.RegionWrap{"a": wrap(true), "c": wrap(true)}), true, nil},
		{"quorum not met", AckRule{Quorum: 2, Regions: all, SamplePercent: 100},
			rec(map[string]*envelope.RegionWrap{"a": wrap(true), "b": wrap(false)}), false, []string{"b", "c"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ok, missing := c.rule.Met(c.rec)
			require.Equal(t, c.ok, ok)
			require.Equal(t, c.missing, missing)
		})
	}
	// Sampling is a stable function of the ID: every worker and redelivery agrees.
	r, other := AckRule{SamplePercent: 10}, AckRule{SamplePercent: 10, Regions: []string{"x"}}
	n := 0
	for i := range 10000 {
		id := "rec-" + string(rune('a'+i%26)) + time.Duration(i).String()
		if r.Sampled(id) != other.Sampled(id) {
			t.Fatal("Sampled is not stable")
		}
		if r.Sampled(id) {
			n++
		}
	}
	require.InDelta(t, 1000, n, 200, "about 10%% of IDs sampled")
}
