package main

import (
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Files of section 3's curve and call counts (scripts/bench.sh): quota-q<Q>-p<procs>.json,
// one run of procs daemons against the stand-in throttled at Q req/s with kms_rate unset; and
// mode-<name>.json, a short unthrottled run of one key mode, wrap and verification.
const (
	globQuota = "quota-q*-p*.json"
	globModes = "mode-*.json"
)

var quotaFile = regexp.MustCompile(`^quota-q([0-9.]+)-p([0-9]+)\.json$`)

// QuotaCurve is the curve at one quota: the same envelopes replicated by 1, 2, 3... daemons.
type QuotaCurve struct {
	Quota float64 `json:"quota_rps"`
	// QuotaBoundRate = Quota / the highest per-region KMS calls per envelope.
	QuotaBoundRate float64 `json:"quota_bound_rate"`
	// Unthrottled is one daemon's rate without a quota (the machine's bound: the higher of its
	// events/s and the rate of its middle 90 % of acknowledgements, which leaves out a
	// straggler's redelivery), 0 if not run; Bound says which bound applied: "quota" when one
	// daemon did clearly better (1.1x) than the quota-bound rate unthrottled, "quota from N
	// daemons" when N of them could, else "machine".
	// A row is judged against the quota only when its daemons together could clearly beat the
	// quota-bound rate unthrottled (procs x Unthrottled >= 1.1x; QuotaCurve.quotaBinds): one
	// daemon at its concurrency may replicate slower than the quota allows, and then the
	// quota, and the limiter, had nothing to do with its rate.
	Unthrottled float64            `json:"unthrottled_events_per_s,omitempty"`
	Bound       string             `json:"bound"`
	Runs        []*ReplicateResult `json:"runs"` // by procs
}

// ModeCalls is one mode's KMS calls per envelope, and the rate a quota would bound it to.
type ModeCalls struct {
	Mode string `json:"mode"`
	N    int    `json:"n"`
	CallsPerEnvelope
	Quota          float64  `json:"quota_rps"`
	QuotaBoundRate float64  `json:"quota_bound_rate"`
	Problems       []string `json:"problems,omitempty"`
}

// modeLabel names a run's key mode, mrk wrap and verification.
func modeLabel(r *ReplicateResult) string {
	l := r.Mode
	if r.Mode != "independent" {
		wrap := r.MRKWrap
		if wrap == "" {
			wrap = "reencrypt"
		}
		l += ", mrk_wrap: " + wrap
	}
	return l + ", verify: " + r.Verify
}

// readQuotaCurves reads every quota-q<Q>-p<procs>.json of dir into one curve per quota, lowest
// quota first, runs by procs.
func readQuotaCurves(dir string, free *ReplicateResult) ([]QuotaCurve, []string) {
	paths, _ := filepath.Glob(filepath.Join(dir, globQuota))
	byQ := map[float64]*QuotaCurve{}
	var problems []string
	for _, p := range paths {
		if !quotaFile.MatchString(filepath.Base(p)) {
			continue
		}
		r, err := readReplicate(p)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		c := byQ[r.ThrottleRPS]
		if c == nil {
			c = &QuotaCurve{Quota: r.ThrottleRPS}
			byQ[r.ThrottleRPS] = c
		}
		c.Runs = append(c.Runs, r)
		c.QuotaBoundRate = max(c.QuotaBoundRate, r.QuotaBoundRate)
	}
	var out []QuotaCurve
	for _, c := range byQ {
		sort.Slice(c.Runs, func(i, j int) bool { return c.Runs[i].Procs < c.Runs[j].Procs })
		c.Bound = "machine"
		if free != nil {
			c.Unthrottled = max(free.EventsPerS, free.EventsPerSMid)
			for _, r := range c.Runs {
				if c.quotaBinds(r.Procs) {
					c.Bound = "quota"
					if r.Procs > 1 {
						c.Bound = fmt.Sprintf("quota from %d daemons", r.Procs)
					}
					break
				}
			}
		}
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Quota < out[j].Quota })
	return out, problems
}

// quotaBinds says whether the quota, rather than the daemons' own rate, bounds a run of procs
// daemons: unthrottled, one daemon replicated Unthrottled envelopes/s, so procs of them could
// replicate up to procs times that (less if the machine runs out first: that is still judged).
// Without an unthrottled run every row is judged.
func (c QuotaCurve) quotaBinds(procs int) bool {
	return c.Unthrottled == 0 || c.QuotaBoundRate == 0 || float64(procs)*c.Unthrottled >= 1.1*c.QuotaBoundRate
}

