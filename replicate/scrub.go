package replicate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// The scrubber (issue 25): envdr run re-verifies, continuously and within a KMS budget, what a
// verification at write time proved once. A key disabled, a replica key scheduled for deletion,
// a key policy changed or a table item edited is found within one period, not at the next full
// pass, and a bad wrap is repaired from a region that still opens the record.
//
// Work is shared without repeating it: each region's daemons scrub that region's wraps only
// (through that region's own replica and KMS), and within a region the table is cut into
// scrubSegments scan segments, each claimed by one daemon at a time with a lease: an item
// "scrub#REGION#SEGMENT" of the records table, written only in that region's replica with a
// conditional write on its version (scans and record reads skip ids with '#' beside a region).
// Passes are aligned to the period (pass = now / period): a segment is scrubbed once per pass,
// and a record verified since the pass began is skipped, so the oldest verifications go first
// and every record is verified at least once a period when the budget allows.

// scrubSegments is how many leases a region's table is cut into.
const scrubSegments = 16

// scrubWorkers is how many records of a page one scrubber checks at once.
const scrubWorkers = 8

// scrubLease is how long a claimed segment stays its daemon's without a renewal (each page).
const scrubLease = 2 * time.Minute

// ScrubMetrics are the scrubber's metrics (registered by Metrics).
type ScrubMetrics struct {
	Records  *prometheus.CounterVec // region, outcome: verified, recent, no_wrap, failed, repaired
	KMSCalls *prometheus.CounterVec // region
	Rate     *prometheus.GaugeVec   // region: the KMS calls per second the budget allows
	Oldest   *prometheus.GaugeVec   // region: seconds since the oldest segment's last completed pass began
	Coverage *prometheus.GaugeVec   // region: segments done in the current pass, as a fraction
	Period   *prometheus.GaugeVec   // region: scrub.period in seconds (the alert compares Oldest with it)
}

func newScrubMetrics() *ScrubMetrics {
	return &ScrubMetrics{
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envdr_scrub_records_total",
			Help: "Records the scrubber handled, by region and outcome (verified, recent: verified since the pass began, no_wrap, failed, repaired)."}, []string{"region", "outcome"}),
		KMSCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envdr_scrub_kms_calls_total",
			Help: "KMS calls the scrubber made, by region (they count against its budget)."}, []string{"region"}),
		Rate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "envdr_scrub_rate",
			Help: "KMS calls per second the scrub budget allows this daemon in its region (budget x the region's KMS rate)."}, []string{"region"}),
		Oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "envdr_scrub_oldest_verification_seconds",
			Help: "Upper bound on the age of the oldest verification in the region: seconds since the start of the oldest segment's last completed scrub pass (until every segment has completed one: since this daemon's scrubber started)."}, []string{"region"}),
		Coverage: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "envdr_scrub_coverage_ratio",
			Help: "Fraction of the region's table scrubbed in the current pass."}, []string{"region"}),
		Period: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "envdr_scrub_period_seconds",
			Help: "The scrub period (scrub.period): every record should be verified again within it."}, []string{"region"}),
	}
}

// init creates region's series at zero, so the alerts and dashboards see them (scrubbing off:
// they stay zero, and EnvdrScrubBehind stays quiet).
func (m *ScrubMetrics) init(region string) {
	for _, o := range []string{"verified", "recent", "no_wrap", "failed", "repaired"} {
		m.Records.WithLabelValues(region, o)
	}
	m.KMSCalls.WithLabelValues(region)
	m.Rate.WithLabelValues(region)
	m.Oldest.WithLabelValues(region)
	m.Coverage.WithLabelValues(region)
	m.Period.WithLabelValues(region)
}

func (m *ScrubMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Records, m.KMSCalls, m.Rate, m.Oldest, m.Coverage, m.Period}
}

// Scrubber re-verifies one region's wraps; see the comment above.
type Scrubber struct {
	topo    *regions.Topology
	r       *regions.Region
	store   *Store
	db      DynamoAPI
	budget  float64
	period  time.Duration
	owner   string
	log     *zap.Logger
	m       *ScrubMetrics
	now     func() time.Time
	limiter *rate.Limiter
	started time.Time
	// pages bounds the records read per scan page (tests shorten it).
	pages int32
}

