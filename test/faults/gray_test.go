package faults

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/localaws"
)

// TestGrayFailure: while events flow at a steady rate, eu-west-1 is blackholed (its KMS, SQS
// and DynamoDB endpoints accept requests and never answer) and ap-southeast-2 answers 30% of
// requests with retryable 500/503 errors, both through `envdr local fault`; then the faults are
// cleared. The daemon must not be held hostage by the sick region: every call has its own
// timeout, the blackholed region is deferred like a lost one, and the healthy regions' work
// goes on at its own pace. Nothing may be lost or dead-lettered, no event acknowledged before
// eu-west-1 holds its wrap, and every event must be acknowledged once the faults clear (no
// worker stuck on a call that never returns).
func TestGrayFailure(t *testing.T) {
	t.Parallel()
	const (
		home  = "us-east-1"
		sick  = "eu-west-1"      // blackholed
		brown = "ap-southeast-2" // 30% server errors
		// The per-attempt KMS and DynamoDB timeout of this daemon: what one call to the
		// blackholed region costs before the region is deferred.
		callTimeout = 2 * time.Second
		perTick     = 5 // events sent every tick: 25 events/s
		tick        = 200 * time.Millisecond
	)
	s := newSuite(t, nil)
	s.cfg.Worker.KMSTimeout = callTimeout
	s.cfg.Worker.DynamoDBTimeout = callTimeout
	s.cfg.Worker.SQSTimeout = 5 * time.Second
	require.NoError(t, s.cfg.Validate())
	require.NoError(t, localaws.WriteConfig(s.cfgPath, s.cfg))

	n := scaled(200, 1000)
	es := s.sealN(n, map[string]string{"app": "gray"})
	d := s.startDaemon("daemon")
	d.waitUp()

	// Events flow; the faults start after the first fifth, set as an operator would.
	sent := make(map[string]time.Time, n)
	var before, during []*sealed
	var faultAt time.Time
	var sickCallsBefore float64
	for i := 0; i < n; i += perTick {
		if i >= n/5 && faultAt.IsZero() {
			var err error
			sickCallsBefore, err = d.metric("envdr_kms_calls_total", map[string]string{"region": sick})
			require.NoError(t, err)
			for _, args := range [][]string{{sick, "--blackhole"}, {brown, "--error-rate", "30%"}} {
				res := s.cli(nil, append([]string{"local", "fault"}, args...)...)
				require.Equalf(t, 0, res.code, "local fault %v: %s", args, res.stderr)
			}
			faultAt = time.Now()
		}
		batch := es[i:min(i+perTick, n)]
		at := time.Now()
		s.send(bodies(batch)...)
		for _, e := range batch {
			sent[e.id] = at
		}
		if faultAt.IsZero() {
			before = append(before, batch...)
		} else {
			during = append(during, batch...)
		}
		time.Sleep(time.Until(at.Add(tick)))
	}
	lastSend := time.Now()

	// While the faults last, every event sent during them is protected in the healthy regions
	// (verified wraps in us-east-1 and ap-southeast-2) and none is acknowledged.
	homeStore := s.store(home)
	protected := func() bool {
		for _, e := range during {
			rec, err := homeStore.Get(context.Background(), e.id)
			if err != nil || !rec.Regions[home].Verified() || !rec.Regions[brown].Verified() {
				return false
			}
		}
		return true
	}
	require.Eventually(t, protected, 2*time.Minute, 250*time.Millisecond,
		"the healthy regions must progress while %s is blackholed and %s fails 30%% of requests", sick, brown)
	// Hold the faults a little longer: redeliveries, requeues and probes of the sick region go on.
	time.Sleep(time.Until(lastSend.Add(time.Duration(scaled(3, 10)) * time.Second)))
	require.Zero(t, s.ackedOf(ids(during)), "no event may be acknowledged before %s holds a verified wrap", sick)
	st, err := localaws.NewAdminClient(s.env.Admin).Status(context.Background())
	require.NoError(t, err)
	require.True(t, st[sick].Faults[localaws.ServiceKMS].Blackhole, "the fault was in place all along")
	kmsErrors, err := d.metric("envdr_kms_calls_total", map[string]string{"region": brown, "result": "error"})
	require.NoError(t, err)
	sickCalls, err := d.metric("envdr_kms_calls_total", map[string]string{"region": sick})
	require.NoError(t, err)
	sickCalls -= sickCallsBefore
	healthy, err := d.metric("envdr_region_healthy", map[string]string{"region": sick})
	require.NoError(t, err)
	require.Zero(t, healthy, "%s is marked unhealthy while blackholed", sick)

	for _, r := range []string{sick, brown} {
		res := s.cli(nil, "local", "fault", r, "--clear")
		require.Equalf(t, 0, res.code, "local fault %s --clear: %s", r, res.stderr)
	}
	clearedAt := time.Now()
	outage := clearedAt.Sub(faultAt)

	// Every event completes once the faults are gone: no worker is stuck on a call.
	s.waitAcked(ids(es), 3*time.Minute)
	fill := time.Since(clearedAt)
	s.waitDrained(time.Minute)
	inflight, err := d.metric("envdr_inflight_events", nil)
	require.NoError(t, err)
	require.Zero(t, inflight, "no event still held by a worker")
	requeued, err := d.metric("envdr_requeued_total", nil)
	require.NoError(t, err)
	text, err := d.scrape()
	require.NoError(t, err)
	require.Equal(t, 0, d.term(30*time.Second))

	lost, corrupted := s.checkRecords(es)
	require.Zero(t, lost+corrupted)
	dlq := s.drainDLQ()
	require.Empty(t, validEventsIn(dlq, es), "valid events in the DLQ")

	// The healthy regions' work during the faults: from an event's send to its verified wrap in
	// that region (read from the record), and the daemon's own per-call latencies.
	var homeLat, brownLat []time.Duration
	for _, e := range during {
		rec, err := homeStore.Get(context.Background(), e.id)
		require.NoError(t, err)
		homeLat = append(homeLat, rec.Regions[home].VerifiedAt.Sub(sent[e.id]))
		brownLat = append(brownLat, rec.Regions[brown].VerifiedAt.Sub(sent[e.id]))
	}
	hp50, hp99, hmax := percentiles(homeLat)
	held := 0 // events whose home-region protection waited on the sick region (about one timeout)
	for _, l := range homeLat {
		if l > callTimeout/2 {
			held++
		}
	}
	bp50, bp99, bmax := percentiles(brownLat)
	homeVerify := histQuantile(text, "envdr_verify_seconds", home, 0.99)
	brownWrap := histQuantile(text, "envdr_wrap_seconds", brown, 0.99)
	brownVerify := histQuantile(text, "envdr_verify_seconds", brown, 0.99)

	var b strings.Builder
	fmt.Fprintf(&b, "gray failure: %d envelopes at %d/s (%d before the faults, %d during them); %s blackholed (KMS, SQS, DynamoDB) and %s at 30%% errors for %s, per-attempt timeout %s;\n",
		n, int(perTick*time.Second/tick), len(before), len(during), sick, brown, outage.Round(100*time.Millisecond), callTimeout)
	fmt.Fprintf(&b, "during the faults: acked 0 of %d; KMS calls sent to %s %.0f (each timed out: in flight at the start, or a probe; all others deferred at once); %s KMS errors retried %.0f; events re-sent before redrive (whole run) %.0f\n",
		len(during), sick, sickCalls, brown, kmsErrors, requeued)
	fmt.Fprintf(&b, "| healthy region work during the faults | p50 | p99 | max |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| %s: send → verified wrap | %s | **%s** | %s |\n", home, ms(hp50), ms(hp99), ms(hmax))
	fmt.Fprintf(&b, "| %s: send → verified wrap (incl. retries and redeliveries) | %s | %s | %s |\n", brown, ms(bp50), ms(bp99), ms(bmax))
	fmt.Fprintf(&b, "%s work held more than %s: %d of %d events (in flight or queued when the blackhole began, or a probe)\n",
		home, callTimeout/2, held, len(during))
	fmt.Fprintf(&b, "daemon histograms, p99 of successful calls (whole run): %s verify %s; %s wrap %s, verify %s\n",
		home, secs(homeVerify), brown, secs(brownWrap), secs(brownVerify))
	fmt.Fprintf(&b, "after clearing: all %d acked in %s (%s filled in); in flight 0; lost %d, corrupted %d, valid events in DLQ 0 (DLQ messages: %d)\n",
		n, fill.Round(100*time.Millisecond), sick, lost, corrupted, len(dlq))
	report(t, "faults-gray.md", b.String())

	// Not held hostage: the home region's work waits at most about one timeout of the sick
	// region (an event in flight when the blackhole starts, or a probe), never one per call or
	// the HTTP client's 30 s; the successful calls in the healthy regions stay below one timeout.
	bound := 2 * callTimeout
	require.Lessf(t, hp99, bound, "p99 from send to a verified %s wrap during the faults: %s (bound %s)", home, hp99, bound)
	for name, q := range map[string]float64{home + " verify": homeVerify, brown + " wrap": brownWrap, brown + " verify": brownVerify} {
		require.Lessf(t, q, callTimeout.Seconds(), "p99 of successful %s calls", name)
	}
}

