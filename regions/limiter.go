package regions

import (
	"context"
	"fmt"
	"math"
	mathrand "math/rand/v2"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The KMS limiter of a region adapts to ThrottlingException. kms_rate is only an upper bound:
// several daemons sharing one region's quota are not told their share, and each finds it.
//
//   - Decrease: on a ThrottlingException the limit drops to a jittered 60-80 % (RateBackoffMin,
//     RateBackoffMax) of the rate this process was actually getting through (its accepted KMS
//     calls per second, a 1 s moving average), or of its limit if that is lower. That rate is
//     remembered as the quota share found. Throttles answered during a jittered 0.5-1 s hold
//     after a decrease belong to the same burst (calls sent at the old rate) and do not lower it
//     again, unless what gets through is still clearly below the limit (the first throttle of a
//     start-up comes before any rate is measured). Calls waiting for their turn when the rate
//     is lowered, or has grown by a quarter (RateRenewAbove), take a new turn at the new rate.
//   - Recovery, with time and never with the number of calls: the limit closes the gap to the
//     share found exponentially (RateApproachPerSecond, about 60 % of the gap per second) and
//     probes above it slowly, linearly, by RateProbePerSecond of the share found per second (at
//     least RateProbeFloor of kms_rate, but from that floor no more than RateProbeCap of the
//     share), so that a process converges on its share with a small, bounded overshoot instead
//     of hammering the quota. The probe slope and the approach speed are jittered per decrease,
//     so processes do not fall into step.
//   - A share found is forgotten once the probe has climbed to RateForgetAbove times it without
//     a throttle (the quota was raised, or other processes left); the limit then climbs back to
//     kms_rate by RateRecoveryPerSecond of kms_rate per second, as when nothing was throttled.
//
// The additive floor of the probe and a decrease proportional to the rate make this AIMD: the
// process sending more is throttled more often and gives back more, so several processes drift
// towards equal shares (regions/limiter_test.go simulates it).
const (
	// RateRecoveryPerSecond is the share of kms_rate the limit regains per second while no quota
	// share is known (never throttled, or the share was forgotten).
	RateRecoveryPerSecond = 0.10
	// RateBackoffMin and RateBackoffMax bound the jittered factor a throttle multiplies the rate by.
	RateBackoffMin, RateBackoffMax = 0.6, 0.8
	// RateApproachPerSecond is how fast the limit closes the gap to the share found (1/s: the gap
	// shrinks by e^-t; jittered ±25 % per decrease).
	RateApproachPerSecond = 1.0
	// RateProbePerSecond is how fast the limit probes above the share found: this share of it per
	// second (jittered 0.5-1.5x per decrease), but at least RateProbeFloor of kms_rate per second
	// (the additive part, the same for every process, that pulls shares together), and from that
	// floor at most RateProbeCap of the share per second (a tiny share is not overrun).
	RateProbePerSecond = 0.03
	RateProbeFloor     = 0.005
	RateProbeCap       = 0.25
	// RateForgetAbove: a probe this many times above the share found, not throttled, forgets it.
	RateForgetAbove = 1.5
	// RateRenewAbove: once the limit has grown this many times above the rate its bucket was
	// made at, the bucket is renewed, so that calls waiting on turns taken at the low rate are
	// not held to it.
	RateRenewAbove = 1.25
	// rateHoldMin/Max bound the jittered time after a decrease in which throttles do not lower
	// the rate again; rateWindow is the time constant of the accepted-rate average.
	rateHoldMin, rateHoldMax = 500 * time.Millisecond, time.Second
	rateWindow               = time.Second
	minRate                  = 1.0
)

// kmsLimiter is a region's KMS token bucket (golang.org/x/time/rate) with the adaptive rate
// described above. Its clock (now) and jitter source (rnd, uniform in [0, 1)) are injectable.
type kmsLimiter struct {
	max float64 // kms_rate: the limit never exceeds it
	now func() time.Time
	rnd func() float64

	mu       sync.Mutex
	tb       *rate.Limiter // replaced by a new one when the rate is lowered or has grown (renewLocked)
	tbRate   float64       // the rate tb was made at
	at       time.Time     // the last change of the limit; recovery counts the time since
	found    float64       // the accepted rate at the last throttle, requests/s; 0: none known
	hold     time.Time     // throttles before this do not lower the rate again
	probe    float64       // this epoch's probe slope, requests/s per second
	approach float64       // this epoch's approach constant, 1/s
	est      float64       // accepted calls per second, exponentially weighted (rateWindow)
	estAt    time.Time     // time of est
	estFrom  time.Time     // first accepted call: corrects est's bias while it warms up
	// renewed is closed when tb is replaced: calls waiting on a reservation made at the old rate
	// take a new one at the new rate (a reservation's time is fixed when it is made: 64 workers
	// waiting at 20/s would keep sending at 20/s for 3 s after a decrease, and at 2/s for half a
	// minute after the rate has recovered).
	renewed chan struct{}
}

func newKMSLimiter(kmsRate float64, now func() time.Time, rnd func() float64) *kmsLimiter {
	if rnd == nil {
		rnd = mathrand.Float64
	}
	l := &kmsLimiter{max: kmsRate, now: now, rnd: rnd, renewed: make(chan struct{}), tbRate: kmsRate}
	l.tb = rate.NewLimiter(rate.Limit(kmsRate), burstFor(kmsRate))
	return l
}

// burstFor is a tenth of a second's worth of calls, at least one: the bucket follows the limit
// down, so a lowered rate is not undone by a burst sized for kms_rate.
func burstFor(r float64) int { return max(1, int(r/10)) }

// wait blocks until a call may be sent, or ctx ends. When the bucket is renewed meanwhile (the
// rate lowered, or grown by a quarter), the call takes a new turn at the new rate.
func (l *kmsLimiter) wait(ctx context.Context) error {
	for {
		res, d, renewed := l.reserve()
		if d <= 0 {
			return nil
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			res.CancelAt(l.now())
			return fmt.Errorf("KMS rate limit: a wait of %s would run past the deadline", d.Round(time.Millisecond))
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
			return nil
		case <-renewed:
			t.Stop() // a new bucket at the new rate: this turn is void
		case <-ctx.Done():
			t.Stop()
			res.CancelAt(l.now())
			return ctx.Err()
		}
	}
}

// reserve takes the next turn for one call: the call may be sent after d; renewed is closed if
// the bucket is renewed before (then the turn is void: reserve again).
func (l *kmsLimiter) reserve() (res *rate.Reservation, d time.Duration, renewed <-chan struct{}) {
	l.mu.Lock()
	tb, renewed := l.tb, l.renewed
	l.mu.Unlock()
	now := l.now()
	res = tb.ReserveN(now, 1) // never more than the burst, which is at least 1
	return res, res.DelayFrom(now), renewed
}

// limit is the current rate, requests/s.
func (l *kmsLimiter) limit() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return float64(l.tb.Limit())
}

