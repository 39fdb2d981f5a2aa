package regions

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// simEvent is an answer reaching a simulated worker, or a worker's retry backoff ending.
type simEvent struct {
	at       time.Time
	proc     int
	answer   bool // false: a backoff ended, the worker is ready to retry
	ok       bool // the answer was not ThrottlingException
	attempts int  // tries of the call so far
}

type simQueue []simEvent

func (q simQueue) Len() int             { return len(q) }
func (q simQueue) Less(i, j int) bool   { return q[i].at.Before(q[j].at) }
func (q simQueue) Swap(i, j int)        { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)          { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any            { e := (*q)[len(*q)-1]; *q = (*q)[:len(*q)-1]; return e }
func (q simQueue) due(t time.Time) bool { return len(q) > 0 && !q[0].at.After(t) }

// simWaiter is a worker waiting for its turn (kmsLimiter.wait, unrolled onto the fake clock).
type simWaiter struct {
	res      *rate.Reservation
	at       time.Time
	renewed  <-chan struct{}
	attempts int // tries of this call so far
}

// simResult is what a simulated run measured.
type simResult struct {
	accepted, throttled []int64   // per process, after the warm-up
	utilisation         float64   // accepted calls / (quota × time), after the warm-up
	throttleFraction    float64   // throttled / all answers, after the warm-up
	throttleAll         float64   // throttled / all answers, the whole run (start-up included)
	limits              []float64 // each process's limit at the end
}

// simQuota describes a simulated run: procs daemons, each with its own kmsLimiter at kmsRate
// and workers concurrent calls that always have work, against one region's quota of q
// requests/s, a token bucket with burst seconds' worth of burst (the stand-in's KMS: 1 s).
// Each call waits for its turn as kmsLimiter.wait does (a reservation, taken again when the
// rate is renewed), takes latency (±50 %) to be answered, and when throttled is retried after
// Region.do's jittered exponential backoff. Figures but throttleAll leave out the first warm.
type simQuota struct {
	seed              uint64
	procs, workers    int
	q, kmsRate, burst float64
	latency           time.Duration
	warm, total       time.Duration
}

// simulateQuota runs s on a fake clock in steps of 1 ms.
func simulateQuota(s simQuota) simResult {
	procs := s.procs
	rng := rand.New(rand.NewPCG(s.seed, 1))
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	start, end := now.Add(s.warm), now.Add(s.total)
	server := rate.NewLimiter(rate.Limit(s.q), max(1, int(s.q*s.burst)))
	server.AllowN(now, 0)
	lims := make([]*kmsLimiter, procs)
	waiting := make([][]simWaiter, procs)
	next := make([]time.Time, procs)       // the earliest turn among waiting[p]
	seen := make([]<-chan struct{}, procs) // lims[p].renewed when waiting[p] was last looked at
	wait := func(p, attempts int) {
		res, d, renewed := lims[p].reserve()
		waiting[p] = append(waiting[p], simWaiter{res: res, at: now.Add(d), renewed: renewed, attempts: attempts})
		next[p] = minTime(next[p], now.Add(d))
	}
	for p := range lims {
		prng := rand.New(rand.NewPCG(s.seed, uint64(p)+2))
		lims[p] = newKMSLimiter(s.kmsRate, clock, prng.Float64)
		for range s.workers {
			wait(p, 1)
		}
	}
	res := simResult{accepted: make([]int64, procs), throttled: make([]int64, procs)}
	var events simQueue
	var answers, throttles int64
	const tick = time.Millisecond
	for ; now.Before(end); now = now.Add(tick) {
		for events.due(now) {
			e := heap.Pop(&events).(simEvent)
			switch {
			case !e.answer:
				wait(e.proc, e.attempts+1)
			case e.ok:
				lims[e.proc].accepted()
				wait(e.proc, 1)
			default:
				lims[e.proc].throttled()
				backoff := min(25*time.Millisecond<<(e.attempts-1), 2*time.Second)
				backoff = time.Duration(float64(backoff) * (0.7 + 0.6*rng.Float64()))
				heap.Push(&events, simEvent{at: now.Add(backoff), proc: e.proc, attempts: e.attempts})
			}
		}
		off := rng.IntN(procs) // no process is always first in line
		for k := range procs {
			p := (k + off) % procs
			if now.Before(next[p]) && seen[p] == lims[p].renewed {
				continue // nobody's turn yet, and no turn made void
			}
			seen[p], next[p] = lims[p].renewed, end
			ws := waiting[p]
			waiting[p] = nil
			for _, w := range ws {
				if w.renewed != lims[p].renewed { // renewed since: the turn is void
					wait(p, w.attempts)
					continue
				}
				if w.at.After(now) {
					waiting[p] = append(waiting[p], w)
					next[p] = minTime(next[p], w.at)
					continue
				}
				ok := server.AllowN(now, 1)
				answers++
				if !ok {
					throttles++
				}
				if !now.Before(start) {
					if ok {
						res.accepted[p]++
					} else {
						res.throttled[p]++
					}
				}
				lat := time.Duration(float64(s.latency) * (0.5 + rng.Float64()))
				heap.Push(&events, simEvent{at: now.Add(lat), proc: p, answer: true, ok: ok, attempts: w.attempts})
			}
		}
	}
	var acc, thr int64
	for p := range procs {
		acc += res.accepted[p]
		thr += res.throttled[p]
		res.limits = append(res.limits, lims[p].limit())
	}
	res.utilisation = float64(acc) / (s.q * (s.total - s.warm).Seconds())
	res.throttleFraction = float64(thr) / float64(acc+thr)
	res.throttleAll = float64(throttles) / float64(answers)
	return res
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// Several daemons that are each allowed kms_rate 1000 share one region's quota of 300 req/s and
// are not told their share: together they use at least 90 % of it, with few calls throttled,
// and each gets roughly a fair share. One process alone finds the quota too. The
// quota's burst is the stand-in's (a second's worth), or a twentieth of a second's, where the
// server's bucket hides less of the limiter's overshoot and undershoot.
func TestLimiterSharesOneQuota(t *testing.T) {
	t.Parallel()
	for _, burst := range []float64{1, 0.05} {
		for _, procs := range []int{1, 2, 3} {
			for seed := uint64(1); seed <= 2; seed++ {
				s := simQuota{seed: seed, procs: procs, workers: 64, q: 300, kmsRate: 1000, burst: burst,
					latency: 10 * time.Millisecond, warm: 20 * time.Second, total: 140 * time.Second}
				t.Run(fmt.Sprintf("burst=%gs/procs=%d/seed=%d", burst, procs, seed), func(t *testing.T) {
					t.Parallel()
					checkShared(t, s, simulateQuota(s))
				})
			}
		}
	}
}

// The quota is low against kms_rate (60 req/s against 1000), or shared by many processes with
// few workers each and a long latency: the limiter still finds it.
func TestLimiterFindsALowQuota(t *testing.T) {
	t.Parallel()
	for _, s := range []simQuota{
		{seed: 7, procs: 3, workers: 64, q: 60, kmsRate: 1000, burst: 1, latency: 10 * time.Millisecond},
		{seed: 8, procs: 3, workers: 8, q: 60, kmsRate: 1000, burst: 0.05, latency: 30 * time.Millisecond},
		{seed: 9, procs: 10, workers: 16, q: 300, kmsRate: 1000, burst: 0.05, latency: 50 * time.Millisecond},
	} {
		s.warm, s.total = 20*time.Second, 140*time.Second
		t.Run(fmt.Sprintf("q=%g/procs=%d/workers=%d", s.q, s.procs, s.workers), func(t *testing.T) {
			t.Parallel()
			checkShared(t, s, simulateQuota(s))
		})
	}
}

// checkShared asserts at least 90 % of the quota used, never more than it, at most 5 % of the
// answers throttled after the warm-up and 10 % with the start-up (every process starts at
// kms_rate and sends its workers' calls at once), and every process within ±50 % of the fair
// share: the shares drift (nothing pulls them together but the additive part of the probe and
// being throttled in proportion to the rate), but none starves.
func checkShared(t *testing.T, s simQuota, res simResult) {
	t.Helper()
	t.Logf("utilisation %.3f, throttled %.4f (whole run %.4f), accepted %v, throttled %v, limits %.1f",
		res.utilisation, res.throttleFraction, res.throttleAll, res.accepted, res.throttled, res.limits)
	require.GreaterOrEqual(t, res.utilisation, 0.90, "share of the quota used")
	require.LessOrEqual(t, res.utilisation, 1.0+s.burst/(s.total-s.warm).Seconds()+0.001, "never above the quota (and its burst)")
	require.LessOrEqual(t, res.throttleFraction, 0.05, "throttled answers / all answers")
	require.LessOrEqual(t, res.throttleAll, 0.10, "throttled answers / all answers, start-up included")
	var total int64
	for _, a := range res.accepted {
		total += a
	}
	for i, a := range res.accepted {
		share := float64(a) / float64(total) * float64(s.procs)
		require.InDelta(t, 1, share, 0.5, "process %d's share of the calls, 1 = fair", i)
	}
}
