package replicate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// DLQ reasons besides the event decoder's own (envelope.EventError.Reason()).
const (
	ReasonUnknownRegion      = "unknown_region"
	ReasonUnknownKey         = "unknown_key"
	ReasonInvalidWrap        = "invalid_wrap"
	ReasonCommitmentMismatch = "commitment_mismatch"
	ReasonRecordConflict     = "record_conflict"
	ReasonBadEvent           = "bad_event"
)

// poisonError marks a failure that no retry can fix.
type poisonError struct {
	reason string
	err    error
}

func (e *poisonError) Error() string { return e.err.Error() }
func (e *poisonError) Unwrap() error { return e.err }

func poison(reason string, format string, a ...any) error {
	return &poisonError{reason: reason, err: fmt.Errorf(format, a...)}
}

// Pipeline handles one replication event end to end: wrap in every region, record, verify each
// region alone, and decide the verdict from the replication policy.
type Pipeline struct {
	topo    *regions.Topology
	self    *regions.Region   // the region this daemon runs for
	home    *Store            // writes go to this region's own replica of the table
	stores  map[string]*Store // each region's replica, for verification reads (another region's: its own item only)
	policy  AckRule
	log     *zap.Logger
	metrics *Metrics
	ready   *Readiness
	now     func() time.Time
	// replicaWait bounds how long a verification waits for a region's replica to receive the
	// record's wrap (global tables replicate asynchronously, typically within a second).
	replicaWait time.Duration
	// lags holds each other region's replication lag, as observed; the daemon's own replica has
	// none (its reads are strongly consistent after its own writes).
	lags map[string]*replicaLag
}

// remoteReadLinger is how long a read of another region's replica waits for others to share its
// BatchGetItem call; ownReadLinger the same for reads of this daemon's own replica (each event's
// first read), short, as the event waits on it.
const (
	remoteReadLinger = 100 * time.Millisecond
	ownReadLinger    = 5 * time.Millisecond
	// ownWriteLinger is how long a record write or a verification stamp waits for other events'
	// writes, to go out in one TransactWriteItems call.
	ownWriteLinger = 20 * time.Millisecond
)

// DefaultReplicaWait is how long verifying a region waits for its replica to catch up before
// the event is left for redelivery.
const DefaultReplicaWait = 5 * time.Second

// NewPipeline builds the pipeline of the daemon for region (its records are written through
// that region's replica of the table) over a checked topology; "" means the home region.
func NewPipeline(topo *regions.Topology, region string, log *zap.Logger, m *Metrics, ready *Readiness) (*Pipeline, error) {
	cfg := topo.Config()
	p := &Pipeline{topo: topo, stores: map[string]*Store{}, policy: AckRuleFromConfig(cfg),
		log: log, metrics: m, ready: ready, now: time.Now, replicaWait: DefaultReplicaWait, lags: map[string]*replicaLag{}}
	if region == "" {
		region = topo.Home
	}
	for _, name := range topo.Names() {
		r, _ := topo.Region(name)
		// Another region's replica is read only to see that region's own item under the
		// record's header (verifyIn, and the ack's survivingView, for I1): its reads fetch those
		// 2 items, not 1 + regions, as verify's do. The other items there prove nothing about
		// it, and decoding them was a third of the daemon's item reads (docs/BENCH.md, part 5).
		// Only this region's store reads whole records (to merge) and writes.
		names := cfg.RegionNames()
		if name != region {
			names = []string{name}
		}
		s := NewStore(cfg.Table, name, r.DynamoDB(), names)
		if m != nil {
			s.OnConflict = func() { m.RecordCASs.WithLabelValues("conflict").Inc() }
		}
		p.stores[name] = s
	}
	own, ok := p.stores[region]
	if !ok {
		return nil, fmt.Errorf("region %s has no clients (not configured, or excluded)", region)
	}
	p.home = own
	p.self, _ = topo.Region(region)
	for name, s := range p.stores {
		if name != region {
			// Reads of another region's replica wait for replication anyway: batch them.
			s.SetReadLinger(remoteReadLinger)
			p.lags[name] = &replicaLag{}
		} else {
			s.SetReadLinger(ownReadLinger)
			s.SetWriteLinger(ownWriteLinger)
		}
	}
	return p, nil
}

