package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
)

// printSLOTable prints the cases of rep: the exact per-envelope quantiles next to the
// histogram's estimates, the goal's verdict (lag case only) and what the run cost.
func printSLOTable(w io.Writer, rep *SLOReport) {
	fmt.Fprintf(w, "\ndecryptability SLO: protection time per envelope (seal -> acknowledged with every required region verified in its own replica), seconds; goal p99.99 <= %.0f s under 1 s of lag\n", rep.GoalS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "case\tenvelopes\toffered/s (sent)\t\tp50\tp99\tp99.9\tp99.99\tmax\tgoal\tfailed / DLQ / queue")
	for _, c := range rep.Cases {
		goal := "not judged"
		if c.Met != nil {
			goal = "MISS"
			if *c.Met {
				goal = "PASS"
			}
			goal = fmt.Sprintf("p99.99 <= %.0f s: %s", c.GoalS, goal)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f (%.1f)\texact\t%s\t%s\t%s\t%s\t%s\t%s\t%d / %d / %d\n", c.name(), c.Exact.Count, c.OfferedRate, c.SentRate,
			secs(c.Exact.P50), secs(c.Exact.P99), secs(c.Exact.P999), secs(c.Exact.P9999), secs(c.Exact.Max), goal, c.FailedEnv, c.DLQ, c.QueueLeft)
		if h := c.Histogram; h != nil {
			fmt.Fprintf(tw, "\t%d\t\thistogram\t%s\t%s\t%s\t%s\t\t(sum - exact sum: %+.1f ms per envelope)\t\n", h.Count,
				secs(h.P50), secs(h.P99), secs(h.P999), secs(h.P9999), c.MeanDiffMs)
		} else {
			fmt.Fprintf(tw, "\t\t\thistogram\tn/a\t\t\t\t\t\t\n")
		}
		v := c.VerifiedAt
		fmt.Fprintf(tw, "\t%d\t\tverified_at\t%s\t%s\t%s\t%s\t%s\t\t\n", v.Count, secs(v.P50), secs(v.P99), secs(v.P999), secs(v.P9999), secs(v.Max))
	}
	_ = tw.Flush()
	for _, c := range rep.Cases {
		fmt.Fprintf(w, "  %s: %s; concurrency %d, kms_rate %.0f; run %.0f s; daemon CPU %.1f s (%.2f ms/envelope), stand-in %.1f s; KMS calls %d, throttled %d; acks %d; load %s -> %s\n",
			c.name(), c.Description, c.Concurrency, c.KMSRate, c.RunS, c.Daemon.UserS+c.Daemon.SysS,
			perEnvMs(c.Daemon.UserS+c.Daemon.SysS, c.N), c.StandInCPUS, c.KMSCalls, c.Throttled, c.Acks, c.LoadBefore, c.LoadAfter)
		if len(c.KMSByRegion) > 0 {
			fmt.Fprintf(w, "    KMS calls by region (stand-in): %s\n", byRegion(c.KMSByRegion))
		}
		if sc := c.Scrub; sc != nil {
			fmt.Fprintf(w, "    scrubber in %s: budget %s x kms_rate %.0f = %.0f KMS calls/s, period %s; %d records seeded unverified in %.0f s;"+
				" over the timed run (%.0f s) %.0f KMS calls = %.2f of the %.0f the budget allowed; records %s\n",
				sc.Region, sc.Budget, c.KMSRate, sc.RatePerS, scrubPeriodString(sc.PeriodS), sc.Records, sc.SeedS,
				sc.WindowS, sc.KMSCalls, sc.OfBudget, sc.Allowed, scrubOutcomes(sc.Outcomes))
		}
		if c.LossRegion != "" {
			fmt.Fprintf(w, "    %s down from +%.1f s to +%.1f s\n", c.LossRegion, c.LossStartS, c.LossEndS)
		}
		if len(c.Slowest) > 0 {
			var s []string
			for _, e := range c.Slowest {
				s = append(s, fmt.Sprintf("%s sealed %s: %.2f s", e.ID, e.SealedAt, e.S))
			}
			fmt.Fprintf(w, "    slowest: %s\n", strings.Join(s, "; "))
		}
		for _, p := range c.Problems {
			fmt.Fprintf(w, "    PROBLEM: %s\n", p)
		}
	}
	printScrubRatios(w, rep.Cases)
	fmt.Fprintln(w, "  exact: nearest rank over every envelope (p99.99 of 10,000 is the second slowest), from the event's created_at to the daemon's first \"event replicated\" log line (ms);")
	fmt.Fprintln(w, "  histogram: histogram_quantile over envdr_protection_seconds's buckets, scraped from the daemon once all were acknowledged;")
	fmt.Fprintln(w, "  verified_at: to the latest verified_at stamp of the required regions, read after the run (each region's verification, before the ack)")
}

