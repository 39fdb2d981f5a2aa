package recovery

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"fmt"
	htmltemplate "html/template"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// RegionControl loses and restores a region (the stand-in's admin endpoint). Against AWS there
// is none: the operator blocks the region's endpoints, and the game day only measures.
type RegionControl interface {
	Down(ctx context.Context, region string) error
	Up(ctx context.Context, region string) error
}

// GamedayOptions tune Gameday.
type GamedayOptions struct {
	// Lose is the region lost during the game day.
	Lose string
	// Rate is how many envelopes are sealed (and enqueued) per second; default 2. Envelopes,
	// when set, overrides it.
	Rate float64
	// Envelopes, when > 0, is how many envelopes the game day seals in all: Before and During
	// share them by their lengths, at the rate Envelopes / (Before + During). A phase lasts
	// until its share is sealed, so on a machine that cannot keep that rate the phases (the
	// loss included) last longer than asked; the report has the real times.
	Envelopes int
	// Objects: during the loss, each envelope is put as an object in its sealing region's
	// bucket (regions[].bucket) and not enqueued: the S3 event source of that region's daemon
	// must protect it from the bucket's notification alone (the S3 data path).
	Objects bool
	// Before and During are how long sealing goes on before the loss and during it; defaults
	// 5s and 20s.
	Before, During time.Duration
	// Within bounds the wait for protection after the sealing stops, and for the catch-up after
	// the region returns; default 2m.
	Within time.Duration
	// Control takes the region down and back; nil: the region is assumed blocked by the
	// operator for the whole game day and is never contacted (no catch-up is measured).
	Control RegionControl
	// SealTimeout bounds each region's try when sealing (fall-over); default 5s.
	SealTimeout time.Duration
	// Regions tunes the per-region clients.
	Regions regions.Options
	// Envdr is the build that runs the game day, recorded in the report.
	Envdr Build
	// Log, optional, receives progress lines.
	Log func(string)
	// Open, optional, opens a whole envelope the way `envdr open` does without --region (the
	// sealing region first, then seal order, skipping a lost region) and says which region
	// served and which it skipped. During the loss the game day opens an envelope sealed before
	// it and one sealed during it this way, to show the plain command working. Used only with
	// Control: without it the lost region must never be contacted, and the fall-over would try it.
	Open func(ctx context.Context, envelope []byte) (served string, skipped []string, err error)
}

// GamedayOpen is one envelope opened without --region during the loss.
type GamedayOpen struct {
	ID       string   `json:"id"`
	SealedIn string   `json:"sealed_in"`
	Region   string   `json:"region,omitempty"` // the region that served
	Skipped  []string `json:"skipped"`
	Error    string   `json:"error,omitempty"`
}

// GamedayReportKind is the "kind" member of a game day report's JSON (ReportKind).
const GamedayReportKind = "gameday"

