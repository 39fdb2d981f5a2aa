package recovery

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// n = ln(alpha) / ln(1-p): the acceptance-sampling size (issue 25's anchor).
func TestSampleSize(t *testing.T) {
	for _, c := range []struct {
		conf, defect float64
		want         int
	}{
		{0.999, 0.001, 6905},   // ln(0.001)/ln(0.999) = 6904.3
		{0.999, 0.0001, 69075}, // 69074.1
		{0.95, 0.01, 299},
		{0.9, 0.2, 11},
	} {
		got, err := SampleSize(c.conf, c.defect)
		require.NoError(t, err)
		require.Equal(t, c.want, got, "%v %v", c.conf, c.defect)
	}
	for _, bad := range [][2]float64{{1, 0.1}, {0, 0.1}, {0.9, 0}, {0.9, 1}, {math.NaN(), 0.1}} {
		_, err := SampleSize(bad[0], bad[1])
		require.Error(t, err, "%v", bad)
	}
}

// The Clopper-Pearson upper bound: with no defect it is 1 - alpha^(1/n) (so SampleSize's n
// gives exactly the max defect); with k defects it solves P(X <= k; n, p) = alpha. Reference
// values from an independent computation: bisection over the exact binomial sum with integer
// binomial coefficients (Python's math.comb), which equals the beta quantile
// Beta^-1(1-alpha; k+1, n-k).
func TestUpperBound(t *testing.T) {
	require.InDelta(t, 0.001, UpperBound(0, 6905, 0.999), 1e-6)
	require.InDelta(t, 1-math.Pow(0.05, 1.0/100), UpperBound(0, 100, 0.95), 1e-12)
	require.InDelta(t, 0.04656, UpperBound(1, 100, 0.95), 1e-5)
	require.InDelta(t, 0.10225, UpperBound(5, 100, 0.95), 1e-5)
	require.InDelta(t, 0.01001, UpperBound(3, 1000, 0.99), 1e-5)
	require.Equal(t, 1.0, UpperBound(5, 5, 0.95))
	require.Equal(t, 1.0, UpperBound(0, 0, 0.95))
	// It only grows with k.
	prev := 0.0
	for k := int64(0); k < 20; k++ {
		b := UpperBound(k, 500, 0.999)
		require.Greater(t, b, prev)
		prev = b
	}
}

func TestParsePercentAndShard(t *testing.T) {
	for in, want := range map[string]float64{"99.9%": 0.999, "0.1%": 0.001, "0.95": 0.95, " 50% ": 0.5} {
		got, err := ParsePercent(in)
		require.NoError(t, err)
		require.InDelta(t, want, got, 1e-12, in)
	}
	for _, bad := range []string{"100%", "0%", "1", "abc", "-5%", ""} {
		_, err := ParsePercent(bad)
		require.Error(t, err, bad)
	}
	s, err := ParseShard("2/4")
	require.NoError(t, err)
	require.Equal(t, Shard{Index: 1, Count: 4}, s)
	require.Equal(t, "2/4", s.String())
	for _, bad := range []string{"0/4", "5/4", "1", "a/b", "1/0", "1/1001"} {
		_, err := ParseShard(bad)
		require.Error(t, err, bad)
	}
}

// N shards of the same --segments cover one parallel scan's segments exactly once.
func TestShardPlansPartitionTheScan(t *testing.T) {
	seen := map[int]int{}
	for i := range 4 {
		p := shardPlan(8, Shard{Index: i, Count: 4})
		require.Equal(t, 32, p.total)
		require.Len(t, p.segments, 8)
		for _, s := range p.segments {
			seen[s]++
		}
	}
	require.Len(t, seen, 32)
	for s, n := range seen {
		require.Equal(t, 1, n, "segment %d", s)
	}
	sp := samplePlan(1000, rand.New(rand.NewPCG(1, 2)))
	require.Equal(t, 250, sp.total)
	require.Len(t, sp.segments, 250)
	require.Equal(t, 1, samplePlan(0, rand.New(rand.NewPCG(1, 2))).total)
}
