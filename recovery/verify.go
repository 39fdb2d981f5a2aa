package recovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// Region, when set, verifies this region alone: its table is scanned and no client for any
	// other region is built. Otherwise every configured region is checked, each reading the
	// record from its own table.
	Region string
	// ID, when set, verifies this one record instead of scanning.
	ID string
	// Segments is the number of parallel scan segments, Workers the records checked at once.
	Segments, Workers int
	// MaxFailures bounds the failure details kept (the rest are counted).
	MaxFailures int
	// NoWrite leaves verified_at untouched (read-only verification).
	NoWrite bool
	// RequireCurrent fails a wrap that opens but is not under its region's current key (the
	// configured key, an alias resolved now): the gate before an old key is retired.
	// RequireCurrentByDefault says when the CLI turns it on.
	RequireCurrent bool
	// StampBatch is the most items (one per region stamped) a batched write of verified_at and
	// last_error holds (default and maximum replicate.MaxTransactItems; 1 writes each record
	// on its own).
	StampBatch int
	// Progress, optional, is called with the number of records done.
	Progress func(n int)
	// Total, optional, is called once with the approximate number of records (progress bars).
	Total func(n int64)
	// Regions tunes the per-region clients (tests shorten retries).
	Regions regions.Options
	// Strict counts a lost region's records as failures. Otherwise (checking every region) a
	// region whose table replica does not answer within RegionTimeout is skipped, reported as
	// such, and not required: verify on the outage day checks what is left.
	Strict bool
	// RegionTimeout bounds each region's reachability probe (default DefaultRegionTimeout).
	RegionTimeout time.Duration
	// Sampling: a sharded scan or a statistical sample instead of one whole scan.
	Sampling
	// Envdr is the build that runs verify, recorded in the report.
	Envdr Build
}

// SampleReport is a statistical verify's or drill's sample and bounds.
type SampleReport struct {
	Method string `json:"method"`
	// Requested records; Drawn records read (fewer when the table holds fewer: then the run
	// covered the whole table and Exhaustive is set, and the bounds are exact fractions).
	Requested  int     `json:"requested"`
	Drawn      int64   `json:"drawn"`
	Exhaustive bool    `json:"exhaustive,omitempty"`
	Confidence float64 `json:"confidence"`
	MaxDefect  float64 `json:"max_defect,omitempty"`
	Seed       uint64  `json:"seed"`
	// Regions: per checked region, the records of the sample it could not open and the upper
	// bound on the fraction of the table it cannot open, at Confidence.
	Regions []RegionBound `json:"regions"`
	// WorstUpperBound is the largest bound of a required region.
	WorstUpperBound float64 `json:"worst_upper_bound"`
}

// RegionBound is one region's defects in a sample and the bound they give.
type RegionBound struct {
	Region     string  `json:"region"`
	Defects    int64   `json:"defects"`
	UpperBound float64 `json:"upper_bound"`
}

// sampleReport fills the bounds from the per-region tallies.
func sampleReport(opts Sampling, drawn int64, tallies []RegionTally, required map[string]bool) *SampleReport {
	sr := &SampleReport{Method: SampleMethod, Requested: opts.Sample, Drawn: drawn, Confidence: opts.Confidence,
		MaxDefect: opts.MaxDefect, Seed: opts.Seed, Exhaustive: drawn < int64(opts.Sample)}
	for _, t := range tallies {
		k := drawn - t.OK
		b := UpperBound(k, drawn, opts.Confidence)
		if sr.Exhaustive && drawn > 0 {
			b = float64(k) / float64(drawn)
		}
		sr.Regions = append(sr.Regions, RegionBound{Region: t.Region, Defects: k, UpperBound: b})
		if required[t.Region] || len(required) == 0 {
			sr.WorstUpperBound = max(sr.WorstUpperBound, b)
		}
	}
	return sr
}