// percentiles returns p50, p99 (nearest rank) and the maximum.
func percentiles(ds []time.Duration) (p50, p99, maxD time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := func(q float64) time.Duration { return s[max(int(math.Ceil(q*float64(len(s))))-1, 0)] }
	return rank(0.5), rank(0.99), s[len(s)-1]
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

func secs(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return (time.Duration(v * float64(time.Second))).Round(time.Millisecond).String()
}

// scrape returns the daemon's /metrics text.
func (d *daemon) scrape() (string, error) {
	d.mu.Lock()
	addr := d.addr
	d.mu.Unlock()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// histQuantile estimates quantile q of a Prometheus histogram's region series from its
// cumulative buckets, interpolating linearly inside the bucket as histogram_quantile does; NaN
// without observations.
func histQuantile(text, name, region string, q float64) float64 {
	type bucket struct{ le, n float64 }
	var bs []bucket
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// The label region exactly: daemon_region="R" must not match it.
		if !strings.HasPrefix(line, name+"_bucket{") || (!strings.Contains(line, `{region="`+region+`"`) && !strings.Contains(line, `,region="`+region+`"`)) {
			continue
		}
		_, rest, _ := strings.Cut(line, `le="`)
		leS, val, _ := strings.Cut(rest, `"}`)
		le, err1 := strconv.ParseFloat(leS, 64)
		if leS == "+Inf" {
			le, err1 = math.Inf(1), nil
		}
		v, err2 := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err1 == nil && err2 == nil {
			bs = append(bs, bucket{le, v})
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return math.NaN()
	}
	target := q * bs[len(bs)-1].n
	lo, below := 0.0, 0.0
	for _, b := range bs {
		if b.n >= target {
			if math.IsInf(b.le, 1) {
				return lo // beyond the last finite bucket: its bound is the best estimate
			}
			if b.n == below {
				return b.le
			}
			return lo + (b.le-lo)*(target-below)/(b.n-below)
		}
		lo, below = b.le, b.n
	}
	return lo
}
