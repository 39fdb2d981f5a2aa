package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"golang.org/x/sync/errgroup"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// The decryptability SLO bench (issue 23): per-envelope protection times under a steady offered
// load, in three cases, each on a fresh in-process stand-in.
const (
	caseLag   = "lag"   // 1 s replication lag with jitter, nothing else wrong
	caseQuota = "quota" // the same, with every region's KMS throttled below the offered load's need
	caseLoss  = "loss"  // the same, with one region lost and restored during the run
	// caseScrub is the lag case with the daemon's scrubber on (scrub: {budget, period}) over a
	// table seeded with records it has not verified yet, so that it spends its budget for the
	// whole case: the scrubber's effect on the protection time (issue 25).
	caseScrub = "scrub"
)

// sloCases are the known cases, in the default order of --cases (scrub is asked for by name).
var sloCases = []string{caseLag, caseQuota, caseLoss, caseScrub}

// sloGoalS is the goal of issue 23: p99.99 of the protection time within 15 s under 1 s of lag.
const sloGoalS = 15.0

// protectionMetric is the daemon's histogram the bench reads next to its own per-envelope times.
const protectionMetric = "envdr_protection_seconds"

// SLOCase is one case's result (the JSON written under .bench/).
type SLOCase struct {
	Case        string  `json:"case"`
	Label       string  `json:"label"` // names the case's files: the case, suffixed -2, -3, ... when --cases repeats it
	Description string  `json:"description"`
	N           int     `json:"n"`
	OfferedRate float64 `json:"offered_rate"` // events/s the producer aimed at
	// Warmup envelopes went first, under the same conditions, and are in no figure (their
	// histogram samples are subtracted).
	Warmup      int     `json:"warmup"`
	SentRate    float64 `json:"sent_rate"` // events/s it achieved (first to last send)
	Concurrency int     `json:"concurrency"`
	LagS        float64 `json:"lag_s"`
	JitterS     float64 `json:"jitter_s"`
	Seed        uint64  `json:"seed"`
	// ThrottleRPS is the stand-in's KMS limit in every region (0: none) and KMSRate the daemon's
	// kms_rate (its limiter's share of that quota); NeedRPS the KMS requests/s the offered load
	// needs in the busiest region.
	ThrottleRPS float64 `json:"throttle_rps,omitempty"`
	KMSRate     float64 `json:"kms_rate"`
	NeedRPS     float64 `json:"need_rps,omitempty"`
	// LossRegion was down from LossStartS to LossEndS (seconds after the first send).
	LossRegion string  `json:"loss_region,omitempty"`
	LossStartS float64 `json:"loss_start_s,omitempty"`
	LossEndS   float64 `json:"loss_end_s,omitempty"`

	// Exact: from each envelope's seal time (its event's created_at) to the daemon's first
	// acknowledgement of it (the moment envdr_protection_seconds observes), every envelope.
	Exact SLOQuantiles `json:"exact"`
	// Histogram: the daemon's envdr_protection_seconds, scraped once every envelope was acked.
	Histogram *HistogramEstimate `json:"histogram,omitempty"`
	// MeanDiffMs = (histogram sum - sum of the exact times) / N: how far the bench's clock of the
	// ack (the log line's ms timestamp) is from the daemon's observation.
	MeanDiffMs float64 `json:"mean_diff_ms"`
	// VerifiedAt: from the seal time to the latest verified_at of the required regions, as the
	// home replica holds the record after the run (each verifier's stamp, which precedes the ack).
	VerifiedAt SLOQuantiles `json:"verified_at"`
	// Slowest are the five slowest envelopes, for the logs.
	Slowest []SlowEnvelope `json:"slowest"`
	GoalS   float64        `json:"goal_s"`
	// Met: p99.99 (exact) within the goal. Judged in the lag case and in the scrub case (the
	// lag case with the scrubber on, as a production daemon may run); the others are there to
	// show how far an overload or an outage moves it.
	Met *bool `json:"met,omitempty"`

	RunS        float64        `json:"run_s"` // the first send to the last ack
	SealS       float64        `json:"seal_s"`
	Daemon      Measurement    `json:"daemon"`
	StandInCPUS float64        `json:"standin_cpu_s"` // this process's user+sys during the run (KMS stand-in, proxies, replication)
	LoadBefore  string         `json:"load_before"`
	LoadAfter   string         `json:"load_after"`
	KMSCalls    int64          `json:"kms_calls"`
	Throttled   int64          `json:"throttled_calls"`
	Outcomes    map[string]int `json:"outcomes"`
	Acks        int            `json:"acks"` // "event replicated" lines; more than N: duplicates or redeliveries
	FailedEnv   int            `json:"failed_envelopes"`
	DLQ         int            `json:"dlq"`
	QueueLeft   int            `json:"queue_left"`
	Problems    []string       `json:"problems,omitempty"`

	// KMSByRegion is the stand-in's count of KMS calls per region (throttled ones excluded)
	// from the warm-up's end to the last ack: the daemon's, and in the scrub case the
	// scrubber's in its region.
	KMSByRegion map[string]int64 `json:"kms_calls_by_region"`
	// Scrub is the scrubber's side of the scrub case.
	Scrub *ScrubFigures `json:"scrub,omitempty"`
}