// GamedayReport is what a game day measured; docs/DRILLS.md describes every field. Its figures:
//   - RPO: envelopes sealed and enqueued that no surviving region could open on its own by the
//     end of the outage (target 0);
//   - RTO: seconds from the loss until an envelope sealed after the loss opened in every
//     surviving region on its own, i.e. until new data was protected again;
//   - catch-up: seconds from the region's return until every envelope opened in it on its own;
//   - protection: per envelope, seconds from its seal until it opened in every required
//     region alone (the decryptability RPO), as percentiles.
type GamedayReport struct {
	Kind          string `json:"kind"`
	SchemaVersion int    `json:"schema_version"`
	Envdr         Build  `json:"envdr"`
	Host          string `json:"host"`
	Caller        Caller `json:"caller"`

	Lost       string    `json:"lost"`
	Surviving  []string  `json:"surviving"`
	StartedAt  time.Time `json:"started_at"`
	LostAt     time.Time `json:"lost_at"`
	RestoredAt time.Time `json:"restored_at,omitzero"`
	EndedAt    time.Time `json:"ended_at"`
	// Controlled: the game day took the region down and back itself (the stand-in); false:
	// the operator blocked it and it was never contacted.
	Controlled bool `json:"controlled"`

	Sealed       int            `json:"sealed"`
	SealedBefore int            `json:"sealed_before_loss"`
	SealedDuring int            `json:"sealed_during_loss"`
	SealedIn     map[string]int `json:"sealed_in"`
	SealFailures int            `json:"seal_failures"`
	EnqueueFails int            `json:"enqueue_failures"`
	// ObjectsDuring: envelopes sealed during the loss put in a bucket with no enqueue
	// (GamedayOptions.Objects); a failed put counts in EnqueueFails.
	ObjectsDuring int `json:"objects_during_loss,omitempty"`
	// RateAsked is the sealing rate asked for; RateAchieved the rate sealed, over both phases.
	RateAsked    float64 `json:"rate_asked"`
	RateAchieved float64 `json:"rate_achieved"`

	// RPO: the envelopes (IDs) no surviving region opened alone by the end of the outage.
	RPOEnvelopes int      `json:"rpo_envelopes"`
	Unprotected  []string `json:"unprotected,omitempty"`
	// RTOSeconds: from the loss until an envelope sealed after it was open in every surviving
	// region alone; -1 when none was.
	RTOSeconds float64 `json:"rto_seconds"`
	// MaxProtectSeconds: the longest any envelope sealed during the outage waited, from its
	// seal, to be open in every surviving region alone.
	MaxProtectSeconds float64 `json:"max_protect_seconds"`
	// CatchUpSeconds: from the region's return until every envelope opened in it alone; -1
	// when not measured (no control) or not reached within the wait.
	CatchUpSeconds float64 `json:"catch_up_seconds"`
	NotCaughtUp    int     `json:"not_caught_up"`
	// Protection: the per-envelope protection times (percentiles, histogram, by seal time).
	Protection GamedayProtection `json:"protection"`
	// Timeline: sealed and unprotected envelopes over the game day, one sample per check round
	// (the catch-up curve).
	Timeline []GamedaySample `json:"timeline"`
	// Matrix: per region, how many of the envelopes it opened alone at the end.
	Matrix []GamedayRegion `json:"matrix"`
	// OpenedWithoutRegion: envelopes opened during the loss as plain `envdr open` does, with no
	// --region (GamedayOptions.Open); any failure fails the game day.
	OpenedWithoutRegion []GamedayOpen `json:"opened_without_region"`
	Config              ConfigUsed    `json:"config"`
	Passed              bool          `json:"passed"`
	// SHA256 is the hex SHA-256 of the JSON report with this value left empty, as in drill
	// reports (VerifyGamedayReport); it must stay the last field.
	SHA256 string `json:"sha256"`
}

// GamedayProtection is the distribution of the per-envelope protection time.
type GamedayProtection struct {
	// Method says how the times were measured (docs/DRILLS.md).
	Method string `json:"method"`
	// Required are the regions (policy.required; with a quorum, Quorum of all) an envelope must
	// open in alone to count as protected.
	Required []string `json:"required"`
	Quorum   int      `json:"quorum,omitempty"`
	// RequiredRegions: seal to open alone in every required region (the lost one included, so
	// an envelope sealed during the loss waits for the catch-up): the decryptability RPO, the
	// figure envdr_protection_seconds measures in the daemons.
	RequiredRegions Percentiles `json:"required_regions"`
	// SurvivingRegions: seal to open alone in every surviving region.
	SurvivingRegions Percentiles `json:"surviving_regions"`
	// ResolutionSeconds bounds the polling error: each time is the end of the check that found
	// the envelope open; the true moment lies after the start of the check before it. Median
	// and max of that gap over the envelopes.
	ResolutionMedianSeconds float64 `json:"resolution_median_seconds"`
	ResolutionMaxSeconds    float64 `json:"resolution_max_seconds"`
	// Histogram counts envelopes per protection-time bucket (the bounds of
	// envdr_protection_seconds, then +Inf).
	Histogram []HistogramBucket `json:"histogram"`
	// BySealTime: per BinSeconds of seal time, how many envelopes were sealed and the slowest
	// protection among them.
	BinSeconds float64       `json:"bin_seconds"`
	BySealTime []GamedaySeal `json:"by_seal_time"`
}

// Percentiles summarise protection times by the nearest-rank method: p99.99 of 10,000
// envelopes is the 9,999th fastest.
type Percentiles struct {
	// Envelopes measured; Never: envelopes never protected within the game day (not in the
	// percentiles: they are the RPO or the not caught up).
	Envelopes int     `json:"envelopes"`
	Never     int     `json:"never"`
	P50       float64 `json:"p50_seconds"`
	P99       float64 `json:"p99_seconds"`
	P999      float64 `json:"p99_9_seconds"`
	P9999     float64 `json:"p99_99_seconds"`
	Max       float64 `json:"max_seconds"`
}

