package recovery

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Percentiles by nearest rank: over 10,000 envelopes taking 1..10,000 ms in any order, p50 is the
// 5,000th, p99 the 9,900th, p99.9 the 9,990th, p99.99 the 9,999th; over fewer than 10,000,
// p99.99 is the maximum. Envelopes never protected are counted apart.
func TestGamedayPercentilesNearestRank(t *testing.T) {
	v := make([]float64, 10000)
	for i := range v {
		v[i] = float64(i+1) / 1000
	}
	rand.Shuffle(len(v), func(i, j int) { v[i], v[j] = v[j], v[i] })
	p := percentiles(v, 10003)
	require.Equal(t, Percentiles{Envelopes: 10000, Never: 3, P50: 5, P99: 9.9, P999: 9.99, P9999: 9.999, Max: 10}, p)

	small := percentiles([]float64{3, 1, 2}, 3)
	require.Equal(t, Percentiles{Envelopes: 3, P50: 2, P99: 3, P999: 3, P9999: 3, Max: 3}, small)
	require.Equal(t, Percentiles{Never: 2}, percentiles(nil, 2))
}

// The replication policy decides when an envelope counts as protected: every required region,
// or, with a quorum, that many of all; the moment is the opening that met it.
func TestGamedayPolicyMet(t *testing.T) {
	t0 := time.Now()
	e := &gdEnvelope{opened: map[string]time.Time{"a": t0.Add(3 * time.Second), "b": t0.Add(time.Second), "c": t0.Add(2 * time.Second)}}
	g := &gameday{}
	g.rule.Required, g.rule.Regions = []string{"a", "b"}, []string{"a", "b", "c"}
	at, last, ok := g.policyMet(e)
	require.True(t, ok)
	require.Equal(t, "a", last)
	require.Equal(t, t0.Add(3*time.Second), at)

	g.rule.Required, g.rule.Quorum = nil, 2
	at, last, ok = g.policyMet(e)
	require.True(t, ok)
	require.Equal(t, "c", last, "the second region to open it meets a quorum of 2")
	require.Equal(t, t0.Add(2*time.Second), at)

	g.rule.Required, g.rule.Quorum = []string{"a", "d"}, 0
	_, _, ok = g.policyMet(e)
	require.False(t, ok, "d never opened it")
}
