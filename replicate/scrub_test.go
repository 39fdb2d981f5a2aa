package replicate_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// The scrubber (issue 25): with a budget of 20% of us-east-1's KMS rate (20 calls/s), two
// daemons' scrubbers of us-east-1 share the table (each segment once per pass, so each record is
// verified once), cover it in one pass, keep to the budget (KMS calls counted by the stand-in),
// and repair a wrap broken on purpose from another region's wrap.
func TestScrubberCoversRepairsAndKeepsBudget(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const n = 24
	ids, sealed := b.sealAndSend(t, n, 1)
	d := b.daemon(t)
	b.waitDrained(t, d, time.Minute)
	d.Stop(context.Background())

	// Break one record's us-east-1 wrap: another record's wrap, which KMS refuses under this
	// record's context.
	home, err := b.topo.Region("us-east-1")
	require.NoError(t, err)
	store := replicate.NewStore(b.cfg.Table, "us-east-1", home.DynamoDB(), b.cfg.RegionNames())
	other := b.record(t, "us-east-1", ids[1])
	_, err = store.Update(context.Background(), ids[0], func(cur *envelope.Record) (*envelope.Record, error) {
		next := cur.Clone()
		next.Regions["us-east-1"].Wrapped = bytes.Clone(other.Regions["us-east-1"].Wrapped)
		return next, nil
	})
	require.NoError(t, err)
	bad := b.record(t, "us-east-1", ids[0]).Regions["us-east-1"]
	b.env.Settle()

	cfg := *b.asDaemon(t)
	cfg.Regions = append(cfg.Regions[:0:0], cfg.Regions...)
	cfg.Regions[0].KMSRate = 100
	cfg.Scrub.Budget, cfg.Scrub.Period = "20%", "1m"
	require.NoError(t, cfg.Validate())
	// The daemon role as rendered for a scrubbing config: it may Scan.
	require.NoError(t, localaws.LoadRenderedPolicies(b.env.IAM, &cfg))
	topo, err := regions.New(context.Background(), &cfg, regions.Options{})
	require.NoError(t, err)
	// Every record was verified moments ago: a pass that begins after now finds them all due.
	// The scrubbers' clock starts at the next pass's beginning, so the run has a whole period
	// (a pass ending mid-run, on a busy machine, would verify records twice).
	base, t0 := time.Now().Add(time.Minute).Truncate(time.Minute), time.Now()
	ahead := func() time.Time { return base.Add(time.Since(t0)) }
	var scrubbers []*replicate.Scrubber
	for range 2 {
		s, err := replicate.NewScrubber(topo, "us-east-1", zaptest.NewLogger(t), nil)
		require.NoError(t, err)
		require.NotNil(t, s)
		replicate.SetScrubClock(s, ahead)
		replicate.SetScrubPage(s, 1) // every record its own page: segments of several pages
		scrubbers = append(scrubbers, s)
	}
	off, err := replicate.NewScrubber(b.topo, "us-east-1", zap.NewNop(), nil)
	require.NoError(t, err)
	require.Nil(t, off, "off by default")

	b.env.ResetCounters()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	start := time.Now()
	for _, s := range scrubbers {
		wg.Add(1)
		go func() { defer wg.Done(); s.Run(ctx) }()
	}
	require.Eventually(t, func() bool {
		c, err := scrubbers[0].Coverage(context.Background())
		return err == nil && c == 1
	}, time.Minute, 200*time.Millisecond, "one pass covers the table")
	elapsed := time.Since(start)
	cancel()
	wg.Wait()

	var verified, repaired, recent, calls float64
	for _, s := range scrubbers {
		m := replicate.ScrubMetricsOf(s)
		verified += testutil.ToFloat64(m.Records.WithLabelValues("us-east-1", "verified"))
		repaired += testutil.ToFloat64(m.Records.WithLabelValues("us-east-1", "repaired"))
		recent += testutil.ToFloat64(m.Records.WithLabelValues("us-east-1", "recent"))
		calls += testutil.ToFloat64(m.KMSCalls.WithLabelValues("us-east-1"))
		require.Zero(t, testutil.ToFloat64(m.Records.WithLabelValues("us-east-1", "failed")))
	}
	require.Equal(t, float64(n-1), verified, "each record verified once, by one of the two scrubbers")
	require.Equal(t, 1.0, repaired)
	require.Zero(t, recent)
	kms := b.env.Counters()["us-east-1"]
	var stood int64
	for _, v := range kms {
		stood += v
	}
	require.Equal(t, int64(calls), stood, "every us-east-1 KMS call the stand-in counted is one the scrubbers counted")
	// Budget: 20% of 100 calls/s per scrubber, two scrubbers, one call of burst each.
	limit := 2 * (0.2*100*elapsed.Seconds() + 1)
	require.LessOrEqualf(t, calls, limit, "%v KMS calls in %s", calls, elapsed)
	t.Logf("scrub: %d records, %v KMS calls in %s (budget allows %.0f), 1 repaired", n, calls, elapsed.Round(time.Millisecond), limit)

	fixed := b.record(t, "us-east-1", ids[0]).Regions["us-east-1"]
	require.True(t, fixed.HasWrap())
	require.False(t, bytes.Equal(fixed.Wrapped, bad.Wrapped), "the bad wrap was replaced")
	require.True(t, fixed.Verified())
	require.Equal(t, b.plain[0], b.openIn(t, "us-east-1", sealed[0]), "us-east-1 opens it alone again")
}