// ScrubFigures are what the scrubber did in the scrub case, from its daemon's metrics
// (envdr_scrub_*), scraped as the timed run starts and once every envelope is acknowledged.
type ScrubFigures struct {
	Budget string `json:"budget"` // scrub.budget
	// Region is the daemon's: its scrubber re-verifies that region's wraps (replicate/scrub.go).
	Region string `json:"region"`
	// RatePerS = budget x kms_rate: the KMS calls per second the budget allows the scrubber.
	RatePerS float64 `json:"rate_per_s"`
	PeriodS  float64 `json:"period_s"` // scrub.period
	// Records were seeded, wrapped in every region and verified in none, before the daemon
	// started (replicate.MintAndLoad), in SeedS seconds.
	Records int     `json:"records"`
	SeedS   float64 `json:"seed_s"`
	// WindowS is the time between the two scrapes: the timed run.
	WindowS float64 `json:"window_s"`
	// KMSCalls is envdr_scrub_kms_calls_total over the window; Allowed = RatePerS x WindowS + 1
	// (the limiter's burst); OfBudget = KMSCalls / Allowed.
	KMSCalls float64 `json:"kms_calls"`
	Allowed  float64 `json:"allowed"`
	OfBudget float64 `json:"of_budget"`
	// Outcomes is envdr_scrub_records_total by outcome over the window (verified, recent,
	// no_wrap, failed, repaired).
	Outcomes map[string]float64 `json:"outcomes"`
}

// SlowEnvelope is one envelope's protection time.
type SlowEnvelope struct {
	ID       string  `json:"id"`
	SealedAt string  `json:"sealed_at"`
	S        float64 `json:"s"`
}

// SLOReport is every case of one run (DIR/slo.json).
type SLOReport struct {
	Started string     `json:"started"`
	Cases   []*SLOCase `json:"cases"`
	GoalS   float64    `json:"goal_s"`
}

type sloOptions struct {
	Bin         string
	N           int
	Rate        float64
	Concurrency int
	Lag, Jitter time.Duration
	Seed        uint64
	Warmup      int     // envelopes sent and acknowledged before the timed run, in no figure
	QuotaFrac   float64 // case quota: the quota-bound rate as a fraction of the offered load
	LossRegion  string
	LossAt      float64 // case loss: when, as a fraction of the sending time
	LossFor     time.Duration
	Timeout     time.Duration
	Dir         string
	// Case scrub: the daemon's scrub.budget, the records seeded for it (0: enough for the case)
	// and scrub.period (0: the one the budget needs to cover them).
	ScrubBudget  string
	ScrubRecords int
	ScrubPeriod  time.Duration
}

