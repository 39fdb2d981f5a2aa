package main

import (
	"fmt"
	"io"
	"math"
	"sort"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// SLOQuantiles are the figures of one set of per-envelope protection times, in seconds.
type SLOQuantiles struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	P9999 float64 `json:"p99_99"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

// exactQuantiles computes the nearest-rank quantiles of the times: the q-quantile is the
// smallest time t such that at least q of all the times are <= t, i.e. the ceil(q*n)-th
// smallest. No interpolation: with n = 10,000, p99.99 is the second largest time, the one the
// 15 s goal is about. times is sorted in place.
func exactQuantiles(times []float64) SLOQuantiles {
	n := len(times)
	if n == 0 {
		return SLOQuantiles{}
	}
	sort.Float64s(times)
	rank := func(q float64) float64 {
		// Round q*n before the ceiling: 0.9999*10000 is 9998.999999999998 in floating point.
		k := int(math.Ceil(math.Round(q*float64(n)*1e6) / 1e6))
		return times[min(max(k, 1), n)-1]
	}
	var sum float64
	for _, t := range times {
		sum += t
	}
	return SLOQuantiles{Count: n, P50: rank(0.5), P99: rank(0.99), P999: rank(0.999), P9999: rank(0.9999),
		Max: times[n-1], Mean: sum / float64(n)}
}

// HistogramEstimate is what envdr_protection_seconds says, read from the daemon's /metrics: its
// count and sum over every label set, and the quantiles Prometheus's histogram_quantile would
// give (linear interpolation inside a bucket; the highest finite bound when the rank falls in
// +Inf).
type HistogramEstimate struct {
	Count uint64  `json:"count"`
	Sum   float64 `json:"sum"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	P9999 float64 `json:"p99_99"`
	// Buckets are the cumulative counts by upper bound (+Inf last), summed over label sets.
	Buckets []HistBucket `json:"buckets"`
}

// HistBucket is one cumulative bucket.
type HistBucket struct {
	LE    float64 `json:"le"` // math.Inf(1) is written as the JSON string below
	Count uint64  `json:"count"`
}

// MarshalJSON writes +Inf as the string "+Inf" (JSON has no infinity).
func (b HistBucket) MarshalJSON() ([]byte, error) {
	le := fmt.Sprintf("%g", b.LE)
	if math.IsInf(b.LE, 1) {
		le = `"+Inf"`
	}
	return []byte(fmt.Sprintf(`{"le":%s,"count":%d}`, le, b.Count)), nil
}

// parseProtectionHistogram reads a Prometheus text exposition and sums the histogram name over
// every label set (source_region, daemon_region). ok is false when the family is absent.
func parseProtectionHistogram(r io.Reader, name string) (HistogramEstimate, bool, error) {
	fams, err := parseMetrics(r)
	if err != nil {
		return HistogramEstimate{}, false, err
	}
	h, ok := histogramOf(fams, name)
	return h, ok, nil
}

// parseMetrics reads a Prometheus text exposition into its metric families.
func parseMetrics(r io.Reader) (map[string]*dto.MetricFamily, error) {
	// prometheus/common v0.66+ panics on a zero TextParser: the name validation scheme is chosen.
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// histogramOf is parseProtectionHistogram on parsed families.
func histogramOf(fams map[string]*dto.MetricFamily, name string) (HistogramEstimate, bool) {
	fam := fams[name]
	if fam == nil || fam.GetType() != dto.MetricType_HISTOGRAM {
		return HistogramEstimate{}, false
	}
	var h HistogramEstimate
	byLE := map[float64]uint64{}
	for _, m := range fam.GetMetric() {
		hist := m.GetHistogram()
		h.Count += hist.GetSampleCount()
		h.Sum += hist.GetSampleSum()
		inf := false
		for _, b := range hist.GetBucket() {
			byLE[b.GetUpperBound()] += b.GetCumulativeCount()
			inf = inf || math.IsInf(b.GetUpperBound(), 1)
		}
		if !inf { // +Inf is the sample count, whether or not the parser listed it
			byLE[math.Inf(1)] += hist.GetSampleCount()
		}
	}
	for le, c := range byLE {
		h.Buckets = append(h.Buckets, HistBucket{LE: le, Count: c})
	}
	sort.Slice(h.Buckets, func(i, j int) bool { return h.Buckets[i].LE < h.Buckets[j].LE })
	h.P50, h.P99, h.P999, h.P9999 = h.quantile(0.5), h.quantile(0.99), h.quantile(0.999), h.quantile(0.9999)
	return h, true
}

// quantile is Prometheus's histogram_quantile on the cumulative buckets: find the bucket the
// rank q*count falls in and interpolate linearly between its bounds (the first bucket starts at
// 0); a rank in the +Inf bucket answers the highest finite bound. NaN without samples.
func (h HistogramEstimate) quantile(q float64) float64 {
	if len(h.Buckets) == 0 || h.Count == 0 {
		return math.NaN()
	}
	rank := q * float64(h.Count)
	var prevLE float64
	var prevCount uint64
	for i, b := range h.Buckets {
		if float64(b.Count) >= rank {
			if math.IsInf(b.LE, 1) {
				if i == 0 {
					return math.NaN()
				}
				return h.Buckets[i-1].LE
			}
			in := b.Count - prevCount
			if in == 0 {
				return b.LE
			}
			return prevLE + (b.LE-prevLE)*(rank-float64(prevCount))/float64(in)
		}
		prevLE, prevCount = b.LE, b.Count
	}
	return h.Buckets[len(h.Buckets)-1].LE
}

// minus is h without the samples of an earlier scrape of the same histogram (the warm-up's),
// bucket by bucket, with its quantiles recomputed.
func (h HistogramEstimate) minus(before HistogramEstimate) HistogramEstimate {
	prev := map[float64]uint64{}
	for _, b := range before.Buckets {
		prev[b.LE] = b.Count
	}
	out := HistogramEstimate{Count: h.Count - min(before.Count, h.Count), Sum: h.Sum - before.Sum}
	for _, b := range h.Buckets {
		out.Buckets = append(out.Buckets, HistBucket{LE: b.LE, Count: b.Count - min(prev[b.LE], b.Count)})
	}
	out.P50, out.P99, out.P999, out.P9999 = out.quantile(0.5), out.quantile(0.99), out.quantile(0.999), out.quantile(0.9999)
	return out
}