// NewScrubber builds region's scrubber from cfg.Scrub; nil when scrubbing is off.
func NewScrubber(topo *regions.Topology, region string, log *zap.Logger, m *Metrics) (*Scrubber, error) {
	cfg := topo.Config()
	budget, err := cfg.Scrub.BudgetFraction()
	if err != nil || budget == 0 {
		return nil, err
	}
	period, err := cfg.Scrub.PeriodDuration()
	if err != nil {
		return nil, err
	}
	r, err := topo.Region(region)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	s := &Scrubber{topo: topo, r: r, store: NewStore(cfg.Table, region, r.DynamoDB(), cfg.RegionNames()), db: r.DynamoDB(),
		budget: budget, period: period, owner: fmt.Sprintf("%s/%d/%x", host, os.Getpid(), rand.Uint32()),
		log: log.With(zap.String("component", "scrub")), now: time.Now, pages: 100}
	if m != nil {
		s.m = m.Scrub
	} else {
		s.m = newScrubMetrics()
	}
	s.limiter = rate.NewLimiter(rate.Limit(s.rate()), 1)
	return s, nil
}

// rate is the KMS calls per second the budget allows now: budget x the region's current rate.
func (s *Scrubber) rate() float64 {
	return max(s.budget*s.r.RateLimit(), 0.01)
}

// Run scrubs until ctx ends.
func (s *Scrubber) Run(ctx context.Context) {
	s.started = s.now()
	s.m.Period.WithLabelValues(s.r.Name).Set(s.period.Seconds())
	s.log.Info("scrubber started", zap.String("region", s.r.Name), zap.Float64("budget", s.budget),
		zap.Duration("period", s.period), zap.Float64("kms_calls_per_second", s.rate()))
	for ctx.Err() == nil {
		pass := s.pass()
		did := false
		for _, seg := range rand.Perm(scrubSegments) {
			if ctx.Err() != nil {
				return
			}
			ok, err := s.segment(ctx, seg, pass)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("scrub segment failed; another pass or daemon takes it up", zap.Int("segment", seg), zap.Error(err))
			}
			did = did || ok
		}
		s.observe(ctx, pass)
		if !did {
			// Everything of this pass is done (or claimed by live daemons): look again soon, for
			// a dead daemon's lease or the next pass.
			wait := min(time.Until(time.UnixMilli((pass+1)*s.period.Milliseconds())), scrubLease/2)
			if err := sleepCtx(ctx, max(wait, time.Second)); err != nil {
				return
			}
		}
	}
}

// pass is the number of the current pass (the period-aligned time slot).
func (s *Scrubber) pass() int64 { return s.now().UnixMilli() / s.period.Milliseconds() }

func (s *Scrubber) passStart(pass int64) time.Time {
	return time.UnixMilli(pass * s.period.Milliseconds())
}

// lease is one segment's lease item.
type lease struct {
	version  int64
	owner    string
	expires  time.Time
	pass     int64  // the pass being (or last) scrubbed
	done     bool   // pass is complete
	cursor   string // where the segment resumes within pass
	exists   bool
	lastDone int64 // the last completed pass (-1: none)
}

func (s *Scrubber) leaseID(seg int) string {
	return "scrub" + regionSep + s.r.Name + regionSep + strconv.Itoa(seg)
}

func (s *Scrubber) readLease(ctx context.Context, seg int) (lease, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.store.Table), Key: idKey(s.leaseID(seg)), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return lease{}, fmt.Errorf("region %s: read scrub lease %d: %w", s.r.Name, seg, err)
	}
	l := lease{lastDone: -1}
	if out.Item == nil {
		return l, nil
	}
	l.exists = true
	num := func(k string) int64 {
		if v, ok := out.Item[k].(*ddbtypes.AttributeValueMemberN); ok {
			n, _ := strconv.ParseInt(v.Value, 10, 64)
			return n
		}
		return 0
	}
	str := func(k string) string {
		if v, ok := out.Item[k].(*ddbtypes.AttributeValueMemberS); ok {
			return v.Value
		}
		return ""
	}
	l.version, l.pass, l.lastDone = num("version"), num("pass"), num("last_done")
	l.expires = time.UnixMilli(num("expires"))
	l.owner, l.cursor = str("owner"), str("cursor")
	l.done = str("done") == "true"
	return l, nil
}