// Handle implements Handler.
func (p *Pipeline) Handle(ctx context.Context, m Message) Result {
	if n, ok, err := envelope.ParseS3Notification([]byte(m.Body)); ok {
		return p.handleS3(ctx, n, err, wasRedelivered(m))
	}
	res := Result{Regions: map[string]string{}}
	ev, err := envelope.DecodeEvent([]byte(m.Body))
	if err != nil {
		reason := ReasonBadEvent
		var ee *envelope.EventError
		if errors.As(err, &ee) {
			reason = ee.Reason()
		}
		res.Verdict, res.Reason, res.Err = Poison, reason, err
		return res
	}
	res.EnvelopeID = ev.ID
	p.verdict(p.process(ctx, ev, &res, wasRedelivered(m)), &res)
	return res
}

// wasRedelivered says whether a message has been handled before (a redelivery, or a re-sent copy).
func wasRedelivered(m Message) bool { return m.ReceiveCount > 1 || !m.FirstSentAt.IsZero() }

// verdict sets res's verdict from process's error: none acks, poison dead-letters, anything else
// retries.
func (p *Pipeline) verdict(err error, res *Result) {
	var pe *poisonError
	switch {
	case errors.As(err, &pe):
		res.Verdict, res.Reason, res.Err = Poison, pe.reason, err
	case err != nil:
		res.Verdict, res.Err = Retry, err
		if res.Reason == "" {
			res.Reason = "error"
		}
	}
}

// checkEvent refuses events whose source region or key this deployment does not know. The key
// must be one of the source region's allowed keys (regions.Region.CheckUnwrapKey): its configured
// key, previous_keys, trusted_keys, or what its alias resolves or resolved to (a repointed alias
// is re-resolved), so a key change never strands events in flight.
func (p *Pipeline) checkEvent(ctx context.Context, ev *envelope.Event) (*regions.Region, error) {
	src, err := p.topo.Region(ev.SourceRegion)
	if err != nil {
		return nil, poison(ReasonUnknownRegion, "record %s: source region %s is not configured", ev.ID, ev.SourceRegion)
	}
	if regions.ARNRegion(ev.KeyARN) != ev.SourceRegion {
		return nil, poison(ReasonUnknownKey, "record %s: key %s is not in the source region %s", ev.ID, ev.KeyARN, ev.SourceRegion)
	}
	if err := src.CheckUnwrapKey(ctx, "event", ev.KeyARN); err != nil {
		if errors.Is(err, regions.ErrUntrustedKey) && !errors.Is(err, regions.ErrAliasRecheckPending) {
			return nil, poison(ReasonUnknownKey, "record %s: %w", ev.ID, err)
		}
		return nil, err // resolving an alias failed, or is due again soon: retry later
	}
	return src, nil
}

// process handles one decoded event, phase by phase: check the event, read the record, wrap in
// every region that lacks a wrap, record the wraps, verify each region alone, and decide.
// redelivered: this message was delivered (or sent) before, and that pass did not delete it.
func (p *Pipeline) process(ctx context.Context, ev *envelope.Event, res *Result, redelivered bool) error {
	src, err := p.checkEvent(ctx, ev)
	if err != nil {
		return err
	}
	w := &eventWork{ev: ev, ec: ev.Context.Map(), res: res, key: p.sourceKey(src, ev)}
	defer w.key.wipe()
	stored, cur, err := p.read(ctx, w)
	if err != nil {
		return err
	}
	// Already protected as this replica saw it: a copy, not the envelope's protection moment
	// (envdr_protection_seconds). Unless this very message was delivered before: its earlier
	// pass did not ack (or the ack's delete was lost), typically because it stamped every
	// region but could not confirm one in that region's own replica (a region lost between
	// its verification and the ack), so the record looks protected here although no ack has
	// observed it. Counting it errs late (a copy on another queue acked meanwhile counts
	// twice); not counting it dropped exactly the slowest envelopes of an outage (make
	// slo-bench, case loss: 12 of 600).
	w.wasProtected = stored != nil && p.metFrom(stored) && !redelivered
	delta, err := p.wrap(ctx, w, stored, cur)
	if err != nil {
		return err
	}
	rec, err := p.record(ctx, w, stored, delta)
	if err != nil {
		return err
	}
	rec, err = p.verify(ctx, w, rec)
	if err != nil {
		return err
	}
	return p.decide(ctx, w, rec)
}

// eventWork is one event's state across the phases.
type eventWork struct {
	// wasProtected: the record met the policy in this daemon's replica before this pass, and
	// this message was not delivered before (no ack is owed an observation: see process).
	wasProtected bool
	ev           *envelope.Event
	ec           map[string]string
	key          *sourceKey
	mu           sync.Mutex // guards res.Regions, written by the phases' goroutines
	res          *Result
}