func secs(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", v)
}

func perEnvMs(s float64, n int) float64 {
	if n == 0 {
		return 0
	}
	return s / float64(n) * 1000
}

// name is the case's label, or the case where the label is unset (older JSON).
func (c *SLOCase) name() string {
	if c.Label != "" {
		return c.Label
	}
	return c.Case
}

// printScrubRatios prints, for each scrub case, its exact quantiles over those of the lag case
// run nearest before it (else nearest after it): the scrubber's effect on the protection time,
// both measured on the same machine within minutes of each other.
func printScrubRatios(w io.Writer, cases []*SLOCase) {
	for i, c := range cases {
		if c.Case != caseScrub {
			continue
		}
		base := nearestLag(cases, i)
		if base == nil {
			fmt.Fprintf(w, "  %s: no lag case in this run to compare with (--cases lag,scrub)\n", c.name())
			continue
		}
		s, l := c.Exact, base.Exact
		// CPU per envelope: the daemon's includes its scrubber's; the stand-in's (this process:
		// KMS, proxies, replication) serves the scrubber's calls and stamp writes too.
		fmt.Fprintf(w, "  %s over %s (exact): p50 %s, p99 %s, p99.9 %s, p99.99 %s, max %s; CPU per envelope: daemon %s, stand-in %s\n",
			c.name(), base.name(), ratio(s.P50, l.P50), ratio(s.P99, l.P99), ratio(s.P999, l.P999), ratio(s.P9999, l.P9999),
			ratio(s.Max, l.Max), ratio(perEnvMs(c.Daemon.UserS+c.Daemon.SysS, c.N), perEnvMs(base.Daemon.UserS+base.Daemon.SysS, base.N)),
			ratio(perEnvMs(c.StandInCPUS, c.N), perEnvMs(base.StandInCPUS, base.N)))
	}
}

// nearestLag is the lag case run nearest before cases[i], else the nearest after it, else nil.
func nearestLag(cases []*SLOCase, i int) *SLOCase {
	for j := i - 1; j >= 0; j-- {
		if cases[j].Case == caseLag {
			return cases[j]
		}
	}
	for j := i + 1; j < len(cases); j++ {
		if cases[j].Case == caseLag {
			return cases[j]
		}
	}
	return nil
}

func ratio(a, b float64) string {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// byRegion prints counts in region order.
func byRegion(m map[string]int64) string {
	names := make([]string, 0, len(m))
	for r := range m {
		names = append(names, r)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, r := range names {
		parts = append(parts, fmt.Sprintf("%s %d", r, m[r]))
	}
	return strings.Join(parts, ", ")
}

// scrubOutcomes prints the scrubber's outcomes in a fixed order, the nonzero ones.
func scrubOutcomes(m map[string]float64) string {
	var parts []string
	for _, o := range []string{"verified", "recent", "no_wrap", "failed", "repaired"} {
		if v := m[o]; v != 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", o, v))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