// writeQuotaCurves prints each curve: procs, events/s, share of the quota bound (the goal, judged
// on every row), throttled share of KMS calls, failed envelopes, and what each process did.
func writeQuotaCurves(w io.Writer, curves []QuotaCurve, j *judge) {
	for _, c := range curves {
		fmt.Fprintf(w, "\n   curve at Q = %g req/s per region, kms_rate left unset (default %s): quota-bound rate %.1f envelopes/s; bound: %s\n",
			c.Quota, kmsRateOf(c.Runs), c.QuotaBoundRate, c.Bound)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "   procs\tenvelopes\tevents/s (middle 90%%)\tachieved / quota-bound\tthrottled / KMS calls\tfailed\tDLQ / queue\tredeliveries\tCPU per envelope (all daemons)\tacked per process\t\n")
		for _, r := range c.Runs {
			var verdict string
			switch {
			case !c.quotaBinds(r.Procs):
				verdict = fmt.Sprintf("not judged: %d unthrottled daemon(s) make %.1f/s, below the quota", r.Procs, float64(r.Procs)*c.Unthrottled)
			default:
				verdict = j.check(r.Fraction >= goalQuotaShare && r.FailedEnvelopes == 0)
				if verdict == "MISS" && r.ThrottledCalls == 0 {
					verdict += " (machine-bound: no call throttled)"
				}
			}
			fmt.Fprintf(tw, "   %d\t%d\t%.1f (%.1f)\t%.3f  >= %.2f, 0 failed: %s\t%.4f (%d of %d)\t%d\t%d / %d\t%d\t%.3f ms\t%s\t\n",
				r.Procs, r.N, r.EventsPerS, r.EventsPerSMid, r.Fraction, goalQuotaShare, verdict, r.ThrottledFraction, r.ThrottledCalls, r.KMSCalls,
				r.FailedEnvelopes, r.DLQ, r.QueueLeft, r.Outcomes[msgRedelivery], r.CPUPerEnvMs, procAcked(r))
		}
		tw.Flush()
		switch {
		case c.Unthrottled == 0:
			fmt.Fprintf(w, "   note: no unthrottled run to tell whether the machine or the quota bounded these runs.\n")
		case c.Bound != "quota":
			fmt.Fprintf(w, "   note: unthrottled, one daemon replicated %.1f envelopes/s (whole run or middle 90%%, the higher), not clearly above the quota-bound %.1f/s:\n"+
				"   a row is judged against the quota only where its daemons together could replicate 1.1x the quota-bound rate unthrottled;\n"+
				"   a MISS with no call throttled was bounded by the machine, not the quota, and says little about the limiter.\n",
				c.Unthrottled, c.QuotaBoundRate)
		default:
			fmt.Fprintf(w, "   note: unthrottled, one daemon replicated %.1f envelopes/s (whole run or middle 90%%, the higher; %.1fx the quota-bound rate):\n"+
				"   the quota bounded these runs.\n",
				c.Unthrottled, c.Unthrottled/c.QuotaBoundRate)
		}
		for _, r := range c.Runs {
			if len(r.Problems) > 0 {
				fmt.Fprintf(w, "   problems (%d procs): %s\n", r.Procs, strings.Join(r.Problems, "; "))
			}
		}
	}
}

// msgRedelivery is the daemon's log message for an event left for redelivery (its KMS retries
// ran out, say): not a failure, but a delay of a visibility timeout.
const msgRedelivery = "policy not met: event left for redelivery"

func kmsRateOf(rs []*ReplicateResult) string {
	if len(rs) == 0 {
		return "-"
	}
	return strconv.FormatFloat(rs[0].KMSRate, 'g', -1, 64)
}

func procAcked(r *ReplicateResult) string {
	if len(r.ProcAcked) == 0 {
		return strconv.Itoa(r.N)
	}
	parts := make([]string, len(r.ProcAcked))
	for i, n := range r.ProcAcked {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, " / ")
}

// readModes reads every mode-*.json of dir; the quota-bound rate of each is at quota req/s.
// Modes with the most calls per envelope come first.
func readModes(dir string, quota float64) ([]ModeCalls, []string) {
	paths, _ := filepath.Glob(filepath.Join(dir, globModes))
	var out []ModeCalls
	var problems []string
	for _, p := range paths {
		r, err := readReplicate(p)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		m := ModeCalls{Mode: modeLabel(r), N: r.N, CallsPerEnvelope: r.CallsPerEnvelope, Quota: quota, Problems: r.Problems}
		if m.MaxRegionPerEnvelope > 0 {
			m.QuotaBoundRate = quota / m.MaxRegionPerEnvelope
		}
		out = append(out, m)
	}
	sort.SliceStable(out, func(i, j int) bool { return totalCalls(out[i]) > totalCalls(out[j]) })
	return out, problems
}

func totalCalls(m ModeCalls) float64 {
	var t float64
	for op, v := range m.PerEnvelope {
		if op != "DescribeKey" {
			t += v
		}
	}
	return t
}

// writeModes prints the KMS calls per envelope of each mode, by operation and by region, and the
// envelope rate a quota of Q req/s per region bounds it to.
func writeModes(w io.Writer, modes []ModeCalls, quota float64) {
	ops, regs := map[string]bool{}, map[string]bool{}
	for _, m := range modes {
		for op := range m.PerEnvelope {
			if op != "DescribeKey" {
				ops[op] = true
			}
		}
		for r := range m.PerRegionPerEnvelope {
			regs[r] = true
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "   mode\tenvelopes\tcalls/envelope")
	for _, op := range sortedKeys(ops) {
		fmt.Fprintf(tw, "\t%s", op)
	}
	for _, r := range sortedKeys(regs) {
		fmt.Fprintf(tw, "\tin %s", r)
	}
	fmt.Fprintf(tw, "\tquota-bound rate at Q = %g\t\n", quota)
	for _, m := range modes {
		fmt.Fprintf(tw, "   %s\t%d\t%.3f", m.Mode, m.N, totalCalls(m))
		for _, op := range sortedKeys(ops) {
			fmt.Fprintf(tw, "\t%.3f", m.PerEnvelope[op])
		}
		for _, r := range sortedKeys(regs) {
			fmt.Fprintf(tw, "\t%.3f", m.PerRegionPerEnvelope[r])
		}
		fmt.Fprintf(tw, "\t%.1f envelopes/s\t\n", m.QuotaBoundRate)
	}
	tw.Flush()
	fmt.Fprintf(w, "   (successful calls per envelope from the stand-in's counters; DescribeKey, the start-up check, left out;\n"+
		"   the quota-bound rate is Q / the busiest region's calls per envelope)\n")
	for _, m := range modes {
		if len(m.Problems) > 0 {
			fmt.Fprintf(w, "   problems (%s): %s\n", m.Mode, strings.Join(m.Problems, "; "))
		}
	}
}
