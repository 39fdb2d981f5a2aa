package faults

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
)

// observation is what the sampler last saw of one record.
type observation struct {
	version  int64
	wraps    map[string][]byte    // region -> wrapped DEK
	verified map[string]time.Time // region -> verified_at
	wrapped  map[string]time.Time // region -> wrapped_at (for the messages)
}

// monotonic compares a new sample with the previous one and returns what went backwards: the
// version, a region's wrap (lost, or replaced after it was verified) or its verified_at.
func monotonic(prev, cur *observation) []string {
	var bad []string
	if cur.version < prev.version {
		bad = append(bad, fmt.Sprintf("version %d -> %d", prev.version, cur.version))
	}
	for region, w := range prev.wraps {
		switch cw := cur.wraps[region]; {
		case len(cw) == 0:
			bad = append(bad, region+": wrap lost")
		case !prev.verified[region].IsZero() && !bytes.Equal(w, cw):
			bad = append(bad, fmt.Sprintf("%s: verified wrap replaced (wrapped_at %s verified_at %s -> another wrap, wrapped_at %s verified_at %s; version %d -> %d)",
				region, ts(prev.wrapped[region]), ts(prev.verified[region]), ts(cur.wrapped[region]), ts(cur.verified[region]), prev.version, cur.version))
		}
	}
	for region, v := range prev.verified {
		if cur.verified[region].Before(v) {
			bad = append(bad, fmt.Sprintf("%s: verified_at %s -> %s", region, ts(v), ts(cur.verified[region])))
		}
	}
	return bad
}

func observe(rec *envelope.Record) *observation {
	o := &observation{version: rec.Version, wraps: map[string][]byte{}, verified: map[string]time.Time{}, wrapped: map[string]time.Time{}}
	for name, w := range rec.Regions {
		if w.HasWrap() {
			o.wraps[name] = bytes.Clone(w.Wrapped)
			o.verified[name] = w.VerifiedAt
			o.wrapped[name] = w.WrappedAt
		}
	}
	return o
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("15:04:05.000000")
}

// TestTwoDaemonsDuplicates runs two daemon processes on one queue and sends every event three
// times (shuffled), then late duplicates of finished events. A sampler reads records all along:
// the version only moves forward, no wrap is lost or replaced once verified, verified_at never
// goes back. At the end every record is complete and correct and the DLQ is empty.
func TestTwoDaemonsDuplicates(t *testing.T) {
	t.Parallel()
	s := newSuite(t, map[string]string{"ap-southeast-2": config.ModeIndependent})
	es := s.sealN(scaled(60, 600), map[string]string{"app": "race"})
	var msgs []string
	for _, e := range es {
		msgs = append(msgs, e.body, e.body, e.body)
	}
	rand.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })

	d1, d2 := s.startDaemon("daemon A"), s.startDaemon("daemon B")
	d1.waitUp()
	d2.waitUp()

	// The sampler runs until stop is closed.
	stop := make(chan struct{})
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		violations []string
		samples    int
	)
	home := s.store("us-east-1")
	// Four samplers, each over its own share of the records, so each record is seen often.
	const samplers = 4
	for k := 0; k < samplers; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := map[string]*observation{}
			for i := k; ; i += samplers {
				select {
				case <-stop:
					return
				default:
				}
				e := es[i%len(es)]
				rec, err := home.Get(context.Background(), e.id)
				if err != nil {
					continue // not written yet
				}
				cur := observe(rec)
				mu.Lock()
				samples++
				if prev := last[e.id]; prev != nil {
					for _, v := range monotonic(prev, cur) {
						violations = append(violations, e.id+": "+v)
					}
				}
				mu.Unlock()
				last[e.id] = cur
			}
		}()
	}

	s.send(msgs...)
	s.waitAcked(ids(es), 3*time.Minute)
	s.waitDrained(2 * time.Minute)
	// Late duplicates of finished events: acknowledged again, records unchanged in substance.
	late := es[:min(10, len(es))]
	before := map[string]*observation{}
	for _, e := range late {
		rec, err := home.Get(context.Background(), e.id)
		require.NoError(t, err)
		before[e.id] = observe(rec)
	}
	s.send(bodies(late)...)
	require.Eventually(t, func() bool {
		for _, e := range late {
			if s.ackCount(e.id) < 2 {
				return false
			}
		}
		return true
	}, time.Minute, 100*time.Millisecond, "late duplicates are acknowledged")
	s.waitDrained(time.Minute)
	close(stop)
	wg.Wait()
	for _, e := range late {
		rec, err := home.Get(context.Background(), e.id)
		require.NoError(t, err)
		cur := observe(rec)
		require.Empty(t, monotonic(before[e.id], cur))
		for region, w := range before[e.id].wraps {
			require.True(t, bytes.Equal(w, cur.wraps[region]), "a late duplicate replaced %s's wrap of %s", region, e.id)
		}
	}

	conflicts := 0.0
	for _, d := range []*daemon{d1, d2} {
		c, err := d.metric("envdr_record_writes_total", map[string]string{"result": "conflict"})
		require.NoError(t, err)
		conflicts += c
	}
	require.Equal(t, 0, d1.term(30*time.Second))
	require.Equal(t, 0, d2.term(30*time.Second))
	require.Empty(t, violations, "records went backwards")
	require.Positive(t, d1.handled(), "daemon A handled events")
	require.Positive(t, d2.handled(), "daemon B handled events")
	lost, corrupted := s.checkRecords(es)
	require.Zero(t, lost+corrupted)
	require.Empty(t, s.drainDLQ())

	var b strings.Builder
	fmt.Fprintf(&b, "two daemons, %d envelopes x 3 deliveries (+%d late duplicates): events handled A %d / B %d; "+
		"conditional-write conflicts %.0f; %d record samples, 0 went backwards (version, wrap, verified_at); lost %d, corrupted %d, DLQ 0\n",
		len(es), len(late), d1.handled(), d2.handled(), conflicts, samples, lost, corrupted)
	report(t, "faults-race.md", b.String())
}