// VerifyReport is what Verify found. A record fails when a required region cannot open it alone.
type VerifyReport struct {
	// SchemaVersion and Kind ("verify") identify the report's JSON layout; Envdr the build.
	SchemaVersion   int       `json:"schema_version"`
	Kind            string    `json:"kind"`
	Envdr           Build     `json:"envdr"`
	StartedAt       time.Time `json:"started_at"`
	DurationSeconds float64   `json:"duration_seconds"`
	Table           string    `json:"table"`
	ScanRegion      string    `json:"scan_region"`
	Regions         []string  `json:"regions"`
	Required        []string  `json:"required"`
	Quorum          int       `json:"quorum,omitempty"`
	// RequireCurrent: wraps under a key other than the region's current key failed.
	RequireCurrent bool  `json:"require_current"`
	Records        int64 `json:"records"`
	OK             int64 `json:"ok"`
	Failed         int64 `json:"failed"`
	Unreadable     int64 `json:"unreadable"`
	Updated        int64 `json:"verified_at_updated"`
	// StampWrites are the batched writes (transactions) that wrote the Updated records' stamps,
	// StampItems the items they wrote; StampFallbacks the records written on their own because
	// they changed between the scan and the batch (a concurrent writer) or the batch failed.
	StampWrites     int64         `json:"stamp_writes"`
	StampItems      int64         `json:"stamp_items"`
	StampFallbacks  int64         `json:"stamp_fallbacks"`
	RecordsPerSec   float64       `json:"records_per_second"`
	PerRegion       []RegionTally `json:"per_region"`
	Failures        []Failure     `json:"failures"`
	FailuresOmitted int64         `json:"failures_omitted"`
	// Interrupted is set when the run was cancelled before the scan finished.
	Interrupted bool `json:"interrupted,omitempty"`
	// Skipped are the regions left out because they did not answer (not with Strict); they are
	// neither checked nor required. Strict says whether they would have failed the run.
	Skipped []SkippedRegion `json:"skipped"`
	Strict  bool            `json:"strict"`
	// Shard is this run's part of a sharded scan ("i/N"); empty for a whole scan.
	Shard string `json:"shard,omitempty"`
	// Sample, for a statistical verify: the sample, the method and the bounds.
	Sample *SampleReport `json:"sample,omitempty"`
	// MergedFrom, for a report merged from shards (envdr report merge), names each shard's
	// report by its shard and digest.
	MergedFrom []MergedShard `json:"merged_from,omitempty"`
	// SHA256 is the hex SHA-256 of the report's JSON with this value left empty (as
	// DrillReport.SHA256); set when a report file is written, and the last member.
	SHA256 string `json:"sha256"`
}

// MergedShard is one shard report a merged report was made of.
type MergedShard struct {
	Shard  string `json:"shard"`
	SHA256 string `json:"sha256"`
}

// VerifyResult is verify's JSON result and report file: the verdict first, then the report.
type VerifyResult struct {
	Passed bool `json:"passed"`
	*VerifyReport
}

// NewVerifyResult is r with its verdict.
func NewVerifyResult(r *VerifyReport) *VerifyResult {
	return &VerifyResult{Passed: r.Passed(), VerifyReport: r}
}

// JSON is the result as indented JSON carrying its own SHA-256 digest (sets SHA256).
func (v *VerifyResult) JSON() ([]byte, error) {
	v.SHA256 = ""
	return digestedJSON(v, &v.SHA256)
}

// Passed reports whether every record opened in every required region; for a statistical
// verify with a max defect, whether every required region's bound is at most the max defect.
func (r *VerifyReport) Passed() bool {
	if r.Unreadable > 0 || r.Interrupted {
		return false
	}
	if r.Sample != nil && r.Sample.MaxDefect > 0 {
		return r.Sample.WorstUpperBound <= r.Sample.MaxDefect
	}
	return r.Failed == 0
}

