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
	answer   bool // false: a backoff ended, the worker is ready again
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

// simResult is what a simulated run measured after its warm-up.
type simResult struct {
	accepted, throttled []int64   // per process
	utilisation         float64   // accepted calls / (quota × time)
	throttleFraction    float64   // throttled / all answers
	limits              []float64 // each process's limit at the end
}

// simQuota describes a simulated run: procs daemons, each with its own kmsLimiter at kmsRate
// and workers concurrent calls that always have work, against one region's quota of q
// requests/s, a token bucket with burst seconds' worth of burst (the stand-in's KMS: 1 s).
// Calls take latency (±50 %); a throttled call is retried after Region.do's jittered exponential
// backoff. The first warm of total is not counted.
type simQuota struct {
	seed              uint64
	procs, workers    int
	q, kmsRate, burst float64
	latency           time.Duration
	warm, total       time.Duration
}

// simulateQuota runs s on a fake clock in steps of 1 ms.
func simulateQuota(s simQuota) simResult {
	seed, procs, q, workers, latency := s.seed, s.procs, s.q, s.workers, s.latency
	rng := rand.New(rand.NewPCG(seed, 1))
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	server := rate.NewLimiter(rate.Limit(q), max(1, int(q*s.burst)))
	server.AllowN(now, 0)
	lims := make([]*kmsLimiter, procs)
	idle := make([]int, procs)
	for i := range lims {
		prng := rand.New(rand.NewPCG(seed, uint64(i)+2))
		lims[i] = newKMSLimiter(s.kmsRate, clock, prng.Float64)
		lims[i].tb.AllowN(now, 0)
		idle[i] = workers
	}
	res := simResult{accepted: make([]int64, procs), throttled: make([]int64, procs)}
	var events simQueue
	start, end := now.Add(s.warm), now.Add(s.total)
	const tick = time.Millisecond
	for ; now.Before(end); now = now.Add(tick) {
		for events.due(now) {
			e := heap.Pop(&events).(simEvent)
			switch {
			case !e.answer:
				idle[e.proc]++
			case e.ok:
				lims[e.proc].accepted()
				idle[e.proc]++
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
			for idle[p] > 0 && lims[p].tb.AllowN(now, 1) {
				idle[p]--
				ok := server.AllowN(now, 1)
				if !now.Before(start) {
					if ok {
						res.accepted[p]++
					} else {
						res.throttled[p]++
					}
				}
				lat := time.Duration(float64(latency) * (0.5 + rng.Float64()))
				heap.Push(&events, simEvent{at: now.Add(lat), proc: p, answer: true, ok: ok, attempts: 1})
			}
		}
	}
	var acc, thr int64
	for i := range procs {
		acc += res.accepted[i]
		thr += res.throttled[i]
		res.limits = append(res.limits, lims[i].limit())
	}
	res.utilisation = float64(acc) / (q * (s.total - s.warm).Seconds())
	res.throttleFraction = float64(thr) / float64(acc+thr)
	return res
}

// Several daemons that are each allowed kms_rate 1000 share one region's quota of 300 req/s and
// are not told their share: together they use at least 90 % of it, with under 5 % of the calls
// throttled, and each gets roughly a fair share. One process alone finds the quota too. The
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
// answers throttled, and every process within ±35 % of the fair share.
func checkShared(t *testing.T, s simQuota, res simResult) {
	t.Helper()
	t.Logf("utilisation %.3f, throttled %.4f, accepted %v, throttled %v, limits %.1f",
		res.utilisation, res.throttleFraction, res.accepted, res.throttled, res.limits)
	require.GreaterOrEqual(t, res.utilisation, 0.90, "share of the quota used")
	require.LessOrEqual(t, res.utilisation, 1.0+s.burst/(s.total-s.warm).Seconds()+0.001, "never above the quota (and its burst)")
	require.LessOrEqual(t, res.throttleFraction, 0.05, "throttled answers / all answers")
	var total int64
	for _, a := range res.accepted {
		total += a
	}
	for i, a := range res.accepted {
		share := float64(a) / float64(total) * float64(s.procs)
		require.InDelta(t, 1, share, 0.35, "process %d's share of the calls, 1 = fair", i)
	}
}