// HistogramBucket counts envelopes whose protection time was at most LE seconds (and above the
// bucket before; LE 0 stands for +Inf).
type HistogramBucket struct {
	LE        float64 `json:"le"`
	Required  int     `json:"required_regions"`
	Surviving int     `json:"surviving_regions"`
}

// GamedaySeal is one seal-time bin.
type GamedaySeal struct {
	AtSeconds float64 `json:"at_seconds"` // bin start, from started_at
	Sealed    int     `json:"sealed"`
	// MaxRequired and MaxSurviving are the slowest protection times of the bin's envelopes;
	// -1 when one of them was never protected.
	MaxRequired  float64 `json:"max_required_seconds"`
	MaxSurviving float64 `json:"max_surviving_seconds"`
}

// GamedaySample is the state at the end of one check round.
type GamedaySample struct {
	AtSeconds float64 `json:"at_seconds"` // from started_at
	Sealed    int     `json:"sealed"`
	// Unprotected: sealed envelopes not yet open in every required region alone;
	// UnprotectedSurviving: not yet open in every surviving region alone.
	Unprotected          int `json:"unprotected"`
	UnprotectedSurviving int `json:"unprotected_surviving"`
}

// GamedayRegion is one row of the matrix.
type GamedayRegion struct {
	Region string `json:"region"`
	Lost   bool   `json:"lost"`
	Opened int    `json:"opened_alone"`
	Of     int    `json:"of"`
}

type gdEnvelope struct {
	id       string
	rec      *envelope.Record // header fields for the checks (ID, context, commitment)
	sealedAt time.Time
	during   bool
	// per region: the end of the check that first opened it alone, and the start of the last
	// check before that which did not (the polling resolution)
	opened   map[string]time.Time
	lastMiss map[string]time.Time
	// survived: open in every surviving region alone; protected: in every required region
	survived, protected time.Time
	gap                 time.Duration // lastMiss to opened, for the region that completed protection
}

// gameday is one run's state.
type gameday struct {
	o      GamedayOptions
	cfg    *config.Config
	topo   *regions.Topology
	keys   *regions.Failover
	checks map[string]*regionCheck
	rep    *GamedayReport
	logf   func(string, ...any)

	mu   sync.Mutex // guards envs, keep, rep's seal counters, down, timeline
	envs []*gdEnvelope
	keep map[bool]*kept
	down bool // the lost region is down now: not checked
	rule replicate.AckRule
}