func (w *eventWork) status(region, s string) {
	w.mu.Lock()
	w.res.Regions[region] = s
	w.mu.Unlock()
}

// sourceKey opens the event's wrapped DEK once, when a phase needs it: in the source region,
// unless this daemon runs in another region that holds a replica of the event's multi-Region
// key. Then it opens it through its own replica, so a lost source region stops nothing (in
// independent mode only the source key can, which bounds what survives the source region's
// loss: docs/RUNBOOK.md).
type sourceKey struct {
	ev      *envelope.Event
	ec      map[string]string
	src, at *regions.Region
	arn     string
	once    sync.Once
	dek     []byte // set only once the wrap decrypted and matched the commitment
	err     error
}

func (p *Pipeline) sourceKey(src *regions.Region, ev *envelope.Event) *sourceKey {
	k := &sourceKey{ev: ev, ec: ev.Context.Map(), src: src, at: src, arn: ev.KeyARN}
	if p.self != nil && p.self != src && p.self.Mode == config.ModeMRK && regions.IsMultiRegionKeyARN(ev.KeyARN) {
		if arn, err := regions.ReplicaARN(ev.KeyARN, p.self.Name); err == nil {
			k.at, k.arn = p.self, arn
		}
	}
	return k
}

// open returns the DEK (the caller must not keep it past the event: wipe wipes it).
func (k *sourceKey) open(ctx context.Context) ([]byte, error) {
	k.once.Do(func() {
		d, err := k.at.DecryptRaw(ctx, k.ev.WrappedDEK, k.arn, k.ec)
		if err != nil {
			k.err = invalidWrapIsPoison(k.ev.ID, err)
			return
		}
		if err := envelope.CheckCommitment(d, k.ev.Commitment); err != nil {
			envelope.Wipe(d)
			k.err = poison(ReasonCommitmentMismatch, "record %s: the wrapped DEK does not match the event's commitment: %w", k.ev.ID, err)
			return
		}
		k.dek = d
	})
	return k.dek, k.err
}

// proven is the source region's wrap when it was decrypted there and its commitment checked: it
// needs no second Decrypt to be verified (the table read still proves the record is in that
// region's table).
func (k *sourceKey) proven() *envelope.Wrap {
	if k.dek != nil && k.at == k.src {
		return k.ev.Wrap()
	}
	return nil
}

// wipe wipes the DEK (the slice is kept, so proven still knows it was opened).
func (k *sourceKey) wipe() { envelope.Wipe(k.dek) }

// read reads the record from this region's replica and merges the event into a working copy
// (fill-only). stored is nil for a new record.
func (p *Pipeline) read(ctx context.Context, w *eventWork) (stored, cur *envelope.Record, err error) {
	base := w.ev.Record()
	stored, err = p.home.Get(ctx, w.ev.ID)
	switch {
	case errors.Is(err, ErrRecordNotFound):
		return nil, base, nil
	case err != nil:
		w.res.Reason = "record_read"
		return nil, nil, err
	}
	cur = stored.Clone()
	if err := cur.Merge(fillOnly(stored, base)); err != nil {
		return nil, nil, poison(ReasonRecordConflict, "record %s: the event does not match the stored record: %w", w.ev.ID, err)
	}
	return stored, cur, nil
}

// wrap makes the wrap of every region that has none yet, in parallel (bounded by the region
// count; each region's limiter bounds its KMS rate), and returns them with the event's record
// as the delta to record.
//
// It keeps the record invariants of docs/FORMAT.md §6.1: the event's wrap is checked against
// its commitment before it fills or is re-wrapped into any region, in every mode (a forged event
// is poison, commitment_mismatch, and writes nothing: I5); and a region whose wrap failed gets
// no item at all (its failure goes to the logs and metrics), so no write without a wrap can
// replace a wrap in another replica by last-writer-wins (I3).
func (p *Pipeline) wrap(ctx context.Context, w *eventWork, stored, cur *envelope.Record) (*envelope.Record, error) {
	if err := p.checkEventWrap(ctx, w, stored); err != nil {
		return nil, err
	}
	delta := w.ev.Record()
	var mu sync.Mutex // guards delta
	g, gctx := newTaskGroup(ctx)
	for _, name := range p.topo.Names() {
		if cur.Regions[name].HasWrap() {
			w.status(name, "wrapped")
			continue
		}
		r, _ := p.topo.Region(name)
		g.Go(func() error {
			start := p.now()
			wrapped, keyARN, err := p.wrapIn(gctx, r, w.ev, w.ec, w.key.open)
			now := p.now()
			if err != nil {
				var pe *poisonError
				if errors.As(err, &pe) {
					return err
				}
				w.status(name, "failed: "+trimErr(err))
				p.failed(name, "wrap")
				return nil
			}
			p.answered(name)
			if p.metrics != nil {
				p.metrics.Wrap.WithLabelValues(name).Observe(now.Sub(start).Seconds())
			}
			mu.Lock()
			delta.Regions[name] = &envelope.RegionWrap{KeyARN: keyARN, Wrapped: wrapped, WrappedAt: now, LastErrorAt: now}
			mu.Unlock()
			w.status(name, "wrapped")
			return nil
		})
	}
	return delta, g.Wait()
}

