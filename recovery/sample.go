package recovery

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/envdr/envdr/replicate"
)

// Statistical verify and drill (issue 25): a uniform random sample of records instead of every
// record, with an exact upper confidence bound on the fraction of records a region cannot open.
//
// Acceptance sampling: if a fraction p of the records is bad, n records drawn at random miss
// every bad one with probability (1-p)^n. So n = ln(alpha) / ln(1-p) records with no failure
// give confidence 1-alpha that the defect rate is below p. With k failures the bound is the
// exact one-sided Clopper-Pearson bound: the p at which P(X <= k) = alpha for X ~ Binomial(n, p).

// SampleMethod names the sampling and the bound in reports.
const SampleMethod = "simple random sample of records (uniformly chosen DynamoDB scan segments, which partition records by key hash); exact one-sided Clopper-Pearson upper bound on the defect rate"

// SampleSize is the number of records to draw so that none failing gives the confidence that the
// defect rate is at most maxDefect: ceil(ln(1-confidence) / ln(1-maxDefect)).
func SampleSize(confidence, maxDefect float64) (int, error) {
	if !(confidence > 0 && confidence < 1) {
		return 0, fmt.Errorf("confidence %v: want a fraction in (0, 1), e.g. 99.9%%", confidence)
	}
	if !(maxDefect > 0 && maxDefect < 1) {
		return 0, fmt.Errorf("max defect %v: want a fraction in (0, 1), e.g. 0.1%%", maxDefect)
	}
	n := math.Ceil(math.Log(1-confidence) / math.Log1p(-maxDefect))
	if n > 1e9 {
		return 0, fmt.Errorf("confidence %v with max defect %v needs %.0f records; ask for less", confidence, maxDefect, n)
	}
	return int(n), nil
}