// Gameday keeps sealing while a region is lost and measures RPO, RTO, catch-up and each
// envelope's protection time. The daemons of the deployment must be running in every region
// (envdr run --region R); the game day is a producer and an auditor, never a replicator.
func Gameday(ctx context.Context, cfg *config.Config, o GamedayOptions) (*GamedayReport, error) {
	g, err := newGameday(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	o = g.o
	stopChecks := g.checkContinuously(ctx)
	err = g.seal(ctx, o.Before, g.share(false), false)
	if err == nil {
		err = g.lose(ctx)
	}
	if err == nil {
		err = g.seal(ctx, o.During, g.share(true), true)
	}
	if err == nil {
		g.awaitSurviving(ctx)
		g.openWithoutRegion(ctx)
		err = g.restore(ctx)
	}
	stopChecks()
	if err != nil {
		return nil, err
	}
	g.finish()
	return g.rep, nil
}

func newGameday(ctx context.Context, cfg *config.Config, o GamedayOptions) (*gameday, error) {
	if _, ok := cfg.Region(o.Lose); !ok {
		return nil, fmt.Errorf("region %s: %w (configured: %v)", o.Lose, regions.ErrNotConfigured, cfg.RegionNames())
	}
	if o.Rate <= 0 {
		o.Rate = 2
	}
	if o.Before <= 0 {
		o.Before = 5 * time.Second
	}
	if o.During <= 0 {
		o.During = 20 * time.Second
	}
	if o.Envelopes > 0 {
		o.Rate = float64(o.Envelopes) / (o.Before + o.During).Seconds()
	}
	if o.Within <= 0 {
		o.Within = 2 * time.Minute
	}
	if o.SealTimeout <= 0 {
		o.SealTimeout = 5 * time.Second
	}
	g := &gameday{o: o, cfg: cfg, checks: map[string]*regionCheck{}, keep: map[bool]*kept{}, rule: replicate.AckRuleFromConfig(cfg)}
	g.logf = func(format string, a ...any) {
		if o.Log != nil {
			o.Log(fmt.Sprintf(format, a...))
		}
	}
	ro := o.Regions
	if o.Control == nil {
		ro.Exclude = append(ro.Exclude, o.Lose) // blocked by the operator: never contacted
	}
	topo, err := regions.New(ctx, cfg, ro)
	if err != nil {
		return nil, err
	}
	g.topo = topo
	rep := &GamedayReport{Kind: GamedayReportKind, SchemaVersion: ReportSchemaVersion, Envdr: o.Envdr, Lost: o.Lose,
		SealedIn: map[string]int{}, StartedAt: time.Now().UTC(), RTOSeconds: -1, CatchUpSeconds: -1,
		Controlled: o.Control != nil, RateAsked: o.Rate, Config: configUsed(cfg), OpenedWithoutRegion: []GamedayOpen{}}
	rep.Host, _ = os.Hostname()
	for _, n := range topo.Names() {
		r, _ := topo.Region(n)
		g.checks[n] = &regionCheck{r: r, store: replicate.NewStore(cfg.Table, n, r.DynamoDB(), cfg.RegionNames()), tally: newTally()}
		if n != o.Lose {
			rep.Surviving = append(rep.Surviving, n)
		}
	}
	if len(rep.Surviving) == 0 {
		return nil, fmt.Errorf("--lose %s: no region would survive; configure at least two regions", o.Lose)
	}
	// Who runs the game day, through the first surviving region's STS: a failure is recorded.
	first, _ := topo.Region(rep.Surviving[0])
	rep.Caller = callerIdentity(ctx, first)
	var order []string
	for _, n := range cfg.SealOrder() {
		if _, err := topo.Region(n); err == nil {
			order = append(order, n)
		}
	}
	g.keys = &regions.Failover{Topology: topo, Order: order, Timeout: o.SealTimeout}
	g.rep = rep
	return g, nil
}

// share is how many envelopes a phase seals when Envelopes is set (0: by time alone).
func (g *gameday) share(during bool) int {
	if g.o.Envelopes <= 0 {
		return 0
	}
	before := int(math.Round(float64(g.o.Envelopes) * g.o.Before.Seconds() / (g.o.Before + g.o.During).Seconds()))
	if during {
		return g.o.Envelopes - before
	}
	return before
}

// sealOne seals a random 1 KiB envelope through the fall-over and enqueues its event. Its seal
// time is taken when the sealed envelope exists, before the event is sent.
func (g *gameday) sealOne(ctx context.Context, during bool) {
	rep := g.rep
	pt := make([]byte, 1024)
	_, _ = rand.Read(pt)
	var sealed bytes.Buffer
	hdr, err := envelope.Seal(ctx, &sealed, bytes.NewReader(pt), g.keys, envelope.SealOptions{Context: map[string]string{"gameday": rep.StartedAt.Format("20060102T150405Z")}})
	envelope.Wipe(pt)
	sealedAt := time.Now()
	if err != nil {
		g.mu.Lock()
		rep.SealFailures++
		g.mu.Unlock()
		g.logf("seal failed: %v", err)
		return
	}
	var qerr error
	object := false
	if rc, _ := g.cfg.Region(hdr.HomeRegion); during && g.o.Objects && rc.Bucket != "" {
		// No enqueue: the bucket's notification is the only event.
		var r *regions.Region
		if r, qerr = g.topo.Region(hdr.HomeRegion); qerr == nil {
			key := "envdr-gameday/" + rep.StartedAt.Format("20060102T150405Z") + "/" + hdr.RecordID() + ".envdr"
			qerr = r.Upload(ctx, rc.Bucket, key, bytes.NewReader(sealed.Bytes()), regions.UploadOptions{})
		}
		object = qerr == nil
	} else {
		_, qerr = replicate.Enqueue(ctx, g.topo, hdr, "", func(string) {})
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if object {
		rep.ObjectsDuring++
	}
	if qerr != nil {
		rep.EnqueueFails++
		g.logf("record %s: enqueue failed: %v", hdr.RecordID(), qerr)
	}
	rec := &envelope.Record{ID: hdr.RecordID(), Context: hdr.Context, Commitment: hdr.Commitment}
	g.envs = append(g.envs, &gdEnvelope{id: rec.ID, rec: rec, sealedAt: sealedAt, during: during,
		opened: map[string]time.Time{}, lastMiss: map[string]time.Time{}})
	if g.keep[during] == nil {
		// The first envelope sealed before the loss and the first during it are kept whole,
		// for the open-without---region step (o.Open).
		g.keep[during] = &kept{id: hdr.RecordID(), region: hdr.HomeRegion, file: sealed.Bytes()}
	}
	rep.Sealed++
	rep.SealedIn[hdr.HomeRegion]++
	if during {
		rep.SealedDuring++
	} else {
		rep.SealedBefore++
	}
}

// sealInFlight bounds the seals under way at once: at a high rate one seal (a KMS call and one
// or two SQS sends) takes longer than the tick.
const sealInFlight = 32

// seal seals at the rate for d, or, with quota > 0, until quota envelopes were sealed.
func (g *gameday) seal(ctx context.Context, d time.Duration, quota int, during bool) error {
	if g.o.Envelopes > 0 && quota == 0 {
		return nil
	}
	g.logf("sealing %.1f/s for %s (%s)", g.o.Rate, d, map[bool]string{false: "before the loss", true: "during the loss"}[during])
	tick := time.NewTicker(time.Duration(float64(time.Second) / g.o.Rate))
	defer tick.Stop()
	sem := make(chan struct{}, sealInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	end := time.Now().Add(d)
	for n := 0; quota > 0 && n < quota || quota == 0 && time.Now().Before(end); n++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			g.sealOne(ctx, during)
		}()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

func (g *gameday) lose(ctx context.Context) error {
	if g.o.Control != nil {
		if err := g.o.Control.Down(ctx, g.o.Lose); err != nil {
			return fmt.Errorf("lose %s: %w", g.o.Lose, err)
		}
	}
	g.mu.Lock()
	g.down = true
	g.rep.LostAt = time.Now().UTC()
	g.mu.Unlock()
	g.logf("%s lost; sealing on for %s", g.o.Lose, g.o.During)
	return nil
}

func (g *gameday) restore(ctx context.Context) error {
	if g.o.Control == nil {
		return nil
	}
	if err := g.o.Control.Up(ctx, g.o.Lose); err != nil {
		return fmt.Errorf("restore %s: %w", g.o.Lose, err)
	}
	g.mu.Lock()
	g.down = false
	g.rep.RestoredAt = time.Now().UTC()
	g.mu.Unlock()
	g.logf("%s restored; waiting for it to catch up", g.o.Lose)
	deadline := time.Now().Add(g.o.Within)
	for g.missing([]string{g.o.Lose}) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	if left := g.missing([]string{g.o.Lose}); left == 0 {
		g.rep.CatchUpSeconds = max(g.lastOpened(g.o.Lose).Sub(g.rep.RestoredAt), 0).Seconds()
	} else {
		g.rep.NotCaughtUp = left
	}
	return nil
}

// awaitSurviving waits, after the sealing stopped, until every envelope is open in every
// surviving region alone, or Within passed; what is not then is the RPO.
func (g *gameday) awaitSurviving(ctx context.Context) {
	deadline := time.Now().Add(g.o.Within)
	for g.missing(g.rep.Surviving) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	rep := g.rep
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range g.envs {
		if e.survived.IsZero() {
			rep.Unprotected = append(rep.Unprotected, e.id)
			continue
		}
		if e.during {
			if rto := e.survived.Sub(rep.LostAt).Seconds(); rep.RTOSeconds < 0 || rto < rep.RTOSeconds {
				rep.RTOSeconds = rto
			}
			rep.MaxProtectSeconds = max(rep.MaxProtectSeconds, e.survived.Sub(e.sealedAt).Seconds())
		}
	}
	sort.Strings(rep.Unprotected)
	rep.RPOEnvelopes = len(rep.Unprotected)
	g.logf("outage measured: RPO %d envelopes, RTO %.1fs", rep.RPOEnvelopes, rep.RTOSeconds)
}

// missing counts the envelopes not yet open alone in one of the regions.
func (g *gameday) missing(in []string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, e := range g.envs {
		for _, r := range in {
			if _, ok := e.opened[r]; !ok {
				n++
				break
			}
		}
	}
	return n
}

// lastOpened is when the last envelope opened in region r.
func (g *gameday) lastOpened(r string) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	var last time.Time
	for _, e := range g.envs {
		if t := e.opened[r]; t.After(last) {
			last = t
		}
	}
	return last
}

// checkInFlight bounds the checks (a read of the region's own table, then a Decrypt) at once.
const checkInFlight = 32

// checkContinuously checks, round after round from the first seal to the end, every envelope
// in every region not yet known to open it alone (the lost region only while it is up), and
// samples the timeline after each round. It returns the function that stops it.
func (g *gameday) checkContinuously(ctx context.Context) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			start := time.Now()
			g.checkRound(ctx)
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-time.After(max(250*time.Millisecond-time.Since(start), 20*time.Millisecond)):
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		g.checkRound(ctx) // the state at the very end
	}
}