// checkEventWrap proves the event's wrap opens to the DEK its commitment names before anything
// uses it (I5: a forged event changes nothing). An event whose wrap is byte for byte the
// verified wrap the record already holds for the source region (a copy, a redelivery) was
// proven when that wrap was verified, and needs no KMS call; any other is opened (in the source
// region, or through this daemon's own replica of the multi-Region key) and checked.
func (p *Pipeline) checkEventWrap(ctx context.Context, w *eventWork, stored *envelope.Record) error {
	if stored != nil && bytes.Equal(stored.Commitment, w.ev.Commitment) {
		if sw := stored.Regions[w.ev.SourceRegion]; sw.Verified() && sameWrap(sw, &envelope.RegionWrap{KeyARN: w.ev.KeyARN, Wrapped: w.ev.WrappedDEK}) {
			return nil
		}
	}
	_, err := w.key.open(ctx)
	return err
}

// failed counts a region's failed wrap or verification (the table never records failures).
func (p *Pipeline) failed(region, phase string) {
	if p.metrics != nil {
		p.metrics.RegionFailures.WithLabelValues(region, phase).Inc()
	}
}

// record merges the delta into the record through this region's replica (conditional writes).
func (p *Pipeline) record(ctx context.Context, w *eventWork, stored, delta *envelope.Record) (*envelope.Record, error) {
	rec, err := p.home.UpdateFrom(ctx, stored, w.ev.ID, mergeInto(delta))
	if err != nil {
		w.res.Reason = "record_write"
		return nil, err
	}
	if p.metrics != nil {
		p.metrics.RecordCASs.WithLabelValues("ok").Inc()
	}
	return rec, nil
}