// accepted records a KMS call that was answered (not throttled) and lets the rate recover.
func (l *kmsLimiter) accepted() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.estFrom.IsZero() {
		l.estFrom = now
	}
	l.est = l.decayedLocked(now) + 1/rateWindow.Seconds()
	l.estAt = now
	l.recoverLocked(now)
}

// answered lets the rate recover with time without counting a call (an answer other than a
// throttle that is not an accepted call: a permanent error, say).
func (l *kmsLimiter) answered() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recoverLocked(l.now())
}

// throttled lowers the rate on a ThrottlingException, unless the hold of the last decrease is on.
func (l *kmsLimiter) throttled() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.recoverLocked(now) // count the time since the last change first
	cur := float64(l.tb.Limit())
	r := l.rateLocked(now)
	if now.Before(l.hold) && (r == 0 || r*RateBackoffMax >= cur) {
		return // the same burst, and the limit is already below what gets through
	}
	share := cur
	if r > 0 && r < share {
		share = r
	}
	l.found = share
	l.renewLocked(now, share*(RateBackoffMin+(RateBackoffMax-RateBackoffMin)*l.rnd()))
	l.hold = now.Add(rateHoldMin + time.Duration(l.rnd()*float64(rateHoldMax-rateHoldMin)))
	l.probe = max(RateProbePerSecond*share, min(RateProbeFloor*l.max, RateProbeCap*share)) * (0.5 + l.rnd())
	l.approach = RateApproachPerSecond * (0.75 + 0.5*l.rnd())
}

// recoverLocked raises the limit for the time since the last change (see the constants).
func (l *kmsLimiter) recoverLocked(now time.Time) {
	cur := float64(l.tb.Limit())
	if cur >= l.max {
		l.at = now
		return
	}
	dt := now.Sub(l.at).Seconds()
	if dt <= 0 {
		return
	}
	var next float64
	if l.found == 0 {
		next = cur + l.max*RateRecoveryPerSecond*dt
	} else {
		gap := max(l.found-cur, 0)
		next = cur + gap*(1-math.Exp(-l.approach*dt)) + l.probe*dt
		if next >= RateForgetAbove*l.found {
			l.found = 0
		}
	}
	l.setLocked(now, next)
}

// setLocked raises the limit to r (within minRate and kms_rate), renewing the bucket once r
// has grown by RateRenewAbove since it was made.
func (l *kmsLimiter) setLocked(now time.Time, r float64) {
	r = min(max(r, minRate), l.max)
	if r >= RateRenewAbove*l.tbRate {
		l.renewLocked(now, r)
		return
	}
	l.tb.SetLimitAt(now, rate.Limit(r))
	l.tb.SetBurstAt(now, burstFor(r))
	l.at = now
}

// renewLocked replaces the bucket with a new, empty one at r: the turns taken at the old rate,
// by calls still waiting for them, are void and those calls queue again at the new rate
// (cancelling the reservations would give back almost nothing: a reservation returns its
// tokens only if none were reserved after it). Empty: no burst into a quota just found
// exhausted.
func (l *kmsLimiter) renewLocked(now time.Time, r float64) {
	r = min(max(r, minRate), l.max)
	l.tb = rate.NewLimiter(rate.Limit(r), burstFor(r))
	l.tb.AllowN(now, burstFor(r))
	l.tbRate, l.at = r, now
	close(l.renewed)
	l.renewed = make(chan struct{})
}

func (l *kmsLimiter) decayedLocked(now time.Time) float64 {
	if l.estAt.IsZero() {
		return 0
	}
	return l.est * math.Exp(-now.Sub(l.estAt).Seconds()/rateWindow.Seconds())
}

// rateLocked is the accepted calls per second over about the last rateWindow; 0 when unknown.
func (l *kmsLimiter) rateLocked(now time.Time) float64 {
	if l.estFrom.IsZero() {
		return 0
	}
	warm := 1 - math.Exp(-now.Sub(l.estFrom).Seconds()/rateWindow.Seconds())
	if warm < 0.1 {
		return 0 // under a tenth of a window: too few calls to tell
	}
	return l.decayedLocked(now) / warm
}