func (g *gameday) checkRound(ctx context.Context) {
	g.mu.Lock()
	list := slices.Clone(g.envs)
	var in []string
	for _, n := range g.topo.Names() {
		if n != g.o.Lose || !g.down && g.o.Control != nil {
			in = append(in, n)
		}
	}
	type pair struct {
		e *gdEnvelope
		r string
	}
	var todo []pair
	for _, e := range list {
		for _, r := range in {
			if _, ok := e.opened[r]; !ok {
				todo = append(todo, pair{e, r})
			}
		}
	}
	g.mu.Unlock()
	sem := make(chan struct{}, checkInFlight)
	var wg sync.WaitGroup
	for _, p := range todo {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			start := time.Now()
			_, outcome, _ := g.checks[p.r].check(ctx, p.e.rec, false)
			end := time.Now()
			g.mu.Lock()
			defer g.mu.Unlock()
			if outcome == OutcomeOK {
				p.e.opened[p.r] = end
			} else {
				p.e.lastMiss[p.r] = start
			}
		}()
	}
	wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	s := GamedaySample{AtSeconds: time.Since(g.rep.StartedAt).Seconds(), Sealed: len(list)}
	for _, e := range list {
		g.settle(e)
		if e.protected.IsZero() {
			s.Unprotected++
		}
		if e.survived.IsZero() {
			s.UnprotectedSurviving++
		}
	}
	g.rep.Timeline = append(g.rep.Timeline, s)
}