// Verify scans the records and proves, for each, that each checked region can decrypt its wrap
// on its own (commitment checked), updating verified_at per region that opened it; with
// RequireCurrent it also fails wraps that are not under the region's current key.
func Verify(ctx context.Context, cfg *config.Config, opts VerifyOptions) (*VerifyReport, error) {
	names := cfg.RegionNames()
	var exclude []string
	if opts.Region != "" {
		if _, ok := cfg.Region(opts.Region); !ok {
			return nil, fmt.Errorf("region %s: %w (configured: %v)", opts.Region, regions.ErrNotConfigured, names)
		}
		names = []string{opts.Region}
		for _, n := range cfg.RegionNames() {
			if n != opts.Region {
				exclude = append(exclude, n)
			}
		}
	}
	ro := opts.Regions
	ro.Exclude = exclude
	topo, err := regions.New(ctx, cfg, ro)
	if err != nil {
		return nil, err
	}
	scanRegion := cfg.HomeRegion
	if opts.Region != "" {
		scanRegion = opts.Region
	}
	skipped, names, scanRegion, err := verifySkips(ctx, cfg, topo, opts, names, scanRegion)
	if err != nil {
		return nil, err
	}
	rep := &VerifyReport{SchemaVersion: ReportSchemaVersion, Kind: "verify", Envdr: opts.Envdr,
		StartedAt: time.Now().UTC(), Table: cfg.Table, ScanRegion: scanRegion, Regions: names,
		Skipped: skipped, Strict: opts.Strict}
	required := map[string]bool{}
	if opts.Region != "" {
		required[opts.Region] = true
	} else {
		for _, r := range cfg.Policy.Required {
			if slices.Contains(names, r) {
				required[r] = true
			}
		}
		rep.Quorum = cfg.Policy.Quorum
	}
	for _, n := range names {
		if required[n] {
			rep.Required = append(rep.Required, n)
		}
	}
	checks := map[string]*regionCheck{}
	for _, n := range names {
		r, err := topo.Region(n)
		if err != nil {
			return nil, err
		}
		// Another region's check reads the record's header and that region's own item only
		// (2 items instead of 1 + regions): the other regions' wraps in its table prove
		// nothing about it. The scanned region's store reads whole records: its scan hands
		// every region's check the record, and its stamps write through it.
		names := cfg.RegionNames()
		if n != scanRegion {
			names = []string{n}
		}
		checks[n] = &regionCheck{r: r, store: replicate.NewStore(cfg.Table, n, r.DynamoDB(), names), tally: newTally()}
		if opts.RequireCurrent {
			if checks[n].current, err = currentKey(ctx, r); err != nil {
				return nil, err
			}
		}
	}
	rep.RequireCurrent = opts.RequireCurrent
	scan := checks[scanRegion]
	fails := newFailures(opts.MaxFailures)
	var records, okN, failedN, unreadable, updated atomic.Int64
	now := time.Now
	stamps := &stamper{store: scan.store, items: opts.StampBatch, done: func(u replicate.BatchUpdate, r replicate.BatchResult) {
		switch {
		case r.Err == nil && r.Wrote:
			updated.Add(1)
		case r.Err != nil && ctx.Err() == nil:
			fails.add(Failure{ID: u.ID, Region: scanRegion, Outcome: "write_failed", Reason: trimErr(r.Err)})
		}
	}}
	if stamps.items < 1 {
		stamps.items = replicate.MaxTransactItems
	}
	stamps.writers = make(chan struct{}, stampWriters(opts.Workers))

	handle := func(ctx context.Context, rec *envelope.Record) {
		if ctx.Err() != nil {
			return // interrupted: neither passed nor failed
		}
		records.Add(1)
		type result struct {
			rec     *envelope.Record
			outcome string
			err     error
		}
		// The regions are checked at once: each through its own endpoints, so a record's time
		// is its slowest region's round trips, not their sum (from one region, the others are a
		// cross-region round trip away).
		out := make([]result, len(names))
		var wg sync.WaitGroup
		for i, n := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				own, outcome, err := checks[n].check(ctx, rec, n == scanRegion)
				out[i] = result{own, outcome, err}
			}()
		}
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
		res := map[string]result{}
		good := 0
		for i, n := range names {
			x := out[i]
			checks[n].tally.count(x.outcome)
			res[n] = x
			if x.outcome == OutcomeOK {
				good++
			} else if required[n] || len(required) == 0 {
				fails.add(Failure{ID: rec.ID, Region: n, Outcome: x.outcome, Reason: trimErr(x.err)})
			}
		}
		pass := true
		for n := range required {
			if res[n].outcome != OutcomeOK {
				pass = false
			}
		}
		if len(required) == 0 && rep.Quorum > 0 && good < rep.Quorum {
			pass = false
		}
		if pass {
			okN.Add(1)
		} else {
			failedN.Add(1)
		}
		if opts.NoWrite {
			return
		}
		// verified_at for each region that opened the record, through the scanned region's
		// table, batched with other records' (stamper). A wrap that changed meanwhile (rewrap)
		// is left alone: only the wrap checked is marked. Failures are reported, never written:
		// a failure stamp would rewrite the region's item with the wrap it read, which last
		// writer wins could bring back over a newer wrap (docs/FORMAT.md §6.1, I3).
		checked := map[string]stampCheck{}
		for n, x := range res {
			if x.rec != nil && x.rec.Regions[n].HasWrap() && (x.outcome == OutcomeOK || x.outcome == OutcomeNotCurrent) {
				checked[n] = stampCheck{wrap: x.rec.Regions[n]}
			}
		}
		if len(checked) == 0 {
			return
		}
		stamps.add(ctx, replicate.BatchUpdate{ID: rec.ID, Cur: rec, Mutate: stampMutate(checked, now().UTC())}, len(checked))
	}

	start := time.Now()
	if opts.ID != "" {
		rec, err := scan.store.Get(ctx, opts.ID)
		if err != nil {
			return nil, err
		}
		handle(ctx, rec)
		if opts.Progress != nil {
			opts.Progress(1)
		}
	} else {
		if opts.Total != nil && opts.Sample <= 0 && opts.MaxDefect <= 0 {
			if n, err := ApproxRecords(ctx, scan.store, scan.r.DynamoDB(), len(cfg.RegionNames())); err == nil {
				opts.Total(n / int64(max(opts.Shard.Count, 1)))
			}
		}
		e := &engine{store: scan.store, segments: opts.Segments, workers: opts.Workers, pageSize: scanPageSize, handle: handle, progress: opts.Progress,
			bad: func(b replicate.BadItem) {
				unreadable.Add(1)
				fails.add(Failure{ID: b.ID, Region: scanRegion, Outcome: "unreadable", Reason: trimErr(b.Err)})
			}}
		if err := planScan(ctx, e, &opts.Sampling, scan, len(cfg.RegionNames())); err != nil {
			return nil, err
		}
		rep.Shard = opts.Shard.String()
		if opts.Total != nil && opts.Sample > 0 {
			opts.Total(int64(opts.Sample))
		}
		if err := e.run(ctx); err != nil {
			if ctx.Err() == nil || !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				return nil, err
			}
			rep.Interrupted = true
		}
	}
	stamps.flush(ctx)
	d := time.Since(start)
	st := stamps.snapshot()
	rep.StampWrites, rep.StampItems, rep.StampFallbacks = int64(st.Writes), int64(st.Items), int64(st.Fallbacks)
	rep.DurationSeconds = d.Seconds()
	rep.Records, rep.OK, rep.Failed, rep.Unreadable, rep.Updated = records.Load(), okN.Load(), failedN.Load(), unreadable.Load(), updated.Load()
	rep.RecordsPerSec = rate(rep.Records, d)
	for _, n := range names {
		rep.PerRegion = append(rep.PerRegion, checks[n].tally.snapshot(n))
	}
	rep.Failures, rep.FailuresOmitted = fails.list()
	if opts.Sample > 0 {
		rep.Sample = sampleReport(opts.Sampling, rep.Records, rep.PerRegion, required)
	}
	return rep, nil
}