// UpperBound is the exact one-sided upper confidence bound on the defect rate after k defects
// in n records drawn at random (Clopper-Pearson): the p with P(X <= k; n, p) = 1-confidence.
func UpperBound(k, n int64, confidence float64) float64 {
	if n <= 0 {
		return 1
	}
	if k >= n {
		return 1
	}
	alpha := 1 - confidence
	if k == 0 {
		return 1 - math.Pow(alpha, 1/float64(n))
	}
	// P(X <= k) falls as p grows: bisect.
	lo, hi := float64(k)/float64(n), 1.0
	for range 100 {
		mid := (lo + hi) / 2
		if binomCDF(k, n, mid) > alpha {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// binomCDF is P(X <= k) for X ~ Binomial(n, p), summed in log space.
func binomCDF(k, n int64, p float64) float64 {
	lp, lq := math.Log(p), math.Log1p(-p)
	lgN, _ := math.Lgamma(float64(n + 1))
	sum := 0.0
	for i := int64(0); i <= k; i++ {
		lgI, _ := math.Lgamma(float64(i + 1))
		lgNI, _ := math.Lgamma(float64(n - i + 1))
		sum += math.Exp(lgN - lgI - lgNI + float64(i)*lp + float64(n-i)*lq)
	}
	return min(sum, 1)
}

// ParsePercent reads "99.9%", "0.1%" or a fraction "0.999".
func ParsePercent(s string) (float64, error) {
	t := strings.TrimSpace(s)
	pct := strings.HasSuffix(t, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(t, "%"), 64)
	if err != nil {
		return 0, fmt.Errorf("%q: want a percentage like 99.9%% or a fraction like 0.999", s)
	}
	if pct {
		v /= 100
	}
	if !(v > 0 && v < 1) {
		return 0, fmt.Errorf("%q: want more than 0%% and less than 100%%", s)
	}
	return v, nil
}

// Sampling chooses what part of the table a verify or drill reads.
type Sampling struct {
	// Shard, when Count > 1, reads only this process's part of the scan (--shard i/N): the
	// segments of one parallel scan of Segments x Count segments, split without overlap.
	Shard Shard
	// Sample, when > 0, reads a uniform random sample of that many records instead of every
	// record (SampleMethod), and reports the upper bound on the defect rate at Confidence.
	// Confidence with MaxDefect (both in (0,1)) sets Sample to SampleSize and passes only when
	// the bound is at most MaxDefect.
	Sample                int
	Confidence, MaxDefect float64
	// Seed, when non-zero, fixes the sample (tests, a replay); zero draws a random one.
	Seed uint64
}

// Shard is one process's part of a scan: shard Index of Count (--shard i/N, 1-based on the
// command line).
type Shard struct{ Index, Count int }

// ParseShard reads "i/N" with 1 <= i <= N.
func ParseShard(s string) (Shard, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 1 || i > n || n > 1000 {
		return Shard{}, fmt.Errorf("--shard %q: want i/N with 1 <= i <= N <= 1000, e.g. 2/4", s)
	}
	return Shard{Index: i - 1, Count: n}, nil
}

// String is the command-line form.
func (s Shard) String() string {
	if s.Count <= 1 {
		return ""
	}
	return fmt.Sprintf("%d/%d", s.Index+1, s.Count)
}

// Segments gives the DynamoDB parallel-scan segments of shard s when each shard reads perShard
// of them: total is TotalSegments (perShard x Count), segments the Segment numbers this shard
// reads. N processes given the same perShard read every item exactly once between them.
func (s Shard) Segments(perShard int) (total int, segments []int) {
	p := shardPlan(max(perShard, 1), s)
	return p.total, p.segments
}

// plan is the set of scan segments a run reads: its positions map to DynamoDB segment numbers of
// total (Segment/TotalSegments).
type plan struct {
	total    int
	segments []int
}

// shardPlan gives shard s of a scan in segments per shard: the segments s*segments up to
// (s+1)*segments-1 of segments*s.Count, so N processes with the same --segments split one
// parallel scan without overlap.
func shardPlan(segments int, s Shard) plan {
	if s.Count < 1 {
		s.Count = 1
	}
	p := plan{total: segments * s.Count}
	for i := range segments {
		p.segments = append(p.segments, s.Index*segments+i)
	}
	return p
}

// probeRecords estimates the table's record count for samplePlan from a few random scan segments,
// finest first (TotalSegments 1,000,000, then 10,000, 100, 1): the first division whose probed
// segments hold a record each on average gives records per segment x segments. It reads at most
// probeSegments small segments per division instead of asking DescribeTable, whose item count
// DynamoDB Local computes by counting the whole table (timing out at a million records on a
// busy machine) and AWS refreshes only every six hours. The estimate only sizes the segments;
// the sample stays uniform however far off it is.
func probeRecords(ctx context.Context, store *replicate.Store, rng *rand.Rand) (int64, error) {
	const probeSegments = 16
	for _, total := range []int{1_000_000, 10_000, 100, 1} {
		var found int64
		for i := range min(probeSegments, total) {
			seg := i
			if total > probeSegments {
				seg = rng.IntN(total)
			}
			p, err := store.ScanPage(ctx, seg, total, "", 0)
			if err != nil {
				return 0, err
			}
			found += int64(len(p.Records) + len(p.Bad))
			if total == 1 {
				for p.Next != "" { // a tiny table: count it
					if p, err = store.ScanPage(ctx, 0, 1, p.Next, 0); err != nil {
						return 0, err
					}
					found += int64(len(p.Records) + len(p.Bad))
				}
			}
		}
		if n := int64(min(probeSegments, total)); found >= n || total == 1 {
			return found * int64(total) / n, nil
		}
	}
	return 0, nil
}

// samplePlan draws the segments a sample of n records reads: the table's approximate record
// count split into segments of about perSegment records each, visited in a random order. Every
// record falls in exactly one segment by the hash of its key, which is independent of whether it
// opens, so the first n records read this way are a simple random sample.
func samplePlan(records int64, rng *rand.Rand) plan {
	const perSegment = 32
	total := int(min(max(records/perSegment, 1), 1_000_000))
	return plan{total: total, segments: rng.Perm(total)}
}

// ErrSampleTooSmall: the table holds fewer records than the sample asks for.
var ErrSampleTooSmall = errors.New("the table holds fewer records than the sample")
