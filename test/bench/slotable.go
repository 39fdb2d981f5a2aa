package main

import (
	"fmt"
	"io"
	"math"
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
		fmt.Fprintf(tw, "%s\t%d\t%.1f (%.1f)\texact\t%s\t%s\t%s\t%s\t%s\t%s\t%d / %d / %d\n", c.Case, c.Exact.Count, c.OfferedRate, c.SentRate,
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
			c.Case, c.Description, c.Concurrency, c.KMSRate, c.RunS, c.Daemon.UserS+c.Daemon.SysS,
			perEnvMs(c.Daemon.UserS+c.Daemon.SysS, c.N), c.StandInCPUS, c.KMSCalls, c.Throttled, c.Acks, c.LoadBefore, c.LoadAfter)
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