// planScan sets which segments e reads: this shard's (opts.Shard), or, for a sample, random
// segments of the whole table until opts.Sample records (opts.Confidence and opts.MaxDefect give
// the size; the seed is drawn when zero and kept in opts for the report).
func planScan(ctx context.Context, e *engine, opts *Sampling, scan *regionCheck, regionCount int) error {
	if opts.MaxDefect > 0 {
		n, err := SampleSize(opts.Confidence, opts.MaxDefect)
		if err != nil {
			return err
		}
		opts.Sample = n
	}
	if opts.Sample <= 0 {
		if opts.Shard.Count > 1 {
			e.plan = shardPlan(max(e.segments, 1), opts.Shard)
		}
		return nil
	}
	if opts.Shard.Count > 1 {
		return errors.New("a sample (--sample, --confidence/--max-defect) is drawn from the whole table: it takes no --shard")
	}
	if opts.Confidence == 0 {
		opts.Confidence = DefaultConfidence
	}
	if opts.Seed == 0 {
		opts.Seed = rand.Uint64() | 1
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x5eed))
	records, err := probeRecords(ctx, scan.store, rng)
	if err != nil {
		return err
	}
	e.plan = samplePlan(records, rng)
	e.limit = int64(opts.Sample)
	// Segments of a sample are small: read many at once.
	e.segments = max(e.segments, sampleScanners)
	return nil
}