// writeLease writes l conditionally on the version read (a lost race is errLeaseLost).
func (s *Scrubber) writeLease(ctx context.Context, seg int, l *lease) error {
	item := map[string]ddbtypes.AttributeValue{
		attrID:      &ddbtypes.AttributeValueMemberS{Value: s.leaseID(seg)},
		"version":   &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(l.version+1, 10)},
		"owner":     &ddbtypes.AttributeValueMemberS{Value: l.owner},
		"expires":   &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(l.expires.UnixMilli(), 10)},
		"pass":      &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(l.pass, 10)},
		"last_done": &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(l.lastDone, 10)},
		"done":      &ddbtypes.AttributeValueMemberS{Value: strconv.FormatBool(l.done)},
	}
	if l.cursor != "" {
		item["cursor"] = &ddbtypes.AttributeValueMemberS{Value: l.cursor}
	}
	in := &dynamodb.PutItemInput{TableName: aws.String(s.store.Table), Item: item}
	if l.exists {
		in.ConditionExpression = aws.String("version = :v")
		in.ExpressionAttributeValues = map[string]ddbtypes.AttributeValue{":v": &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(l.version, 10)}}
	} else {
		in.ConditionExpression = aws.String("attribute_not_exists(id)")
	}
	if _, err := s.db.PutItem(ctx, in); err != nil {
		if isConditionFailure(err) {
			return errLeaseLost
		}
		return fmt.Errorf("region %s: write scrub lease %d: %w", s.r.Name, seg, err)
	}
	l.version++
	l.exists = true
	return nil
}

var errLeaseLost = errors.New("scrub lease taken by another daemon")