func runSLO(args []string) error {
	fs := flag.NewFlagSet("slo", flag.ExitOnError)
	var o sloOptions
	fs.StringVar(&o.Bin, "envdr", "bin/envdr", "the envdr binary to run as the daemon")
	fs.IntVar(&o.N, "n", 10000, "envelopes per case")
	fs.IntVar(&o.Warmup, "warmup", 200, "envelopes sent first in each case, under its conditions, and left out of every figure (0: none)")
	fs.Float64Var(&o.Rate, "rate", 25, "offered load: events/s the producer seals and sends at, steadily")
	fs.IntVar(&o.Concurrency, "concurrency", 128, "worker.concurrency of the daemon (0: the config default, 64): each event holds a worker for about two replication lags, so one daemon acknowledges at most concurrency / (2 x lag + work) events/s")
	fs.DurationVar(&o.Lag, "lag", time.Second, "global-table replication lag between every pair of regions")
	fs.DurationVar(&o.Jitter, "jitter", 500*time.Millisecond, "replication jitter per item on top of the lag (as make test-lag)")
	seed := fs.Int64("seed", 23, "seed of the replication jitter")
	fs.Float64Var(&o.QuotaFrac, "quota-frac", 0.9, "case quota: the KMS quota per region, as the rate it bounds the daemon to over the offered rate (below 1: throttled below the offered load)")
	fs.StringVar(&o.LossRegion, "loss-region", "eu-west-1", "case loss: the region lost and restored")
	fs.Float64Var(&o.LossAt, "loss-at", 0.3, "case loss: when the region is lost, as a fraction of the sending time")
	fs.DurationVar(&o.LossFor, "loss-for", 30*time.Second, "case loss: how long it stays lost")
	fs.StringVar(&o.ScrubBudget, "scrub-budget", "5%", "case scrub: the daemon's scrub.budget, its share of kms_rate")
	fs.IntVar(&o.ScrubRecords, "scrub-records", 0, "case scrub: records seeded unverified before the daemon starts (0: enough to keep the scrubber at its budget for the whole case, 1.25 x budget x kms_rate x the case's expected length)")
	fs.DurationVar(&o.ScrubPeriod, "scrub-period", 0, "case scrub: the daemon's scrub.period (0: the period the budget needs to cover the seeded records, in whole minutes)")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "give up on a case after this long")
	fs.StringVar(&o.Dir, "dir", ".bench", "write slo-<case>.json, slo.json, slo.txt and the daemon logs here")
	cases := fs.String("cases", strings.Join([]string{caseLag, caseQuota, caseLoss}, ","), "the cases to run, in order ("+strings.Join(sloCases, ", ")+"); a case named again runs again (lag,scrub,lag,scrub shows the machine's drift), its files suffixed -2, -3, ...")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.Seed = uint64(*seed)
	if o.N < 1 || o.Rate <= 0 || o.QuotaFrac <= 0 || o.LossAt < 0 || o.LossAt > 1 || o.ScrubRecords < 0 {
		return errors.New("--n, --rate and --quota-frac must be positive, --loss-at within 0..1, --scrub-records not negative")
	}
	labels, err := caseLabels(*cases)
	if err != nil {
		return err
	}
	if b, err := (config.Scrub{Budget: o.ScrubBudget}).BudgetFraction(); err != nil || b == 0 {
		return fmt.Errorf("--scrub-budget %q: use a share above 0%% (such as 5%%): %v", o.ScrubBudget, err)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep := &SLOReport{Started: time.Now().UTC().Format(time.RFC3339), GoalS: sloGoalS}
	var errs []error
	for _, cl := range labels {
		c, label := cl[0], cl[1]
		fmt.Fprintf(os.Stderr, "slo: case %s: %d envelopes at %.0f/s (load %s)\n", label, o.N, o.Rate, loadAvg())
		res, err := sloCase(ctx, o, c, label)
		if res != nil {
			rep.Cases = append(rep.Cases, res)
			if werr := writeJSON(filepath.Join(o.Dir, "slo-"+label+".json"), res); werr != nil {
				errs = append(errs, werr)
			}
			fmt.Fprintf(os.Stderr, "slo: case %s: p50 %.2fs p99 %.2fs p99.9 %.2fs p99.99 %.2fs max %.2fs (histogram p99.99 %s)\n",
				label, res.Exact.P50, res.Exact.P99, res.Exact.P999, res.Exact.P9999, res.Exact.Max, histP9999(res))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("case %s: %w", label, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	if err := writeJSON(filepath.Join(o.Dir, "slo.json"), rep); err != nil {
		errs = append(errs, err)
	}
	var tbl bytes.Buffer
	printSLOTable(&tbl, rep)
	os.Stdout.Write(tbl.Bytes())
	if err := os.WriteFile(filepath.Join(o.Dir, "slo.txt"), tbl.Bytes(), 0o644); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// caseLabels checks --cases and names each run: [case, label] pairs, the label being the case
// itself the first time and case-2, case-3, ... when it is named again.
func caseLabels(list string) ([][2]string, error) {
	var out [][2]string
	seen := map[string]int{}
	for _, c := range strings.Split(list, ",") {
		c = strings.TrimSpace(c)
		if !slices.Contains(sloCases, c) {
			return nil, fmt.Errorf("--cases: unknown case %q (use %s)", c, strings.Join(sloCases, ", "))
		}
		seen[c]++
		label := c
		if seen[c] > 1 {
			label = fmt.Sprintf("%s-%d", c, seen[c])
		}
		out = append(out, [2]string{c, label})
	}
	return out, nil
}

// scrubPlan sizes the scrub case. The scrubber may make budget x kmsRate KMS calls per second,
// one per record it verifies; records keeps it at that rate for 1.25 times the case's
// expected length (envelopes at rate, plus a minute for start-up, the last acks and the
// scrapes), so it has work until the end even if a pass begins midway (passes are aligned to
// the period, and a new one verifies everything again). period is the one that rate needs to
// cover records, in whole minutes (scrub.period's least is 1m), which is what the daemon's
// period means: the table covered once per period at the budget. A positive wantRecords or
// wantPeriod is taken as given.
func scrubPlan(budget, kmsRate float64, envelopes int, rate float64, wantRecords int, wantPeriod time.Duration) (records int, period time.Duration) {
	perS := budget * kmsRate
	records = wantRecords
	if records <= 0 {
		expect := float64(envelopes)/rate + 60
		records = int(math.Ceil(1.25 * perS * expect))
	}
	period = wantPeriod
	if period <= 0 {
		minutes := math.Ceil(float64(records) / perS / 60)
		period = time.Duration(max(minutes, 1)) * time.Minute
	}
	return records, period
}

func histP9999(c *SLOCase) string {
	if c.Histogram == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2fs", c.Histogram.P9999)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// loadAvg is /proc/loadavg's first three fields ("" where there is none).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// mrkCallsPerRegion is the daemon's KMS calls per envelope in the busiest region in mrk mode with
// verify: all (a ReEncrypt and the verification's Decrypt in each target region; docs/BENCH.md).
const mrkCallsPerRegion = 2

// sloCase runs one case on a fresh stand-in: seal N envelopes (untimed: GenerateDataKey before
// the run, so the producer takes none of the KMS quota), start the daemon and wait until it is
// ready, send the events at the offered rate with created_at = the moment of sending, follow the
// daemon's log until every envelope is acknowledged, scrape its histogram, stop it and check
// every record in every region.
func sloCase(ctx context.Context, o sloOptions, c, label string) (*SLOCase, error) {
	bin, err := envdrBinary(o.Bin)
	if err != nil {
		return nil, err
	}
	s, err := newStandIn(ctx)
	if err != nil {
		return nil, err
	}
	defer s.close()
	res := &SLOCase{Case: c, Label: label, N: o.N, OfferedRate: o.Rate, LagS: o.Lag.Seconds(), JitterS: o.Jitter.Seconds(), Seed: o.Seed,
		GoalS: sloGoalS, Outcomes: map[string]int{}}

	dcfg := *s.cfg
	dcfg.Regions = append([]config.Region(nil), s.cfg.Regions...)
	if o.Concurrency > 0 {
		dcfg.Worker.Concurrency = o.Concurrency
	}
	switch c {
	case caseLag:
		res.Description = fmt.Sprintf("%s replication lag + up to %s jitter per item", o.Lag, o.Jitter)
	case caseQuota:
		res.NeedRPS = o.Rate * mrkCallsPerRegion
		res.ThrottleRPS = float64(int(res.NeedRPS*o.QuotaFrac + 0.5))
		for i := range dcfg.Regions {
			dcfg.Regions[i].KMSRate = res.ThrottleRPS
		}
		res.Description = fmt.Sprintf("lag as above; each region's KMS throttled at %.0f req/s (kms_rate %.0f), the offered load needs %.0f", res.ThrottleRPS, res.ThrottleRPS, res.NeedRPS)
	case caseLoss:
		if _, ok := s.cfg.Region(o.LossRegion); !ok || o.LossRegion == s.cfg.HomeRegion {
			return nil, fmt.Errorf("--loss-region %q: use a configured region other than the home region %s (the daemon and the producer run there)", o.LossRegion, s.cfg.HomeRegion)
		}
		res.LossRegion = o.LossRegion
		res.Description = fmt.Sprintf("lag as above; %s lost for %s at %.0f%% of the sending", o.LossRegion, o.LossFor, o.LossAt*100)
	case caseScrub:
		sf, err := planScrub(&dcfg, o)
		if err != nil {
			return nil, err
		}
		res.Scrub = sf
		res.Description = fmt.Sprintf("lag as above; the daemon's scrubber at budget %s (%.0f KMS calls/s in %s), period %s, over %d records seeded unverified",
			sf.Budget, sf.RatePerS, sf.Region, scrubPeriodString(sf.PeriodS), sf.Records)
	}
	cfgPath, applied, cleanup, err := writeDaemonConfig(&dcfg, "envdr-slo-")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	res.Concurrency, res.KMSRate = applied.Worker.Concurrency, applied.Regions[0].KMSRate

	// The producer's clients. Long per-attempt timeouts: after the run the checks scan the whole
	// table (10,000 records and their region items), and on a loaded machine a DynamoDB Local
	// Scan page took longer than the daemon's 5 s default.
	topo, err := benchTopology(ctx, applied, regions.Options{DynamoDBTimeout: 2 * time.Minute, KMSTimeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	var seeded func(*envelope.Record) bool // the scrub case's records, in no figure
	if res.Scrub != nil {
		fmt.Fprintf(os.Stderr, "slo: case %s: seeding %d records, wrapped in every region and verified in none (load %s)\n", label, res.Scrub.Records, loadAvg())
		t0 := time.Now()
		if seeded, err = seedUnverified(ctx, s, topo, &applied, res.Scrub.Records); err != nil {
			return res, fmt.Errorf("seeding %d records for the scrubber: %w", res.Scrub.Records, err)
		}
		res.Scrub.SeedS = time.Since(t0).Seconds()
		fmt.Fprintf(os.Stderr, "slo: case %s: seeded in %.0f s (load %s)\n", label, res.Scrub.SeedS, loadAvg())
	}
	t0 := time.Now()
	all, err := sealOnly(ctx, topo, o.N+o.Warmup, "slo")
	if err != nil {
		return nil, err
	}
	res.SealS = time.Since(t0).Seconds()
	hdrs, warm := all[:o.N], all[o.N:]
	timed := make(map[string]bool, o.N)
	for _, h := range hdrs {
		timed[h.RecordID()] = true
	}

	g := s.stack.GlobalTables()
	if err := g.SetLag("", "", o.Lag); err != nil {
		return nil, err
	}
	if err := g.SetJitter("", "", o.Jitter); err != nil {
		return nil, err
	}
	g.SetSeed(o.Seed)
	s.svc.ResetCounters()
	s.throttle.reset()
	if res.ThrottleRPS > 0 {
		for _, r := range localaws.DefaultRegions {
			s.svc.SetRateLimit(r, res.ThrottleRPS)
		}
	}

	logPath := filepath.Join(o.Dir, "slo-"+label+".log")
	d, err := startSLODaemon(ctx, bin, cfgPath, logPath)
	if err != nil {
		return nil, err
	}
	defer d.kill()
	if err := d.waitReady(ctx, 2*time.Minute); err != nil {
		return res, err
	}
	home, _ := topo.HomeRegion()
	acks := map[string]time.Time{}
	follow := &logFollower{path: logPath}
	// The warm-up: a few hundred envelopes under the case's conditions, not counted, so that a
	// freshly started DynamoDB Local or daemon (JIT, connection pools, the replica-lag estimate)
	// is not what the first seconds measure. The histogram's warm-up samples are subtracted.
	var hist0 *HistogramEstimate
	if len(warm) > 0 {
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
		var ignored float64
		err := sendPaced(wctx, home.SQS(), dcfg.QueueURL, warm, o.Rate, time.Now(), func(string, time.Time) {}, &ignored)
		for err == nil && countAcked(acks, warm) < len(warm) {
			if err = sleepUntil(wctx, time.Now().Add(500*time.Millisecond)); err == nil {
				err = follow.poll(acks, res)
			}
		}
		if err == nil {
			var sc *daemonScrape
			if sc, err = d.scrape(wctx); err == nil {
				hist0 = sc.hist
			}
		}
		wcancel()
		if err != nil {
			return res, fmt.Errorf("warm-up of %d envelopes: %w (log %s)", len(warm), err, logPath)
		}
		res.Warmup = len(warm)
		s.svc.ResetCounters()
		s.throttle.reset()
		for k := range res.Outcomes {
			delete(res.Outcomes, k)
		}
		res.Acks = 0
	}

	// The scrubber's counters as the timed run starts (it has been running since start-up).
	scrub0, err := d.scrape(ctx)
	if err != nil {
		return res, fmt.Errorf("scraping the daemon before the run: %w (log %s)", err, logPath)
	}
	res.LoadBefore = loadAvg()
	ru0 := selfCPU()
	cctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var lossAt time.Duration
	if c == caseLoss {
		lossAt = time.Duration(o.LossAt * float64(o.N) / o.Rate * float64(time.Second))
	}
	sent := make(map[string]time.Time, o.N)
	var sentMu sync.Mutex
	var sendErr error
	sendDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(sendDone)
		sendErr = sendPaced(cctx, home.SQS(), dcfg.QueueURL, hdrs, o.Rate, start, func(id string, at time.Time) {
			sentMu.Lock()
			sent[id] = at
			sentMu.Unlock()
		}, &res.SentRate)
	}()
	var lossErr error
	lossDone := make(chan struct{})
	if c == caseLoss {
		go func() {
			defer close(lossDone)
			lossErr = loseAndRestore(cctx, s.stack, o.LossRegion, start, lossAt, o.LossFor, res)
		}()
	} else {
		close(lossDone)
	}

	// Follow the log until every envelope is acknowledged (or the case times out).
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var hist *HistogramEstimate
	for waiting := true; waiting; {
		select {
		case <-cctx.Done():
			res.Problems = append(res.Problems, fmt.Sprintf("stopped (%v; --timeout %s) with %d of %d envelopes acknowledged", context.Cause(cctx), o.Timeout, countAcked(acks, hdrs), o.N))
			waiting = false
			continue
		case <-d.exited:
			res.Problems = append(res.Problems, "the daemon exited during the run (log "+logPath+")")
			waiting = false
			continue
		case <-tick.C:
		}
		if err := follow.poll(acks, res); err != nil {
			res.Problems = append(res.Problems, "daemon log: "+err.Error())
			break
		}
		select {
		case <-sendDone:
		default:
			continue
		}
		if countAcked(acks, hdrs) < o.N {
			continue
		}
		// Every envelope acked: the histogram holds every observation now.
		sc, err := d.scrape(ctx)
		res.KMSByRegion = kmsByRegion(s.svc.Counters())
		if err != nil {
			res.Problems = append(res.Problems, "scraping "+protectionMetric+": "+err.Error())
		} else {
			if hist0 != nil {
				*sc.hist = sc.hist.minus(*hist0)
			}
			hist = sc.hist
			if res.Scrub != nil {
				res.Scrub.account(scrub0, sc)
			}
		}
		waiting = false
	}
	<-lossDone
	res.StandInCPUS = selfCPU() - ru0
	res.LoadAfter = loadAvg()
	res.Daemon = d.stop()
	if err := follow.poll(acks, res); err != nil {
		res.Problems = append(res.Problems, "daemon log: "+err.Error())
	}
	if sendErr != nil {
		res.Problems = append(res.Problems, "sending: "+sendErr.Error())
	}
	if lossErr != nil {
		res.Problems = append(res.Problems, "region loss: "+lossErr.Error())
	}
	res.KMSCalls, res.Throttled = kmsTotals(s.svc.Counters(), s.throttle.snapshot())
	for _, r := range localaws.DefaultRegions {
		s.svc.SetRateLimit(r, 0)
	}
	res.Histogram = hist

	// The exact figures: every sent envelope's seal time against its first ack.
	times := make([]float64, 0, len(sent))
	var slow []SlowEnvelope
	var last time.Time
	for id, at := range sent {
		if !timed[id] {
			continue
		}
		ack, ok := acks[id]
		if !ok {
			continue
		}
		sec := ack.Sub(at).Seconds()
		times = append(times, sec)
		slow = append(slow, SlowEnvelope{ID: id, SealedAt: at.UTC().Format("15:04:05.000"), S: sec})
		if ack.After(last) {
			last = ack
		}
	}
	sort.Slice(slow, func(i, j int) bool { return slow[i].S > slow[j].S })
	res.Slowest = slow[:min(5, len(slow))]
	if err := writeEnvelopeTimes(filepath.Join(o.Dir, "slo-"+label+"-envelopes.csv"), sent, acks, start); err != nil {
		res.Problems = append(res.Problems, err.Error())
	}
	res.Exact = exactQuantiles(times)
	res.RunS = last.Sub(start).Seconds()
	if hist != nil && res.Exact.Count > 0 {
		res.MeanDiffMs = (hist.Sum - res.Exact.Mean*float64(res.Exact.Count)) / float64(res.Exact.Count) * 1000
		if hist.Count != uint64(res.Exact.Count) {
			res.Problems = append(res.Problems, fmt.Sprintf("%s counted %d observations for %d envelopes", protectionMetric, hist.Count, res.Exact.Count))
		}
	}
	if (c == caseLag || c == caseScrub) && res.Exact.Count == o.N {
		met := res.Exact.P9999 <= sloGoalS
		res.Met = &met
	}
	if n := countAcked(acks, hdrs); n < o.N {
		res.Problems = append(res.Problems, fmt.Sprintf("%d of %d envelopes were never acknowledged", o.N-n, o.N))
	}

	// Check every record in every region (as envdr-bench replicate does), and take each
	// region's verified_at from the record.
	ids := make(map[string][]byte, len(all))
	for _, h := range all {
		ids[h.RecordID()] = h.Commitment
	}
	rr := &ReplicateResult{N: o.N}
	if err := checkResults(ctx, topo, &applied, ids, seeded, rr); err != nil {
		res.Problems = append(res.Problems, "checks: "+err.Error())
	}
	res.FailedEnv, res.DLQ, res.QueueLeft = rr.FailedEnvelopes, rr.DLQ, rr.QueueLeft
	if va, err := verifiedAtTimes(ctx, topo, &applied, sent); err != nil {
		res.Problems = append(res.Problems, "verified_at: "+err.Error())
	} else {
		res.VerifiedAt = exactQuantiles(va)
	}
	if len(res.Problems) > 0 {
		return res, errors.New(strings.Join(res.Problems, "; "))
	}
	return res, nil
}

// selfCPU is this process's user+sys CPU seconds so far.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func kmsTotals(calls, throttled map[string]map[string]int64) (all, thr int64) {
	for _, ops := range calls {
		for op, c := range ops {
			if op != "Throttled" {
				all += c
			}
		}
	}
	for _, ops := range throttled {
		for _, c := range ops {
			thr += c
		}
	}
	return all, thr
}

// loseAndRestore takes region down at start+at and up again lossFor later, recording when.
func loseAndRestore(ctx context.Context, st *localaws.Stack, region string, start time.Time, at, lossFor time.Duration, res *SLOCase) error {
	if err := sleepUntil(ctx, start.Add(at)); err != nil {
		return err
	}
	if err := st.Down(region); err != nil {
		return err
	}
	res.LossStartS = time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "slo: %s lost at +%.1fs\n", region, res.LossStartS)
	// Restore even when the case is cancelled: the checks after the run need every region.
	_ = sleepUntil(ctx, start.Add(at+lossFor))
	if err := st.Up(region); err != nil {
		return err
	}
	res.LossEndS = time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "slo: %s restored at +%.1fs\n", region, res.LossEndS)
	return nil
}

func sleepUntil(ctx context.Context, t time.Time) error {
	tm := time.NewTimer(time.Until(t))
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sealOnly seals n small envelopes in the home region (GenerateDataKey), without events, 8 at
// a time; their IDs are "bench-RUN-NNNNN" and their context bench=bench.
func sealOnly(ctx context.Context, topo *regions.Topology, n int, bench string) ([]*envelope.Header, error) {
	home, err := topo.HomeRegion()
	if err != nil {
		return nil, err
	}
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	run := hex.EncodeToString(rb[:])
	payload := make([]byte, 1024)
	_, _ = rand.Read(payload)
	hdrs := make([]*envelope.Header, n)
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for w := 0; w < 8; w++ {
		g.Go(func() error {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return nil
				}
				id := fmt.Sprintf("%s-%s-%05d", bench, run, i)
				hdr, err := envelope.Seal(gctx, io.Discard, bytes.NewReader(payload), home,
					envelope.SealOptions{ID: id, Context: map[string]string{"bench": bench}, HomeRegion: home.Name})
				if err != nil {
					return fmt.Errorf("seal %s: %w", id, err)
				}
				hdrs[i] = hdr
			}
		})
	}
	return hdrs, g.Wait()
}

// sendPaced sends the i-th envelope's event at start + i/rate (open loop: a late send does not
// delay the schedule; the events that are due go together, 10 to a batch), each with
// created_at = the moment its batch is built, which is the seal time the daemon measures from.
// onSent gets each envelope's record ID and created_at.
func sendPaced(ctx context.Context, c *sqs.Client, queueURL string, hdrs []*envelope.Header, rate float64,
	start time.Time, onSent func(string, time.Time), sentRate *float64) error {
	interval := time.Duration(float64(time.Second) / rate)
	next := 0
	var first, last time.Time
	for next < len(hdrs) {
		due := int(time.Since(start)/interval) + 1
		due = min(due, len(hdrs))
		for next < due {
			hi := min(next+10, due)
			at := time.Now()
			in := &sqs.SendMessageBatchInput{QueueUrl: aws.String(queueURL)}
			for i := next; i < hi; i++ {
				ev, err := envelope.NewEvent(hdrs[i], at, "")
				if err != nil {
					return err
				}
				body, err := envelope.EncodeEvent(ev)
				if err != nil {
					return err
				}
				in.Entries = append(in.Entries, sqstypes.SendMessageBatchRequestEntry{
					Id: aws.String(fmt.Sprintf("m%d", i-next)), MessageBody: aws.String(string(body))})
			}
			out, err := c.SendMessageBatch(ctx, in)
			if err != nil {
				return fmt.Errorf("SendMessageBatch: %w", err)
			}
			if len(out.Failed) > 0 {
				return fmt.Errorf("SendMessageBatch: %d entries failed: %s", len(out.Failed), aws.ToString(out.Failed[0].Message))
			}
			for i := next; i < hi; i++ {
				onSent(hdrs[i].RecordID(), at)
			}
			if first.IsZero() {
				first = at
			}
			last = at
			next = hi
		}
		if next >= len(hdrs) {
			break
		}
		if err := sleepUntil(ctx, start.Add(time.Duration(next)*interval)); err != nil {
			return err
		}
	}
	if len(hdrs) > 1 && last.After(first) {
		*sentRate = float64(len(hdrs)-1) / last.Sub(first).Seconds()
	}
	return nil
}

// sloDaemon is one `envdr run` (not --drain: the bench stops it once it has scraped the
// histogram) with its admin endpoint on a port the bench knows.
type sloDaemon struct {
	cmd    *exec.Cmd
	admin  string
	logf   *os.File
	exited chan struct{}
	start  time.Time
	m      Measurement
	once   sync.Once
}

func startSLODaemon(ctx context.Context, bin, cfgPath, logPath string) (*sloDaemon, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	d := &sloDaemon{admin: fmt.Sprintf("127.0.0.1:%d", port), logf: logf, exited: make(chan struct{})}
	d.cmd = exec.Command(bin, "--config", cfgPath, "run", "--admin-addr", d.admin)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.start = time.Now()
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	return d, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (d *sloDaemon) waitReady(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			return fmt.Errorf("the daemon exited before it was ready (log %s)", d.logf.Name())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		resp, err := http.Get("http://" + d.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("the daemon was not ready within %s (log %s)", within, d.logf.Name())
}

// daemonScrape is one read of the daemon's /metrics: the protection histogram and the
// scrubber's counters, and when it was taken.
type daemonScrape struct {
	at    time.Time
	hist  *HistogramEstimate
	scrub scrubCounters
}

func (d *sloDaemon) scrape(ctx context.Context) (*daemonScrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	at := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	fams, err := parseMetrics(resp.Body)
	if err != nil {
		return nil, err
	}
	h, ok := histogramOf(fams, protectionMetric)
	if !ok {
		return nil, fmt.Errorf("no histogram %s in /metrics", protectionMetric)
	}
	return &daemonScrape{at: at, hist: &h, scrub: scrubCountersOf(fams)}, nil
}

// stop sends SIGTERM, waits (SIGKILL after 45 s) and returns the daemon's rusage.
func (d *sloDaemon) stop() Measurement {
	d.once.Do(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(45 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
		_ = d.logf.Close()
		d.m = Measurement{Label: "envdr-run", WallS: time.Since(d.start).Seconds(), Command: strings.Join(d.cmd.Args, " ")}
		fillUsage(&d.m, d.cmd.ProcessState)
	})
	return d.m
}

func (d *sloDaemon) kill() { d.stop() }

// logFollower reads the lines the daemon has appended to its JSON log since the last poll.
type logFollower struct {
	path    string
	off     int64
	partial []byte
}

// poll records the first "event replicated" time of each envelope in acks and counts every
// outcome line in res.
func (f *logFollower) poll(acks map[string]time.Time, res *SLOCase) error {
	fh, err := os.Open(f.path)
	if err != nil {
		return err
	}
	defer fh.Close()
	if _, err := fh.Seek(f.off, io.SeekStart); err != nil {
		return err
	}
	b, err := io.ReadAll(bufio.NewReader(fh))
	if err != nil {
		return err
	}
	f.off += int64(len(b))
	b = append(f.partial, b...)
	end := bytes.LastIndexByte(b, '\n')
	if end < 0 {
		f.partial = b
		return nil
	}
	f.partial = append([]byte(nil), b[end+1:]...)
	for _, line := range bytes.Split(b[:end], []byte{'\n'}) {
		recordLogLine(line, acks, res)
	}
	return nil
}

func recordLogLine(line []byte, acks map[string]time.Time, res *SLOCase) {
	var l struct {
		TS    string `json:"ts"`
		Msg   string `json:"msg"`
		Level string `json:"level"`
		ID    string `json:"id"`
	}
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	if json.Unmarshal(line, &l) != nil {
		res.Outcomes["(not JSON)"]++
		return
	}
	if l.ID == "" {
		if l.Level != "info" {
			res.Outcomes[l.Level+": "+l.Msg]++
		}
		return
	}
	res.Outcomes[l.Msg]++
	if l.Msg != "event replicated" {
		return
	}
	res.Acks++
	ts, err := parseLogTime(l.TS)
	if err != nil {
		return
	}
	if _, seen := acks[l.ID]; !seen {
		acks[l.ID] = ts
	}
}

// verifiedAtTimes reads every record through the home region and returns, per sent envelope,
// the seconds from its seal time to the latest verified_at among the required regions.
func verifiedAtTimes(ctx context.Context, topo *regions.Topology, cfg *config.Config, sent map[string]time.Time) ([]float64, error) {
	home, err := topo.HomeRegion()
	if err != nil {
		return nil, err
	}
	store := replicate.NewStore(cfg.Table, home.Name, home.DynamoDB(), cfg.RegionNames())
	required := cfg.Policy.Required
	if len(required) == 0 {
		required = cfg.RegionNames()
	}
	var out []float64
	err = store.Scan(ctx, 0, 1, func(r *envelope.Record) error {
		at, ok := sent[r.ID]
		if !ok {
			return nil
		}
		var latest time.Time
		for _, name := range required {
			w := r.Regions[name]
			if !w.Verified() {
				return nil // not verified everywhere: the checks report it
			}
			if w.VerifiedAt.After(latest) {
				latest = w.VerifiedAt
			}
		}
		out = append(out, latest.Sub(at).Seconds())
		return nil
	})
	return out, err
}

// writeEnvelopeTimes writes every sent envelope's times as CSV, in sending order: its ID, its
// seal time and first ack as seconds after the first send, and its protection time (empty
// when it was never acknowledged).
func writeEnvelopeTimes(path string, sent, acks map[string]time.Time, start time.Time) error {
	type row struct {
		id      string
		at, ack time.Time
		ok      bool
	}
	rows := make([]row, 0, len(sent))
	for id, at := range sent {
		ack, ok := acks[id]
		rows = append(rows, row{id, at, ack, ok})
	}
	sort.Slice(rows, func(i, j int) bool {
		return rows[i].at.Before(rows[j].at) || rows[i].at.Equal(rows[j].at) && rows[i].id < rows[j].id
	})
	var b bytes.Buffer
	b.WriteString("id,sealed_s,acked_s,protection_s\n")
	for _, r := range rows {
		if r.ok {
			fmt.Fprintf(&b, "%s,%.3f,%.3f,%.3f\n", r.id, r.at.Sub(start).Seconds(), r.ack.Sub(start).Seconds(), r.ack.Sub(r.at).Seconds())
		} else {
			fmt.Fprintf(&b, "%s,%.3f,,\n", r.id, r.at.Sub(start).Seconds())
		}
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// countAcked is how many of hdrs have an acknowledgement in acks.
func countAcked(acks map[string]time.Time, hdrs []*envelope.Header) int {
	n := 0
	for _, h := range hdrs {
		if _, ok := acks[h.RecordID()]; ok {
			n++
		}
	}
	return n
}