// DefaultConfidence is the confidence a --sample N report states its bound at.
const DefaultConfidence = 0.999

// sampleScanners is how many sample segments are read at once.
const sampleScanners = 32

// verifySkips finds, when every region is checked and not Strict, the regions whose table
// replica does not answer: they are skipped (not checked, not required), and when the scan
// region is one of them the table is read in the first region of ReadOrder that answers.
func verifySkips(ctx context.Context, cfg *config.Config, topo *regions.Topology, opts VerifyOptions, names []string, scanRegion string) ([]SkippedRegion, []string, string, error) {
	skipped := []SkippedRegion{}
	if opts.Strict || opts.Region != "" {
		return skipped, names, scanRegion, nil
	}
	skipped = append(skipped, ProbeAll(ctx, cfg, topo, names, opts.RegionTimeout)...)
	if len(skipped) == 0 {
		return skipped, names, scanRegion, nil
	}
	lost := map[string]bool{}
	for _, s := range skipped {
		lost[s.Region] = true
	}
	var left []string
	for _, n := range names {
		if !lost[n] {
			left = append(left, n)
		}
	}
	if len(left) == 0 {
		return nil, nil, "", fmt.Errorf("%w: no region answered: %v", regions.ErrRegionUnavailable, skipped)
	}
	if lost[scanRegion] {
		for _, n := range ReadOrder(cfg) {
			if !lost[n] && slices.Contains(left, n) {
				scanRegion = n
				break
			}
		}
	}
	return skipped, left, scanRegion, nil
}

// stampCheck is a region's wrap that verify decrypted and checked against the commitment.
type stampCheck struct {
	wrap *envelope.RegionWrap
}

// stampMutate returns the update that marks, at t, each checked region's wrap verified (clearing
// a legacy last_error). A wrap no longer the one checked (rewrap, a repair) is left alone, so
// the item keeps holding a checked wrap (I3). It writes nothing when nothing changes.
func stampMutate(checked map[string]stampCheck, t time.Time) func(cur *envelope.Record) (*envelope.Record, error) {
	return func(cur *envelope.Record) (*envelope.Record, error) {
		if cur == nil {
			return nil, nil
		}
		next := cur.Clone()
		changed := false
		for n, c := range checked {
			cw := next.Regions[n]
			if cw == nil || cw.KeyARN != c.wrap.KeyARN || !bytes.Equal(cw.Wrapped, c.wrap.Wrapped) {
				continue
			}
			if t.After(cw.VerifiedAt) {
				cw.VerifiedAt, changed = t, true
			}
			if cw.LastError != "" {
				cw.LastError, cw.LastErrorAt, changed = "", t, true
			}
		}
		if !changed {
			return nil, nil
		}
		return next, nil
	}
}