// A region with an independent key (no multi-Region replica to ReEncrypt through) repairs a
// broken wrap by Decrypt in another region, the commitment checked, and Encrypt under its own
// key (regions.CopyWrap), within the scrubber's budget.
func TestScrubberRepairsAnIndependentKeysWrap(t *testing.T) {
	t.Parallel()
	const eu = "eu-west-1"
	b := setup(t, map[string]string{eu: config.ModeIndependent})
	const n = 6
	ids, sealed := b.sealAndSend(t, n, 1)
	d := b.daemon(t)
	b.waitDrained(t, d, time.Minute)
	d.Stop(context.Background())

	r, err := b.topo.Region(eu)
	require.NoError(t, err)
	store := replicate.NewStore(b.cfg.Table, eu, r.DynamoDB(), b.cfg.RegionNames())
	other := b.record(t, eu, ids[1])
	_, err = store.Update(context.Background(), ids[0], func(cur *envelope.Record) (*envelope.Record, error) {
		next := cur.Clone()
		next.Regions[eu].Wrapped = bytes.Clone(other.Regions[eu].Wrapped)
		return next, nil
	})
	require.NoError(t, err)
	bad := b.record(t, eu, ids[0]).Regions[eu]
	b.env.Settle()

	cfg := *b.asDaemon(t)
	cfg.Regions = append(cfg.Regions[:0:0], cfg.Regions...)
	for i := range cfg.Regions {
		cfg.Regions[i].KMSRate = 100
	}
	cfg.Scrub.Budget, cfg.Scrub.Period = "20%", "1m"
	require.NoError(t, cfg.Validate())
	require.NoError(t, localaws.LoadRenderedPolicies(b.env.IAM, &cfg))
	topo, err := regions.New(context.Background(), &cfg, regions.Options{})
	require.NoError(t, err)
	s, err := replicate.NewScrubber(topo, eu, zaptest.NewLogger(t), nil)
	require.NoError(t, err)
	base, t0 := time.Now().Add(time.Minute).Truncate(time.Minute), time.Now()
	replicate.SetScrubClock(s, func() time.Time { return base.Add(time.Since(t0)) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	require.Eventually(t, func() bool {
		c, err := s.Coverage(context.Background())
		return err == nil && c == 1
	}, time.Minute, 200*time.Millisecond, "one pass covers the table")
	cancel()
	<-done

	m := replicate.ScrubMetricsOf(s)
	require.Equal(t, float64(n-1), testutil.ToFloat64(m.Records.WithLabelValues(eu, "verified")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.Records.WithLabelValues(eu, "repaired")))
	require.Zero(t, testutil.ToFloat64(m.Records.WithLabelValues(eu, "failed")))
	// n checks, then the repair: Decrypt elsewhere, Encrypt here, and the check of the new wrap.
	require.Equal(t, float64(n+3), testutil.ToFloat64(m.KMSCalls.WithLabelValues(eu)))
	fixed := b.record(t, eu, ids[0]).Regions[eu]
	require.False(t, bytes.Equal(fixed.Wrapped, bad.Wrapped), "the bad wrap was replaced")
	require.Equal(t, cfg.Regions[1].Key, fixed.KeyARN, "under eu-west-1's own independent key")
	require.Equal(t, b.plain[0], b.openIn(t, eu, sealed[0]), "eu-west-1 opens it alone again")
}