// settle sets an envelope's survived and protected moments once its openings allow (g.mu held).
func (g *gameday) settle(e *gdEnvelope) {
	if e.survived.IsZero() {
		if t, ok := allOpened(e, g.rep.Surviving); ok {
			e.survived = t
		}
	}
	if e.protected.IsZero() {
		if t, last, ok := g.policyMet(e); ok {
			e.protected = t
			// The true moment lies after the last check that missed, after the seal, and, in
			// the lost region, after its return: it could not open there while it was down.
			miss := maxTime(e.lastMiss[last], e.sealedAt)
			if last == g.o.Lose && !g.rep.RestoredAt.IsZero() && t.After(g.rep.RestoredAt) {
				miss = maxTime(miss, g.rep.RestoredAt)
			}
			e.gap = t.Sub(miss)
		}
	}
}

// allOpened: the moment e was open in every region of in (the latest opening), if it was.
func allOpened(e *gdEnvelope, in []string) (time.Time, bool) {
	var last time.Time
	for _, r := range in {
		t, ok := e.opened[r]
		if !ok {
			return time.Time{}, false
		}
		if t.After(last) {
			last = t
		}
	}
	return last, true
}

// policyMet applies the replication policy (replicate.AckRule: every required region, or a
// quorum of all) to the regions e opened in alone: the moment it was met and the region whose
// opening met it.
func (g *gameday) policyMet(e *gdEnvelope) (time.Time, string, bool) {
	type op struct {
		r string
		t time.Time
	}
	var ops []op
	for r, t := range e.opened {
		ops = append(ops, op{r, t})
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].t.Before(ops[j].t) })
	seen := map[string]bool{}
	for _, o := range ops {
		seen[o.r] = true
		all := len(g.rule.Required) > 0 || g.rule.Quorum == 0
		for _, r := range g.rule.Required {
			all = all && seen[r]
		}
		if all || g.rule.Quorum > 0 && len(seen) >= g.rule.Quorum {
			return o.t, o.r, true
		}
	}
	return time.Time{}, "", false
}

func (g *gameday) openWithoutRegion(ctx context.Context) {
	if g.o.Open == nil || g.o.Control == nil {
		return
	}
	for _, during := range []bool{false, true} {
		g.mu.Lock()
		k := g.keep[during]
		g.mu.Unlock()
		if k == nil {
			continue
		}
		res := GamedayOpen{ID: k.id, SealedIn: k.region, Skipped: []string{}}
		served, skipped, err := g.o.Open(ctx, k.file)
		if err != nil {
			res.Error = err.Error()
			g.logf("open without --region, %s lost: record %s (sealed in %s) FAILED: %v", g.o.Lose, k.id, k.region, err)
		} else {
			res.Region, res.Skipped = served, append(res.Skipped, skipped...)
			g.logf("open without --region, %s lost: record %s (sealed in %s) opened through %s (skipped: %v)", g.o.Lose, k.id, k.region, served, skipped)
		}
		g.rep.OpenedWithoutRegion = append(g.rep.OpenedWithoutRegion, res)
	}
}