// segment scrubs segment seg for pass if it is free (unclaimed, expired, this daemon's, or done
// for an older pass) and not done for pass; it reports whether it did any work.
func (s *Scrubber) segment(ctx context.Context, seg int, pass int64) (bool, error) {
	l, err := s.readLease(ctx, seg)
	if err != nil {
		return false, err
	}
	now := s.now()
	switch {
	case l.exists && l.pass == pass && l.done:
		return false, nil // scrubbed in this pass
	case l.exists && l.owner != s.owner && now.Before(l.expires) && !l.done:
		return false, nil // another live daemon's
	}
	if !l.exists || l.pass != pass {
		l.pass, l.cursor, l.done = pass, "", false
	}
	l.owner, l.expires = s.owner, now.Add(scrubLease)
	if err := s.writeLease(ctx, seg, &l); err != nil {
		if errors.Is(err, errLeaseLost) {
			return false, nil
		}
		return false, err
	}
	since := s.passStart(pass)
	// The next page is read while this one's records are checked: waiting for each page's scan
	// between pages left the budget unspent for that long (0.77-0.90 of it was spent with the
	// scan in line: docs/BENCH.md). The read is the same; only when it is made changes.
	type scanned struct {
		p   *Page
		err error
	}
	fetch := func(cursor string) <-chan scanned {
		ch := make(chan scanned, 1) // the read finishes and is dropped if the segment ends first
		go func() {
			p, err := s.store.ScanPage(ctx, seg, scrubSegments, cursor, s.pages)
			ch <- scanned{p, err}
		}()
		return ch
	}
	next := fetch(l.cursor)
	for {
		s.limiter.SetLimit(rate.Limit(s.rate()))
		s.m.Rate.WithLabelValues(s.r.Name).Set(s.rate())
		got := <-next
		if got.err != nil {
			return true, got.err
		}
		p := got.p
		if p.Next != "" {
			next = fetch(p.Next)
		}
		// A page's records are checked a few at a time: the limiter holds the budget whatever
		// the concurrency, which only hides round trips (one record at a time reached 0.65 of
		// a 10 calls/s budget on a busy machine: docs/BENCH.md).
		// The stamps of a page's verified records are written together (Store.UpdateBatch:
		// transactions of the same conditional writes UpdateFrom makes, a record changed since
		// the scan read it written again on its own), not one write per record: on the stand-in
		// a write per record cost more than the record's KMS call. A daemon that stops mid-page
		// checks those records again, at most one page of KMS calls.
		stamps := make([]*BatchUpdate, len(p.Records))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(scrubWorkers)
		for i, rec := range p.Records {
			g.Go(func() error {
				var err error
				stamps[i], err = s.record(gctx, rec, since)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return true, err
		}
		if err := s.stamp(ctx, stamps); err != nil {
			return true, err
		}
		l.cursor = p.Next
		l.expires = s.now().Add(scrubLease)
		if l.cursor == "" {
			l.done, l.lastDone = true, pass
		}
		if err := s.writeLease(ctx, seg, &l); err != nil {
			if errors.Is(err, errLeaseLost) {
				return true, nil // it expired under us and another daemon took it over
			}
			return true, err
		}
		if l.done {
			return true, nil
		}
	}
}

// record re-verifies rec's wrap for the scrubber's region, unless it was verified since the pass
// began; a bad wrap is repaired. A verified wrap's stamp is returned for the page's batch. Only a
// context error stops the segment.
func (s *Scrubber) record(ctx context.Context, rec *envelope.Record, since time.Time) (*BatchUpdate, error) {
	name := s.r.Name
	w := rec.Regions[name]
	count := func(outcome string) { s.m.Records.WithLabelValues(name, outcome).Inc() }
	switch {
	case !w.HasWrap():
		count("no_wrap") // the daemon's or rewrap's to fill, not the scrubber's
		return nil, nil
	case !w.VerifiedAt.Before(since):
		count("recent")
		return nil, nil
	}
	if err := s.limiter.Wait(ctx); err != nil {
		return nil, err
	}
	s.m.KMSCalls.WithLabelValues(name).Inc()
	err := checkWrap(ctx, s.r, w, rec)
	switch {
	case err == nil:
		return &BatchUpdate{ID: rec.ID, Cur: rec, Mutate: stampVerified(map[string]verifyStamp{name: {wrap: w, at: s.now()}})}, ctx.Err()
	case errors.Is(err, errBadWrap):
		if rerr := s.repair(ctx, rec, w); rerr != nil {
			count("failed")
			s.log.Error("scrub: the region's wrap is bad and could not be repaired", zap.String("id", rec.ID),
				zap.String("key_arn", w.KeyARN), zap.Error(err), zap.NamedError("repair_error", rerr))
			return nil, ctx.Err()
		}
		count("repaired")
		s.log.Warn("scrub: a bad wrap was replaced with a checked one", zap.String("id", rec.ID), zap.String("key_arn", w.KeyARN), zap.Error(err))
	default:
		count("failed")
		s.log.Warn("scrub: verification failed", zap.String("id", rec.ID), zap.String("key_arn", w.KeyARN), zap.Error(err))
	}
	return nil, ctx.Err()
}

// stamp writes the verified records' stamps of one page in batches and counts them.
func (s *Scrubber) stamp(ctx context.Context, stamps []*BatchUpdate) error {
	var ups []BatchUpdate
	for _, u := range stamps {
		if u != nil {
			ups = append(ups, *u)
		}
	}
	if len(ups) == 0 {
		return nil
	}
	res, _ := s.store.UpdateBatch(ctx, ups)
	for i, r := range res {
		if r.Err != nil {
			s.m.Records.WithLabelValues(s.r.Name, "failed").Inc()
			s.log.Warn("scrub: verified, but the stamp failed", zap.String("id", ups[i].ID), zap.Error(r.Err))
			continue
		}
		s.m.Records.WithLabelValues(s.r.Name, "verified").Inc()
	}
	return ctx.Err()
}

// checkWrap decrypts w in r and checks the record's commitment; a wrap that is no wrap of the
// record's DEK is errBadWrap.
func checkWrap(ctx context.Context, r *regions.Region, w *envelope.RegionWrap, rec *envelope.Record) error {
	dek, err := r.DecryptRaw(ctx, w.Wrapped, w.KeyARN, rec.Context.Map())
	if err != nil {
		if errors.Is(err, regions.ErrInvalidCiphertext) {
			return fmt.Errorf("%w: %w", errBadWrap, err)
		}
		return err
	}
	defer envelope.Wipe(dek)
	if err := envelope.CheckCommitment(dek, rec.Commitment); err != nil {
		return fmt.Errorf("region %s: record %s: key %s: %w: %w", r.Name, rec.ID, w.KeyARN, errBadWrap, err)
	}
	return nil
}

// repair replaces the region's bad wrap with one made from another region's wrap that opens
// (the checked-wrap rule: the new wrap is decrypted in the region and its commitment checked
// before the write, which replaces only the bad wrap it read).
func (s *Scrubber) repair(ctx context.Context, rec *envelope.Record, bad *envelope.RegionWrap) error {
	var errs []error
	for _, name := range s.topo.Names() {
		src := rec.Regions[name]
		if name == s.r.Name || !src.HasWrap() {
			continue
		}
		wrapped, arn, err := s.wrapFrom(ctx, rec, name, src)
		if err == nil {
			s.m.KMSCalls.WithLabelValues(s.r.Name).Inc()
			err = checkWrap(ctx, s.r, &envelope.RegionWrap{KeyARN: arn, Wrapped: wrapped}, rec)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("from %s: %w", name, err))
			continue
		}
		now := s.now()
		nw := &envelope.RegionWrap{KeyARN: arn, Wrapped: wrapped, WrappedAt: now, VerifiedAt: now, LastErrorAt: now}
		_, err = s.store.UpdateFrom(ctx, rec, rec.ID, func(cur *envelope.Record) (*envelope.Record, error) {
			if cur == nil || !sameWrap(cur.Regions[s.r.Name], bad) {
				return nil, nil // replaced meanwhile
			}
			next := cur.Clone()
			next.Regions[s.r.Name] = nw
			return next, nil
		})
		return err
	}
	return errors.Join(errs...)
}

// wrapFrom makes the scrubber's region's wrap from region name's wrap: ReEncrypt through this
// region's replica of a multi-Region key, else Decrypt in name (commitment checked), Encrypt
// here, wipe.
func (s *Scrubber) wrapFrom(ctx context.Context, rec *envelope.Record, name string, src *envelope.RegionWrap) ([]byte, string, error) {
	ec := rec.Context.Map()
	if s.r.Mode == config.ModeMRK && regions.IsMultiRegionKeyARN(src.KeyARN) {
		arn, err := regions.ReplicaARN(src.KeyARN, s.r.Name)
		if err != nil {
			return nil, "", err
		}
		if err := s.limiter.Wait(ctx); err != nil {
			return nil, "", err
		}
		s.m.KMSCalls.WithLabelValues(s.r.Name).Inc()
		return s.r.ReEncrypt(ctx, src.Wrapped, arn, "", ec)
	}
	sr, err := s.topo.Region(name)
	if err != nil {
		return nil, "", err
	}
	return s.r.CopyWrap(ctx, sr, src.Wrapped, src.KeyARN, rec.Commitment, ec, rec.ID, func(ctx context.Context) error {
		if err := s.limiter.Wait(ctx); err != nil {
			return err
		}
		s.m.KMSCalls.WithLabelValues(s.r.Name).Inc()
		return nil
	})
}

// observe reads every segment's lease and sets the coverage of the current pass and the bound on
// the oldest verification.
func (s *Scrubber) observe(ctx context.Context, pass int64) {
	done := 0
	oldest := s.now()
	for seg := range scrubSegments {
		l, err := s.readLease(ctx, seg)
		if err != nil {
			return
		}
		if l.exists && l.pass == pass && l.done {
			done++
		}
		start := s.started
		if l.lastDone >= 0 && l.exists {
			start = s.passStart(l.lastDone)
		}
		if start.Before(oldest) {
			oldest = start
		}
	}
	s.m.Coverage.WithLabelValues(s.r.Name).Set(float64(done) / scrubSegments)
	s.m.Oldest.WithLabelValues(s.r.Name).Set(s.now().Sub(oldest).Seconds())
}

// Coverage reports the fraction of the region's table scrubbed in the current pass (tests).
func (s *Scrubber) Coverage(ctx context.Context) (float64, error) {
	pass := s.pass()
	done := 0
	for seg := range scrubSegments {
		l, err := s.readLease(ctx, seg)
		if err != nil {
			return 0, err
		}
		if l.exists && l.pass == pass && l.done {
			done++
		}
	}
	return float64(done) / scrubSegments, nil
}
