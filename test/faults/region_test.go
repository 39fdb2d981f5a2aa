package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRegionLoss takes eu-west-1 down (KMS, SQS and DynamoDB endpoints refuse connections)
// while the daemon process works, kills the daemon once during the outage, and brings the
// region back. During the outage the other regions keep progressing and no event that needs
// eu-west-1 is acknowledged; afterwards eu-west-1 is filled in and every envelope opens
// through it alone.
func TestRegionLoss(t *testing.T) {
	t.Parallel()
	const lost = "eu-west-1"
	s := newSuite(t, nil)
	before := s.sealN(scaled(20, 200), map[string]string{"app": "region-loss", "phase": "before"})
	s.send(bodies(before)...)
	d := s.startDaemon("daemon 1")
	s.waitAcked(ids(before), 2*time.Minute)
	s.waitDrained(time.Minute)

	s.env.Down(lost)
	downAt := time.Now()
	during := s.sealN(scaled(30, 300), map[string]string{"app": "region-loss", "phase": "during"})
	s.send(bodies(during)...)
	// The healthy regions progress: every event gets verified wraps in us-east-1 and
	// ap-southeast-2, and nothing for the lost region (its failures are logged and counted,
	// never written: no item without a wrap, docs/FORMAT.md §6.1, I3).
	home := s.store("us-east-1")
	require.Eventually(t, func() bool {
		for _, e := range during {
			rec, err := home.Get(context.Background(), e.id)
			if err != nil || !rec.Regions["us-east-1"].Verified() || !rec.Regions["ap-southeast-2"].Verified() {
				return false
			}
			if w := rec.Regions[lost]; w != nil {
				return false
			}
		}
		return true
	}, 90*time.Second, 250*time.Millisecond, "the healthy regions must progress while %s is down", lost)
	failures, err := d.metric("envdr_region_failures_total", map[string]string{"region": lost, "phase": "wrap"})
	require.NoError(t, err)
	require.Positive(t, failures, "the lost region's failed wraps are counted")

	// A crash during the outage changes nothing: the next daemon starts without the lost
	// region (it is unreachable, not misconfigured) and picks up the same work.
	d.kill()
	d = s.startDaemon("daemon 2")
	d.waitUp()
	// Keep the region down across several redeliveries (and the requeue before redrive).
	time.Sleep(time.Duration(scaled(8, 30)) * time.Second)
	require.Zero(t, s.ackedOf(ids(during)), "no event may be acknowledged before %s holds a verified wrap", lost)
	require.GreaterOrEqual(t, s.depth(), len(during), "every event still on the queue during the outage")
	outage := time.Since(downAt)

	s.env.Up(lost)
	upAt := time.Now()
	s.waitAcked(ids(during), 3*time.Minute)
	s.waitDrained(time.Minute)
	fill := time.Since(upAt)
	requeued, err := d.metric("envdr_requeued_total", nil)
	require.NoError(t, err)
	require.Equal(t, 0, d.term(30*time.Second))

	all := append(append([]*sealed(nil), before...), during...)
	lostN, corrupted := s.checkRecords(all)
	require.Zero(t, lostN+corrupted)
	require.Empty(t, s.drainDLQ())
	for i := 0; i < 2; i++ {
		s.openThroughEachRegion(during[randInt(len(during))])
	}
	for _, e := range during {
		rec, err := s.store(lost).Get(context.Background(), e.id)
		require.NoError(t, err)
		require.Empty(t, rec.Regions[lost].LastError, "the failure is cleared once %s succeeds", lost)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "region loss (%s): %d envelopes before, %d during an outage of %s (daemon killed once during it);\n",
		lost, len(before), len(during), outage.Round(time.Second))
	fmt.Fprintf(&b, "acked during the outage: 0; %s filled in %s after it returned; events re-sent before redrive (daemon 2): %.0f; lost %d, corrupted %d, DLQ 0\n",
		lost, fill.Round(100*time.Millisecond), requeued, lostN, corrupted)
	report(t, "faults-region.md", b.String())
}
