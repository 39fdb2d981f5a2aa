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
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
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
)

// sloGoalS is the goal of issue 23: p99.99 of the protection time within 15 s under 1 s of lag.
const sloGoalS = 15.0

// protectionMetric is the daemon's histogram the bench reads next to its own per-envelope times.
const protectionMetric = "envdr_protection_seconds"

// SLOCase is one case's result (the JSON written under .bench/).
type SLOCase struct {
	Case        string  `json:"case"`
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
	// Met: p99.99 (exact) within the goal. Judged only in the lag case; the others are
	// there to show how far an overload or an outage moves it.
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
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "give up on a case after this long")
	fs.StringVar(&o.Dir, "dir", ".bench", "write slo-<case>.json, slo.json, slo.txt and the daemon logs here")
	cases := fs.String("cases", strings.Join([]string{caseLag, caseQuota, caseLoss}, ","), "the cases to run, in order")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.Seed = uint64(*seed)
	if o.N < 1 || o.Rate <= 0 || o.QuotaFrac <= 0 || o.LossAt < 0 || o.LossAt > 1 {
		return errors.New("--n, --rate and --quota-frac must be positive, --loss-at within 0..1")
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep := &SLOReport{Started: time.Now().UTC().Format(time.RFC3339), GoalS: sloGoalS}
	var errs []error
	for _, c := range strings.Split(*cases, ",") {
		c = strings.TrimSpace(c)
		switch c {
		case caseLag, caseQuota, caseLoss:
		default:
			return fmt.Errorf("--cases: unknown case %q (use %s, %s, %s)", c, caseLag, caseQuota, caseLoss)
		}
		fmt.Fprintf(os.Stderr, "slo: case %s: %d envelopes at %.0f/s (load %s)\n", c, o.N, o.Rate, loadAvg())
		res, err := sloCase(ctx, o, c)
		if res != nil {
			rep.Cases = append(rep.Cases, res)
			if werr := writeJSON(filepath.Join(o.Dir, "slo-"+c+".json"), res); werr != nil {
				errs = append(errs, werr)
			}
			fmt.Fprintf(os.Stderr, "slo: case %s: p50 %.2fs p99 %.2fs p99.9 %.2fs p99.99 %.2fs max %.2fs (histogram p99.99 %s)\n",
				c, res.Exact.P50, res.Exact.P99, res.Exact.P999, res.Exact.P9999, res.Exact.Max, histP9999(res))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("case %s: %w", c, err))
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
func sloCase(ctx context.Context, o sloOptions, c string) (*SLOCase, error) {
	bin, err := envdrBinary(o.Bin)
	if err != nil {
		return nil, err
	}
	s, err := newStandIn(ctx)
	if err != nil {
		return nil, err
	}
	defer s.close()
	res := &SLOCase{Case: c, N: o.N, OfferedRate: o.Rate, LagS: o.Lag.Seconds(), JitterS: o.Jitter.Seconds(), Seed: o.Seed,
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

	logPath := filepath.Join(o.Dir, "slo-"+c+".log")
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
			hist0, err = d.scrape(wctx)
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
		h, err := d.scrape(ctx)
		if err != nil {
			res.Problems = append(res.Problems, "scraping "+protectionMetric+": "+err.Error())
		} else {
			if hist0 != nil {
				*h = h.minus(*hist0)
			}
			hist = h
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
	if err := writeEnvelopeTimes(filepath.Join(o.Dir, "slo-"+c+"-envelopes.csv"), sent, acks, start); err != nil {
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
	if c == caseLag && res.Exact.Count == o.N {
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
	if err := checkResults(ctx, topo, &applied, ids, rr); err != nil {
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

func (d *sloDaemon) scrape(ctx context.Context) (*HistogramEstimate, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	h, ok, err := parseProtectionHistogram(resp.Body, protectionMetric)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("no histogram %s in /metrics", protectionMetric)
	}
	return &h, nil
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
