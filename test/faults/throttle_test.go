package faults

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestThrottling limits every region's KMS stand-in far below what the daemon asks for (its
// own limiter allows 1000 req/s per region and 16 events run at once). Nothing may fail: every
// envelope is replicated and verified, none is dead-lettered, and the daemon's /metrics show
// the throttling it backed off from.
func TestThrottling(t *testing.T) {
	t.Parallel()
	const rps = 10
	s := newSuite(t, nil)
	es := s.sealN(scaled(40, 400), map[string]string{"app": "throttle"})
	for _, r := range s.env.Regions {
		s.env.SetRateLimit(r, rps)
	}
	s.send(bodies(es)...)
	start := time.Now()
	d := s.startDaemon("daemon")
	d.waitUp()
	s.waitAcked(ids(es), time.Duration(len(es))*time.Second+2*time.Minute)
	s.waitDrained(time.Minute)
	elapsed := time.Since(start)
	throttles, err := d.metric("envdr_kms_throttles_total", nil)
	require.NoError(t, err)
	poisoned, err := d.metric("envdr_events_total", map[string]string{"outcome": "poison"})
	require.NoError(t, err)
	retries, err := d.metric("envdr_events_total", map[string]string{"outcome": "retry"})
	require.NoError(t, err)
	calls, err := d.metric("envdr_kms_calls_total", map[string]string{"region": "eu-west-1", "result": "ok"})
	require.NoError(t, err)
	require.Equal(t, 0, d.term(30*time.Second))
	for _, r := range s.env.Regions {
		s.env.SetRateLimit(r, 0)
	}

	require.Positive(t, throttles, "the stand-in throttled and the daemon saw it (envdr_kms_throttles_total)")
	require.Zero(t, poisoned)
	require.Empty(t, s.drainDLQ())
	lost, corrupted := s.checkRecords(es)
	require.Zero(t, lost+corrupted)
	// The quota bounds the run: eu-west-1 needs ReEncrypt + Decrypt per envelope.
	bound := time.Duration(float64(2*len(es))/rps*float64(time.Second)) - 2*time.Second
	require.Greater(t, elapsed, bound, "faster than the stand-in's quota allows: was it limited?")
	report(t, "faults-throttle.md", fmt.Sprintf(
		"throttling: %d envelopes, KMS limited to %d req/s per region: acked %d, failed 0, DLQ 0; "+
			"ThrottlingException answers backed off from (envdr_kms_throttles_total): %.0f; deliveries retried: %.0f; "+
			"eu-west-1 successful KMS calls %.0f in %s (%.1f/s against a %d/s quota)\n",
		len(es), rps, s.ackedOf(ids(es)), throttles, retries, calls, elapsed.Round(100*time.Millisecond), calls/elapsed.Seconds(), rps))
}