// verify proves, for a sampled event, that each region with an unverified wrap opens it alone,
// and stamps the outcomes: together, in one write, when the regions finish within stampGrace of
// each other, else each group as it is known. A region's item is its own (docs/FORMAT.md 6.1),
// so a slow or sick region never holds back the others' stamps for longer than that. It returns
// the record with the stamps. A region whose wrap is bad (errBadWrap) is repaired.
func (p *Pipeline) verify(ctx context.Context, w *eventWork, rec *envelope.Record) (*envelope.Record, error) {
	if !p.policy.Sampled(w.ev.ID) {
		return rec, nil
	}
	var mu sync.Mutex // guards bad
	bad := map[string]*envelope.RegionWrap{}
	proven := w.key.proven()
	var todo []string
	for _, name := range p.topo.Names() {
		rw := rec.Regions[name]
		if !rw.HasWrap() {
			continue
		}
		if rw.Verified() {
			w.status(name, "verified")
			continue
		}
		todo = append(todo, name)
	}
	sb := &stampBatch{p: p, id: w.ev.ID, base: rec, pending: map[string]verifyStamp{}, outstanding: len(todo)}
	g, gctx := newTaskGroup(ctx)
	for _, name := range todo {
		r, _ := p.topo.Region(name)
		g.Go(func() error {
			var pr *envelope.Wrap
			if name == w.ev.SourceRegion {
				pr = proven
			}
			checked, start, err := p.verifyIn(gctx, r, rec, pr)
			now := p.now()
			sb.add(gctx, name, verifyStamp{wrap: checked, at: now, err: err})
			if err != nil {
				w.status(name, "verify failed: "+trimErr(err))
				p.failed(name, "verify")
				if errors.Is(err, errBadWrap) {
					mu.Lock()
					bad[name] = rec.Regions[name]
					mu.Unlock()
				}
				return nil
			}
			p.answered(name)
			if p.metrics != nil {
				p.metrics.Verify.WithLabelValues(name).Observe(now.Sub(start).Seconds())
			}
			w.status(name, "verified")
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if sb.err != nil {
		w.res.Reason = "record_write"
		return nil, sb.err
	}
	if len(sb.stamped) > 0 {
		rec = rec.Clone()
		for name, sw := range sb.stamped {
			if sw != nil {
				rec.Regions[name] = sw
			}
		}
	}
	if len(bad) > 0 {
		return nil, p.repair(ctx, w, rec, bad)
	}
	return rec, nil
}

// errBadWrap marks a recorded wrap that is no wrap of the record's DEK: KMS refused it as
// invalid, or it opened to a DEK that fails the commitment. Such a region counts as having no
// wrap (docs/FORMAT.md §6.1), and repair replaces it.
var errBadWrap = errors.New("the recorded wrap is not a wrap of the record's data key")

// repair replaces each region's bad wrap with a checked one, made from the event's checked DEK
// (ReEncrypt or Encrypt as for a missing wrap), and leaves the event for redelivery, which
// verifies the new wraps. The write replaces a wrap only while it is still the bad one it read
// (another writer may have repaired it meanwhile), so it never displaces a checked wrap (I3).
func (p *Pipeline) repair(ctx context.Context, w *eventWork, rec *envelope.Record, bad map[string]*envelope.RegionWrap) error {
	if _, err := w.key.open(ctx); err != nil {
		return err
	}
	fresh := map[string]*envelope.RegionWrap{}
	for name := range bad {
		r, _ := p.topo.Region(name)
		wrapped, keyARN, err := p.wrapIn(ctx, r, w.ev, w.ec, w.key.open)
		if err != nil {
			w.res.Reason = "repair"
			return fmt.Errorf("record %s: region %s: replacing a wrap that fails its commitment: %w", w.ev.ID, name, err)
		}
		now := p.now()
		fresh[name] = &envelope.RegionWrap{KeyARN: keyARN, Wrapped: wrapped, WrappedAt: now, LastErrorAt: now}
	}
	_, err := p.home.UpdateFrom(ctx, rec, w.ev.ID, func(cur *envelope.Record) (*envelope.Record, error) {
		if cur == nil {
			return nil, nil
		}
		next := cur.Clone()
		changed := false
		for name, nw := range fresh {
			if c := cur.Regions[name]; c.HasWrap() && !sameWrap(c, bad[name]) {
				continue // already replaced by another writer
			}
			cp := *nw
			next.Regions[name] = &cp
			changed = true
		}
		if !changed {
			return nil, nil
		}
		return next, nil
	})
	if err != nil {
		w.res.Reason = "record_write"
		return err
	}
	names := slices.Sorted(maps.Keys(fresh))
	for _, name := range names {
		w.status(name, "bad wrap replaced")
		if p.metrics != nil {
			p.metrics.Repairs.WithLabelValues(name).Inc()
		}
	}
	w.res.Reason = "repaired"
	return fmt.Errorf("record %s: the recorded wrap of %s failed its key commitment and was replaced with a checked wrap; verifying it on redelivery", w.ev.ID, strings.Join(names, ", "))
}

// stampGrace is how long the first verification outcome of an event waits for the others, to be
// written with them in one write.
const stampGrace = time.Second

// stampBatch gathers one event's verification outcomes and writes them in as few writes as the
// regions' timing allows: the first outcome waits (up to stampGrace) for the verifications still
// under way, then writes everything gathered; an outcome that comes later does the same.
type stampBatch struct {
	p  *Pipeline
	id string

	mu          sync.Mutex
	pending     map[string]verifyStamp
	outstanding int           // verifications not yet added
	waiter      chan struct{} // closed to wake the outcome that waits to write
	wmu         sync.Mutex    // serialises the writes, so each starts from the last one's record
	base        *envelope.Record
	stamped     map[string]*envelope.RegionWrap
	err         error // the first failed write (guarded by wmu)
}

func (b *stampBatch) add(ctx context.Context, name string, st verifyStamp) {
	b.mu.Lock()
	b.pending[name] = st
	b.outstanding--
	if b.waiter != nil {
		if b.outstanding == 0 {
			close(b.waiter) // the waiting outcome writes them all now
			b.waiter = nil
		}
		b.mu.Unlock()
		return
	}
	if b.outstanding > 0 {
		ch := make(chan struct{})
		b.waiter = ch
		b.mu.Unlock()
		t := time.NewTimer(stampGrace)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		b.mu.Lock()
		if b.waiter == ch {
			b.waiter = nil
		}
	}
	batch := b.pending
	b.pending = map[string]verifyStamp{}
	b.mu.Unlock()
	b.write(ctx, batch)
}

func (b *stampBatch) write(ctx context.Context, batch map[string]verifyStamp) {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	updated, err := b.p.home.UpdateFrom(ctx, b.base, b.id, stampVerified(batch))
	if err != nil {
		if b.err == nil {
			b.err = err
		}
		return
	}
	if updated == nil {
		return
	}
	b.base = updated
	if b.stamped == nil {
		b.stamped = map[string]*envelope.RegionWrap{}
	}
	for name := range batch {
		b.stamped[name] = updated.Regions[name]
	}
}

// decide acks when the replication policy is met by what every region's own replica holds.
func (p *Pipeline) decide(ctx context.Context, w *eventWork, rec *envelope.Record) error {
	if ok, missing := p.policy.Met(p.survivingView(ctx, rec, w)); !ok {
		w.res.Reason = "regions_pending"
		return fmt.Errorf("record %s: replication policy not met; waiting for %s", w.ev.ID, strings.Join(missing, ", "))
	}
	w.res.Verdict = Ack
	if !w.wasProtected && p.metrics != nil && !w.ev.CreatedAt.IsZero() {
		p.metrics.Protection.WithLabelValues(w.ev.SourceRegion).Observe(max(p.now().Sub(w.ev.CreatedAt), 0).Seconds())
	}
	return nil
}

// metFrom reports whether rec, as one replica holds it, meets the policy.
func (p *Pipeline) metFrom(rec *envelope.Record) bool {
	ok, _ := p.policy.Met(rec)
	return ok
}

// survivingView is rec as the ack rule sees it (I1): a region the rule counts is kept only if
// its own replica, read now through its own endpoint, holds the same wrap under the same
// commitment (what this daemon's memory or replica says is not enough: global tables replicate
// asynchronously, item by item, and an acked event must survive this region's loss). The wrap's
// verification, by this pass or an earlier writer, was a Decrypt through that region's own
// endpoints of exactly these bytes.
func (p *Pipeline) survivingView(ctx context.Context, rec *envelope.Record, w *eventWork) *envelope.Record {
	view := rec.Clone()
	var mu sync.Mutex // guards view
	g := &taskGroup{}
	for name, rw := range rec.Regions {
		if !p.policy.Counts(name) {
			continue
		}
		if !rw.HasWrap() {
			continue
		}
		if _, err := p.topo.Region(name); err != nil {
			continue // not served by this daemon (not configured)
		}
		g.Go(func() error {
			got, err := p.replicated(ctx, name, rec)
			mu.Lock()
			defer mu.Unlock()
			if err == nil && sameWrap(got.Regions[name], rw) && bytes.Equal(got.Commitment, rec.Commitment) {
				if !rw.Verified() && got.Regions[name].Verified() {
					view.Regions[name] = got.Regions[name] // stamped there by another writer
				}
				return nil
			}
			delete(view.Regions, name)
			if err != nil {
				w.status(name, "not confirmed in its own replica: "+trimErr(err))
			} else {
				w.status(name, "not yet in its own replica")
			}
			return nil
		})
	}
	_ = g.Wait()
	return view
}

// wrapIn makes region r's wrap of the event's DEK: ReEncrypt inside KMS when r holds a replica of
// the source multi-Region key, else Decrypt once in the source region and Encrypt in r.
func (p *Pipeline) wrapIn(ctx context.Context, r *regions.Region, ev *envelope.Event, ec map[string]string,
	sourceDEK func(context.Context) ([]byte, error)) ([]byte, string, error) {
	if r.Mode == config.ModeMRK && regions.IsMultiRegionKeyARN(ev.KeyARN) {
		srcARN, err := regions.ReplicaARN(ev.KeyARN, r.Name)
		if err != nil {
			return nil, "", err
		}
		if p.topo.Config().MRKWrap == config.MRKWrapShared {
			// The replica shares the key material: the source wrap is r's wrap, recorded under
			// r's replica ARN; r's verification Decrypt is what proves it opens in r.
			return bytes.Clone(ev.WrappedDEK), srcARN, nil
		}
		wrapped, arn, err := r.ReEncrypt(ctx, ev.WrappedDEK, srcARN, "", ec)
		return wrapped, arn, invalidWrapIsPoison(ev.ID, err)
	}
	dek, err := sourceDEK(ctx)
	if err != nil {
		return nil, "", err
	}
	return r.EncryptRaw(ctx, dek, ec)
}

// invalidWrapIsPoison turns KMS refusing the event's wrapped DEK (corrupt, another envelope's,
// or another context) into the invalid_wrap poison verdict; other errors stay as they are.
func invalidWrapIsPoison(id string, err error) error {
	if errors.Is(err, regions.ErrInvalidCiphertext) {
		return poison(ReasonInvalidWrap, "record %s: %w", id, err)
	}
	return err
}

// verifyIn proves region r can open the record alone: it reads the record from r's own table
// endpoint, decrypts r's wrap with r's KMS, and checks the key commitment. With proven (a wrap
// already decrypted in r and checked against the commitment) it checks that r's table holds
// exactly that wrap instead of decrypting it again. It returns the wrap it checked.
func (p *Pipeline) verifyIn(ctx context.Context, r *regions.Region, want *envelope.Record, proven *envelope.Wrap) (*envelope.RegionWrap, time.Time, error) {
	// The wait for the region's replica to hold the wrap is the global table's lag, observed on
	// its own; the verification proper (envdr_verify_seconds) starts once the replica answers.
	waitStart := p.now()
	rec, err := want, error(nil)
	if r.Name != p.home.Region {
		rec, err = p.replicated(ctx, r.Name, want)
	}
	// else: want came from this daemon's own replica in this pass, by a strongly consistent
	// read or a conditional write that succeeded there: it is what that replica holds, and
	// reading it again would prove nothing more.
	readAt := p.now()
	if err != nil {
		return nil, readAt, err
	}
	if p.metrics != nil {
		p.metrics.ReplicaWait.WithLabelValues(r.Name).Observe(readAt.Sub(waitStart).Seconds())
	}
	w := rec.Regions[r.Name]
	if !w.HasWrap() {
		return nil, readAt, fmt.Errorf("region %s: record %s has no wrap for this region in the region's table yet", r.Name, want.ID)
	}
	if !bytes.Equal(rec.Commitment, want.Commitment) {
		return nil, readAt, fmt.Errorf("region %s: record %s: %w (the region's table holds another commitment)", r.Name, want.ID, envelope.ErrCommitmentMismatch)
	}
	if proven != nil && proven.KeyARN == w.KeyARN && bytes.Equal(proven.Wrapped, w.Wrapped) {
		return w, readAt, nil
	}
	if err := checkWrap(ctx, r, w, rec); err != nil {
		return nil, readAt, err
	}
	return w, readAt, nil
}

// replicated reads want's record from region's own replica, waiting (up to replicaWait) for
// replication to bring it the wrap that was written for region elsewhere: global tables
// replicate asynchronously, and the ack rule needs the region's own replica to hold its wrap.
// After the wait it returns what the replica holds; the caller decides.
//
// The first read of another region's replica waits about as long as replication has lately
// taken to reach it (replicaLag), so a wrap is normally read once, not polled for.
func (p *Pipeline) replicated(ctx context.Context, region string, want *envelope.Record) (*envelope.Record, error) {
	start := p.now()
	deadline := start.Add(p.replicaWait)
	delay := 20 * time.Millisecond
	r, err := p.topo.Region(region)
	if err != nil {
		return nil, err
	}
	lag := p.lags[region] // nil for the daemon's own replica: no wait
	// A wrap written a while ago (a redelivery, a copy, the ack's re-read of a wrap verified
	// moments ago) has had time to replicate: only the part of the expected lag not yet past
	// since the wrap was made is waited for. What is waited for is the wrap (sameWrap), so a
	// later stamp on the item (verified_at, an error) does not restart the wait: counting from
	// it cost every ack a second full lag (envdr_protection_seconds, docs/BENCH.md).
	if d := lag.first() - start.Sub(wrapMadeAt(want.Regions[region])); d > 0 {
		if err := sleepCtx(ctx, min(d, p.replicaWait/2)); err != nil {
			return nil, err
		}
	}
	for first := true; ; first = false {
		// The read goes through the region's health: a region whose endpoints do not answer is
		// deferred at once instead of holding the event for a timeout on every delivery.
		var rec *envelope.Record
		err := r.Call(ctx, "GetItem", func(ctx context.Context) error {
			var err error
			rec, err = p.stores[region].Get(ctx, want.ID)
			return err
		})
		switch {
		case err == nil && sameWrap(rec.Regions[region], want.Regions[region]):
			lag.observe(first, p.now().Sub(start))
			return rec, nil
		case err != nil && !errors.Is(err, ErrRecordNotFound):
			return nil, err
		case !p.now().Before(deadline):
			if err != nil {
				return nil, fmt.Errorf("region %s: record %s not in the region's replica after %s (replication lag?): %w", region, want.ID, p.replicaWait, err)
			}
			return rec, nil
		}
		if err := sleepCtx(ctx, delay); err != nil {
			return nil, err
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// wrapMadeAt is when a region's wrap was made (zero without a wrap): the moment from which
// replication has been carrying it to the region's replica.
func wrapMadeAt(w *envelope.RegionWrap) time.Time {
	if !w.HasWrap() {
		return time.Time{}
	}
	return w.WrappedAt
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// replicaLag estimates how long a write takes to show in one region's replica, from the reads
// that found it: a first read that missed moves the estimate toward the time it took, one that
// found the wrap lowers it a little, so the estimate follows the lag down as well as up.
type replicaLag struct {
	mu  sync.Mutex
	est time.Duration
}

// maxLagWait caps the wait before the first read (a replica far behind is polled instead).
const maxLagWait = 2 * time.Second

func (l *replicaLag) first() time.Duration {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.est
}

func (l *replicaLag) observe(first bool, took time.Duration) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if first {
		l.est = l.est * 19 / 20
	} else {
		l.est = min(maxLagWait, (4*l.est+took)/5)
	}
}

// sameWrap reports whether a and b hold the same wrap (key and bytes).
func sameWrap(a, b *envelope.RegionWrap) bool {
	return a != nil && b != nil && a.KeyARN == b.KeyARN && bytes.Equal(a.Wrapped, b.Wrapped)
}

func (p *Pipeline) answered(region string) {
	if p.ready != nil {
		p.ready.Answered(region)
	}
}

// mergeInto returns a Store.Update mutation that merges delta into the current record and
// writes only when something changed.
func mergeInto(delta *envelope.Record) func(cur *envelope.Record) (*envelope.Record, error) {
	return func(cur *envelope.Record) (*envelope.Record, error) {
		if cur == nil {
			return delta.Clone(), nil
		}
		next := cur.Clone()
		if err := next.Merge(fillOnly(cur, delta)); err != nil {
			return nil, poison(ReasonRecordConflict, "%w", err)
		}
		next.Version = cur.Version
		if recordsEqual(cur, next) {
			return nil, nil
		}
		return next, nil
	}
}

// fillOnly is delta without the wraps that would replace a different wrap cur already holds: an
// event (or this pass's work, made from an older read) only fills regions that have no wrap. So
// a redelivered event cannot put back the wrap a rewrap replaced (the event carries the original
// source wrap, older and so preferred by the merge), and a verified wrap is never displaced.
// Errors and the record's fixed fields merge as before.
func fillOnly(cur, delta *envelope.Record) *envelope.Record {
	out := delta.Clone()
	for name, w := range out.Regions {
		if c := cur.Regions[name]; c.HasWrap() && w.HasWrap() && !sameWrap(c, w) {
			delete(out.Regions, name)
		}
	}
	return out
}

// verifyStamp is the outcome of verifying one region: the wrap that was decrypted (nil on
// error), when, and the error.
type verifyStamp struct {
	wrap *envelope.RegionWrap
	at   time.Time
	err  error
}

// stampVerified returns a Store.Update mutation that records successful verifications without
// ever changing a wrap: verified_at is set only on a region whose current wrap is exactly the one
// that was decrypted and checked (another worker may have replaced an unverified wrap meanwhile;
// that one is verified on its own delivery). Its item then holds a checked wrap, as before (I3),
// and verified_at only moves forward in this replica. Failures are never written (logs and
// metrics only): a failure stamp would rewrite the item with the wrap it read, which last writer
// wins could bring back over a newer wrap written in another region.
func stampVerified(stamps map[string]verifyStamp) func(cur *envelope.Record) (*envelope.Record, error) {
	return func(cur *envelope.Record) (*envelope.Record, error) {
		if cur == nil {
			return nil, nil // nothing to stamp: the record is gone (not expected)
		}
		next := cur.Clone()
		changed := false
		for name, st := range stamps {
			w := next.Regions[name]
			if w == nil {
				continue
			}
			if st.err == nil && sameWrap(st.wrap, w) && st.at.After(w.VerifiedAt) {
				w.VerifiedAt, w.LastError, w.LastErrorAt = st.at, "", st.at
				changed = true
			}
		}
		if !changed {
			return nil, nil
		}
		return next, nil
	}
}

func recordsEqual(a, b *envelope.Record) bool {
	ja, err1 := envelope.EncodeRecord(a)
	jb, err2 := envelope.EncodeRecord(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// trimErr renders err for a record's last_error: printable (the record codec refuses control
// characters) and short, cut at a rune boundary.
func trimErr(err error) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, err.Error())
	if len(s) > 300 {
		cut := 300
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