// finish computes the matrix, the protection figures and the verdict.
func (g *gameday) finish() {
	rep := g.rep
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, n := range g.cfg.RegionNames() {
		row := GamedayRegion{Region: n, Lost: n == g.o.Lose, Of: len(g.envs)}
		for _, e := range g.envs {
			if _, ok := e.opened[n]; ok {
				row.Opened++
			}
		}
		rep.Matrix = append(rep.Matrix, row)
	}
	rep.EndedAt = time.Now().UTC()
	var last time.Time
	for _, e := range g.envs {
		last = maxTime(last, e.sealedAt)
	}
	if span := last.Sub(rep.StartedAt).Seconds(); rep.Sealed > 1 && span > 0 {
		rep.RateAchieved = float64(rep.Sealed-1) / span // n seals, n-1 intervals
	}
	rep.Protection = g.protection()
	rep.Passed = rep.RPOEnvelopes == 0 && rep.SealFailures == 0 && rep.EnqueueFails == 0 && rep.RTOSeconds >= 0 &&
		(g.o.Control == nil || rep.NotCaughtUp == 0)
	for _, x := range rep.OpenedWithoutRegion {
		if x.Error != "" {
			rep.Passed = false
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// GamedayMethod names how a game day measures protection times (report protection.method).
const GamedayMethod = "observed by the game day: from the moment its seal returned (before the event was sent) to the end of the first check that opened the envelope alone in each region (the record read from that region's own table replica, its wrap decrypted by that region's KMS, the key commitment checked); one clock, the game day's; each time is an upper bound, at most resolution_max_seconds above the true moment"

func (g *gameday) protection() GamedayProtection {
	rep := g.rep
	p := GamedayProtection{Method: GamedayMethod, Required: g.rule.Required, Quorum: g.rule.Quorum}
	var req, surv, gaps []float64
	for _, e := range g.envs {
		if !e.protected.IsZero() {
			req = append(req, e.protected.Sub(e.sealedAt).Seconds())
			gaps = append(gaps, e.gap.Seconds())
		}
		if !e.survived.IsZero() {
			surv = append(surv, e.survived.Sub(e.sealedAt).Seconds())
		}
	}
	p.RequiredRegions = percentiles(req, len(g.envs))
	p.SurvivingRegions = percentiles(surv, len(g.envs))
	if len(gaps) > 0 {
		sort.Float64s(gaps)
		p.ResolutionMedianSeconds, p.ResolutionMaxSeconds = rank(gaps, 0.5), gaps[len(gaps)-1]
	}
	for _, le := range append(slices.Clone(replicate.ProtectionBuckets), 0) {
		p.Histogram = append(p.Histogram, HistogramBucket{LE: le})
	}
	bucket := func(v float64) int {
		i, _ := slices.BinarySearch(replicate.ProtectionBuckets, v)
		return i // len(ProtectionBuckets) is the +Inf bucket
	}
	for _, v := range req {
		p.Histogram[bucket(v)].Required++
	}
	for _, v := range surv {
		p.Histogram[bucket(v)].Surviving++
	}
	// Bins of whole seconds, at most 300 of them over the sealing.
	span := 0.0
	for _, e := range g.envs {
		span = max(span, e.sealedAt.Sub(rep.StartedAt).Seconds())
	}
	p.BinSeconds = max(1, math.Ceil(span/300))
	p.BySealTime = []GamedaySeal{}
	bins := map[int]*GamedaySeal{}
	for _, e := range g.envs {
		at := e.sealedAt.Sub(rep.StartedAt).Seconds()
		i := int(at / p.BinSeconds)
		b := bins[i]
		if b == nil {
			b = &GamedaySeal{AtSeconds: float64(i) * p.BinSeconds}
			bins[i] = b
		}
		b.Sealed++
		b.MaxRequired = binMax(b.MaxRequired, b.Sealed, e.protected, e.sealedAt)
		b.MaxSurviving = binMax(b.MaxSurviving, b.Sealed, e.survived, e.sealedAt)
	}
	for _, i := range sortedKeys(bins) {
		p.BySealTime = append(p.BySealTime, *bins[i])
	}
	return p
}

// binMax folds one envelope's protection time into its bin's maximum (-1: one never was).
func binMax(cur float64, n int, at, sealed time.Time) float64 {
	if at.IsZero() || n > 1 && cur < 0 {
		return -1
	}
	v := at.Sub(sealed).Seconds()
	if n == 1 {
		return v
	}
	return max(cur, v)
}

func sortedKeys(m map[int]*GamedaySeal) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys
}

// percentiles summarises the measured times of n envelopes by nearest rank.
func percentiles(v []float64, n int) Percentiles {
	p := Percentiles{Envelopes: len(v), Never: n - len(v)}
	if len(v) == 0 {
		return p
	}
	sort.Float64s(v)
	p.P50, p.P99, p.P999, p.P9999, p.Max = rank(v, 0.5), rank(v, 0.99), rank(v, 0.999), rank(v, 0.9999), v[len(v)-1]
	return p
}

// rank is the nearest-rank q-quantile of sorted v: the value at rank ceil(q·n).
func rank(v []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[min(max(i, 0), len(v)-1)]
}

// kept is an envelope the game day keeps whole to open it later.
type kept struct {
	id, region string
	file       []byte
}

//go:embed templates/gameday.md.tmpl
var gamedayMD string

//go:embed templates/gameday.html.tmpl
var gamedayHTML string

var gamedayFuncs = map[string]any{
	"secs": func(f float64) string {
		if f < 0 {
			return "—"
		}
		return fmt.Sprintf("%.1f s", f)
	},
	"s3": func(f float64) string { return fmt.Sprintf("%.3f s", f) },
	"verdict": func(ok bool) string {
		if ok {
			return "PASSED"
		}
		return "FAILED"
	},
	"join":  strings.Join,
	"when":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"mdesc": mdEscape,
	"le": func(f float64) string {
		if f == 0 {
			return "+Inf"
		}
		return fmtSecs(f)
	},
	"charts": gamedayCharts,
}

var (
	gamedayMDTmpl   = template.Must(template.New("md").Funcs(gamedayFuncs).Parse(gamedayMD))
	gamedayHTMLTmpl = htmltemplate.Must(htmltemplate.New("html").Funcs(gamedayFuncs).Parse(gamedayHTML))
)

// WriteMarkdown writes the report as Markdown.
func (r *GamedayReport) WriteMarkdown(w io.Writer) error { return gamedayMDTmpl.Execute(w, r) }

// WriteHTML writes the report as a self-contained HTML page with inline SVG charts.
func (r *GamedayReport) WriteHTML(w io.Writer) error { return gamedayHTMLTmpl.Execute(w, r) }

// JSON returns the report as indented JSON carrying its own SHA-256 digest, as drill reports
// do (digestedJSON), and sets r.SHA256.
func (r *GamedayReport) JSON() ([]byte, error) {
	r.SHA256 = ""
	return digestedJSON(r, &r.SHA256)
}

// WriteJSON writes the report's digested JSON (JSON).
func (r *GamedayReport) WriteJSON(w io.Writer) error {
	b, err := r.JSON()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// WriteFiles writes PATH.json, PATH.md and PATH.html (the JSON first: the others show its
// digest) and returns their paths.
func (r *GamedayReport) WriteFiles(path string) ([]string, error) {
	return writeReportFiles(path, r.WriteMarkdown, r.WriteHTML, r.WriteJSON)
}

// VerifyGamedayReport checks a game day report's JSON against the SHA-256 digest it carries
// (the drill reports' scheme) and returns the report. A report edited in any byte fails.
func VerifyGamedayReport(b []byte) (*GamedayReport, error) {
	want, err := checkDigest(b)
	if err != nil {
		return nil, err
	}
	var r GamedayReport
	if err := decodeStrict(b, &r); err != nil {
		return nil, fmt.Errorf("game day report: %w", err)
	}
	if r.SHA256 != want || r.Kind != GamedayReportKind {
		return nil, fmt.Errorf("%w: the digest member is not the report's own", ErrReportDigest)
	}
	if r.SchemaVersion != ReportSchemaVersion {
		return nil, fmt.Errorf("game day report: schema_version %d; this envdr reads %d", r.SchemaVersion, ReportSchemaVersion)
	}
	return &r, nil
}
