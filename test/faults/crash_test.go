package faults

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
)

// Kill moments. Each kill -9 is aimed at one; the table reports how many of each happened.
const (
	killRandom   = "random moment (start-up, receive, work or delete)"
	killMidWork  = "mid-work (in-flight > 0: wrap, record write or verify)"
	killAfterAck = "between record write and delete (on an ack log line)"
	killIdle     = "during receive (queue empty, long-polling)"
)

// TestCrash kills the daemon with SIGKILL over and over while it replicates N envelopes,
// restarting it each time. At the end every event is fully replicated and verified in every
// region, no record is lost or corrupted, and the DLQ holds no valid event.
func TestCrash(t *testing.T) {
	t.Parallel()
	n := crashN(t)
	s := newSuite(t, map[string]string{"ap-southeast-2": config.ModeIndependent})
	start := time.Now()
	es := s.sealN(n, map[string]string{"app": "crash"})
	all := ids(es)
	t.Logf("sealed %d envelopes in %s", n, time.Since(start).Round(time.Millisecond))

	// The producer sends while the daemons run and die, so kills also land while events arrive.
	var prod sync.WaitGroup
	prod.Add(1)
	go func() {
		defer prod.Done()
		for i := 0; i < len(es); i += 100 {
			s.send(bodies(es[i:min(i+100, len(es))])...)
		}
	}()

	targetKills := max(12, n/100)
	kills := map[string]int{}
	modes := []string{killRandom, killMidWork, killAfterAck}
	runStart := time.Now()
	for k := 0; k < targetKills && s.ackedOf(all) < n; k++ {
		mode := modes[k%len(modes)]
		d := s.startDaemon(fmt.Sprintf("daemon %d", k+1))
		switch mode {
		case killRandom:
			time.Sleep(time.Duration(randInt(2500)) * time.Millisecond)
		case killMidWork:
			d.waitUp()
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if v, err := d.metric("envdr_inflight_events", nil); err == nil && v > 0 {
					// A little later still, so the kill is not always at the first receive.
					time.Sleep(time.Duration(randInt(200)) * time.Millisecond)
					break
				}
				time.Sleep(time.Duration(randInt(20)) * time.Millisecond)
			}
		case killAfterAck:
			// Kill as soon as the daemon logs its k-th ack: the log line comes right before the
			// message's delete is queued, and deletes are flushed in batches every 50 ms.
			d.waitUp()
			want := 1 + randInt(40)
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				d.mu.Lock()
				got := d.acked
				d.mu.Unlock()
				if got >= want {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
		require.True(t, d.alive(), "%s died on its own (status %d)", d.name, d.status())
		d.kill()
		kills[mode]++
	}
	prod.Wait()

	// Two kills while the daemon is idle, long-polling an empty queue.
	d := s.startDaemon("daemon (drain)")
	s.waitAcked(all, 5*time.Minute+time.Duration(n)*20*time.Millisecond)
	s.waitDrained(2 * time.Minute)
	require.True(t, d.alive())
	d.kill()
	for k := 0; k < 2; k++ {
		d := s.startDaemon(fmt.Sprintf("daemon (idle %d)", k+1))
		d.waitUp()
		time.Sleep(time.Duration(300+randInt(1200)) * time.Millisecond)
		v, err := d.metric("envdr_inflight_events", nil)
		require.NoError(t, err)
		require.Zero(t, v)
		d.kill()
		kills[killIdle]++
	}
	// The service still works after all that: a few more envelopes, then a graceful stop.
	extra := s.sealN(10, map[string]string{"app": "crash-after"})
	s.send(bodies(extra)...)
	d = s.startDaemon("daemon (final)")
	s.waitAcked(ids(extra), 2*time.Minute)
	s.waitDrained(time.Minute)
	require.Equal(t, 0, d.term(30*time.Second), "SIGTERM: graceful stop, exit 0")
	elapsed := time.Since(runStart)
	es = append(es, extra...)

	lost, corrupted := s.checkRecords(es)
	dlq := s.drainDLQ()
	valid := validEventsIn(dlq, es)
	require.Empty(t, valid, "valid events were dead-lettered: %v", valid)
	require.Zero(t, lost, "records lost")
	require.Zero(t, corrupted, "records corrupted")
	// End to end through the CLI: a few envelopes open through each region alone.
	for i := 0; i < 3; i++ {
		s.openThroughEachRegion(es[randInt(len(es))])
	}

	redelivered := 0
	for _, id := range ids(es) {
		if s.ackCount(id) > 1 {
			redelivered++
		}
	}
	total := 0
	var b strings.Builder
	fmt.Fprintf(&b, "crash run: %d envelopes (+%d after), mixed modes (ap-southeast-2 independent), %s\n", n, len(extra), elapsed.Round(time.Second))
	fmt.Fprintf(&b, "| kill -9 aimed at | kills |\n|---|---|\n")
	for _, m := range append(modes, killIdle) {
		fmt.Fprintf(&b, "| %s | %d |\n", m, kills[m])
		total += kills[m]
	}
	fmt.Fprintf(&b, "| total | %d |\n", total)
	fmt.Fprintf(&b, "envelopes: %d, lost: %d, corrupted: %d, valid events in DLQ: %d (DLQ messages: %d)\n", len(es), lost, corrupted, len(valid), len(dlq))
	fmt.Fprintf(&b, "events acknowledged more than once (completed, then redelivered after a kill before the delete): %d\n", redelivered)
	report(t, "faults-crash.md", b.String())
}
