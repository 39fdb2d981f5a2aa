package recovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// DrillOptions tune Drill.
type DrillOptions struct {
	// Lose is the region to behave as if it were gone: no client is built for it, and any
	// request to its endpoints is refused and reported.
	Lose string
	// AllSurviving requires every surviving region to open every record (default: at least one).
	AllSurviving bool
	// Open lists envelope files to open end to end through a surviving region.
	Open []string
	// ScanRegion is the surviving region whose table is read (default: the home region, or the
	// first surviving region when the home region is the one lost).
	ScanRegion string
	// Segments, Workers, MaxFailures, Progress, Total and Regions: as in VerifyOptions.
	Segments, Workers int
	MaxFailures       int
	Progress          func(n int)
	Total             func(n int64)
	Regions           regions.Options
	// Envdr is the build that runs the drill, recorded in the report (cmd/envdr passes its
	// version and commit).
	Envdr Build
	// MinRecoverable is the lowest recoverable_percent that passes (0 means 100: every record).
	MinRecoverable float64
	// MaxRPO, when > 0, fails the drill when the recovery point is older (rpo_seconds).
	MaxRPO time.Duration
	// Sampling: a sharded scan, or a statistical drill of a random sample whose report bounds
	// the fraction of the table the surviving regions cannot open.
	Sampling
	// Data, when not 0, opens objects of the S3 data path end to end from each surviving
	// region's bucket replica (regions[].bucket), through that region alone: DataAll for every
	// object, N > 0 for a uniform random sample of N (DataReport).
	Data int
}

// ReportSchemaVersion is the version of the drill report's JSON layout. 2 added schema_version,
// envdr, host, caller, rto_seconds, recovery_point.rpo_seconds, thresholds, checks and sha256.
const ReportSchemaVersion = 2

// Build identifies the envdr binary that ran a drill.
type Build struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
}

// Caller is who ran the drill: STS GetCallerIdentity through the scan region's endpoint.
type Caller struct {
	Account string `json:"account"`
	ARN     string `json:"arn"`
	UserID  string `json:"user_id"`
	// Region is the region whose STS endpoint answered; Error says why the identity is unknown.
	Region string `json:"region"`
	Error  string `json:"error,omitempty"`
}

// Thresholds are the pass/fail limits the drill was judged by (--min-recoverable, --max-rpo).
type Thresholds struct {
	MinRecoverablePercent float64 `json:"min_recoverable_percent"`
	// MaxRPOSeconds is nil when no limit was set.
	MaxRPOSeconds *float64 `json:"max_rpo_seconds"`
}

// DrillCheck is one pass/fail condition of the drill; the drill passes when every check passes.
type DrillCheck struct {
	Name   string  `json:"name"`
	Passed bool    `json:"passed"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	Detail string  `json:"detail"`
}

// DrillReport is the outcome of a drill; docs/DRILLS.md describes every field.
type DrillReport struct {
	SchemaVersion int    `json:"schema_version"`
	Envdr         Build  `json:"envdr"`
	Host          string `json:"host"`
	Caller        Caller `json:"caller"`

	StartedAt       time.Time `json:"started_at"`
	FinishedAt      time.Time `json:"finished_at"`
	DurationSeconds float64   `json:"duration_seconds"`
	// RTOSeconds is the recovery time measured: how long the surviving regions took, on their
	// own, to open every record and --open file (scan-and-decrypt plus file opening).
	RTOSeconds float64  `json:"rto_seconds"`
	Lost       string   `json:"lost_region"`
	Surviving  []string `json:"surviving_regions"`
	ScanRegion string   `json:"scan_region"`
	// Mode is "any-surviving" (a record is recoverable when one surviving region opens it) or
	// "all-surviving".
	Mode string `json:"mode"`

	Records       int64 `json:"records"`
	Recoverable   int64 `json:"recoverable"`
	Unrecoverable int64 `json:"unrecoverable"`
	// NoSurvivingWrap records have no wrap in any surviving region (their only wraps were in
	// the lost region, or nowhere yet); DecryptFailed records hold a surviving wrap that did
	// not open. Unrecoverable = NoSurvivingWrap + DecryptFailed.
	NoSurvivingWrap int64 `json:"no_surviving_wrap"`
	DecryptFailed   int64 `json:"decrypt_failed"`
	// NotReplicated records lack a wrap in some required region (the lost one included):
	// replication had not finished. They may still be recoverable through another region.
	NotReplicated int64 `json:"not_replicated"`
	// Replicated = Records - NotReplicated; ReplicatedRecoverable of them opened.
	Replicated            int64 `json:"replicated"`
	ReplicatedRecoverable int64 `json:"replicated_recoverable"`
	Unreadable            int64 `json:"unreadable"`
	// RecoverablePercent is over all records; ReplicatedRecoverablePercent over the replicated
	// records: the figure that proves the design (must be 100).
	RecoverablePercent           float64 `json:"recoverable_percent"`
	ReplicatedRecoverablePercent float64 `json:"replicated_recoverable_percent"`

	RecoveryPoint RecoveryPoint `json:"recovery_point"`
	Matrix        []MatrixRow   `json:"matrix"`
	// Failures lists every unrecoverable record (up to MaxFailures) with the reason.
	Failures        []Failure `json:"failures"`
	FailuresOmitted int64     `json:"failures_omitted"`
	// Pending lists the records not yet replicated (up to MaxFailures) and what they lack.
	Pending        []Pending    `json:"not_replicated_records"`
	PendingOmitted int64        `json:"not_replicated_omitted"`
	Files          []FileResult `json:"files"`
	Timings        Timings      `json:"timings"`
	Isolation      Isolation    `json:"isolation"`
	Config         ConfigUsed   `json:"config"`
	Interrupted    bool         `json:"interrupted,omitempty"`
	Thresholds     Thresholds   `json:"thresholds"`
	Checks         []DrillCheck `json:"checks"`
	Passed         bool         `json:"passed"`
	// Shard is this run's part of a sharded scan ("i/N"); empty for a whole scan.
	Shard string `json:"shard,omitempty"`
	// Sample, for a statistical drill: the sample, the method, and the bound on the fraction
	// of the table the surviving regions cannot open (one entry, region "surviving").
	Sample *SampleReport `json:"sample,omitempty"`
	// Data is the data check (--data N|all): objects opened from the surviving bucket
	// replicas, data RPO (objects missing from a replica) apart from key RPO (wraps missing).
	Data *DataReport `json:"data,omitempty"`
	// MergedFrom, for a report merged from shards (envdr report merge), names each shard's
	// report by its shard and digest.
	MergedFrom []MergedShard `json:"merged_from,omitempty"`
	// SHA256 is the hex SHA-256 of the JSON report with this value left empty (""): see
	// VerifyDrillReport. It is set when the JSON is written, and must stay the last field.
	SHA256 string `json:"sha256"`
}

// RecoveryPoint is the one definition of the recovery point used everywhere (docs/DRILLS.md):
// the replication work outstanding when the drill ran, which losing the region at that moment
// would put at risk: the events still queued (not yet handled by the daemon) plus the records
// lacking a wrap in some required region (not yet replicated). As a count: AtRisk; as a time:
// RPOSeconds, the age of the oldest of that work.
type RecoveryPoint struct {
	// QueuedEvents is nil when the queue is in the lost region and so cannot be counted.
	QueuedEvents  *int64 `json:"queued_events"`
	QueueNote     string `json:"queue_note,omitempty"`
	NotReplicated int64  `json:"not_replicated"`
	// AtRisk is QueuedEvents + NotReplicated (NotReplicated alone when the queue is lost). An
	// event still queued may belong to a record already counted as not replicated.
	AtRisk int64 `json:"at_risk"`
	// RPOSeconds is the age, at the drill's start, of the oldest record not yet replicated
	// (0 when none). SQS does not tell a queued event's age without receiving it, so when
	// events are queued (or cannot be counted) RPOSeconds is a lower bound: RPOLowerBound.
	RPOSeconds          float64    `json:"rpo_seconds"`
	RPOLowerBound       bool       `json:"rpo_lower_bound"`
	OldestNotReplicated *time.Time `json:"oldest_not_replicated_at,omitempty"`
}

// Pending is a record whose replication had not finished.
type Pending struct {
	ID string `json:"id"`
	// Missing lists the required regions without a wrap.
	Missing     []string `json:"missing"`
	Recoverable bool     `json:"recoverable"`
}

// MatrixRow is one region's row of the region × outcome matrix.
type MatrixRow struct {
	RegionTally
	Lost bool `json:"lost"`
	// WrapsHeld counts the records holding a wrap for this region (for the lost region: the
	// wraps that went with it, not checked).
	WrapsHeld int64 `json:"wraps_held"`
}

// FileResult is one envelope file opened end to end.
type FileResult struct {
	Path   string `json:"path"`
	ID     string `json:"id,omitempty"`
	OK     bool   `json:"ok"`
	Region string `json:"region,omitempty"`
	// Wrap is the wrap that opened it: "record" (the region's own, from its table) or
	// "header" (the envelope's own, when the recorded one was missing or bad).
	Wrap    string  `json:"wrap,omitempty"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// Timings of the drill's phases.
type Timings struct {
	ScanSeconds   float64 `json:"scan_seconds"`
	OpenSeconds   float64 `json:"open_seconds"`
	DataSeconds   float64 `json:"data_seconds,omitempty"`
	RecordsPerSec float64 `json:"records_per_second"`
}

// Isolation reports whether the drill kept away from the lost region.
type Isolation struct {
	// LostRegionRequests counts requests that tried to reach the lost region's endpoints (a bug:
	// the drill refuses them). Must be 0.
	LostRegionRequests int64    `json:"lost_region_requests"`
	RefusedHosts       []string `json:"refused_hosts,omitempty"`
}

// ConfigUsed is the configuration the drill ran with, without credentials.
type ConfigUsed struct {
	HomeRegion string         `json:"home_region"`
	Table      string         `json:"table"`
	QueueURL   string         `json:"queue_url"`
	Regions    []RegionConfig `json:"regions"`
	Required   []string       `json:"required"`
	Quorum     int            `json:"quorum,omitempty"`
	Verify     string         `json:"verify"`
}

// RegionConfig is one configured region as used by the drill.
type RegionConfig struct {
	Name      string           `json:"name"`
	Key       string           `json:"key"`
	Mode      string           `json:"mode"`
	KMSRate   float64          `json:"kms_rate"`
	Endpoints config.Endpoints `json:"endpoints,omitempty"`
}

func configUsed(cfg *config.Config) ConfigUsed {
	c := ConfigUsed{HomeRegion: cfg.HomeRegion, Table: cfg.Table, QueueURL: cfg.QueueURL,
		Required: cfg.Policy.Required, Quorum: cfg.Policy.Quorum, Verify: cfg.Policy.Verify}
	for _, r := range cfg.Regions {
		c.Regions = append(c.Regions, RegionConfig{Name: r.Name, Key: r.Key, Mode: r.Mode, KMSRate: r.KMSRate, Endpoints: r.Endpoints})
	}
	return c
}

// Drill behaves as if opts.Lose were gone and measures what the surviving regions recover.
func Drill(ctx context.Context, cfg *config.Config, opts DrillOptions) (*DrillReport, error) {
	if _, ok := cfg.Region(opts.Lose); !ok {
		return nil, fmt.Errorf("--lose %s: %w (configured: %v)", opts.Lose, regions.ErrNotConfigured, cfg.RegionNames())
	}
	var surviving []string
	for _, n := range cfg.RegionNames() {
		if n != opts.Lose {
			surviving = append(surviving, n)
		}
	}
	if len(surviving) == 0 {
		return nil, fmt.Errorf("--lose %s: no region would survive; configure at least two regions", opts.Lose)
	}
	scanRegion := opts.ScanRegion
	if scanRegion == "" {
		scanRegion = cfg.HomeRegion
		if scanRegion == opts.Lose {
			scanRegion = surviving[0]
		}
	}
	if scanRegion == opts.Lose {
		return nil, fmt.Errorf("--scan-region %s is the region the drill loses; pick a surviving one (%v)", scanRegion, surviving)
	}
	guard := newGuard(cfg, opts.Lose)
	ro := opts.Regions
	ro.Exclude = []string{opts.Lose}
	// The guard wraps the client the SDK built for each region, so AWS_CA_BUNDLE still applies
	// (the SDK adds a CA bundle only to its own buildable client).
	ro.WrapHTTPClient = guard.wrap
	topo, err := regions.New(ctx, cfg, ro)
	if err != nil {
		return nil, err
	}
	checks := map[string]*regionCheck{}
	for _, n := range surviving {
		r, err := topo.Region(n)
		if err != nil {
			return nil, err
		}
		checks[n] = &regionCheck{r: r, store: replicate.NewStore(cfg.Table, n, r.DynamoDB(), cfg.RegionNames()), tally: newTally()}
	}
	scan, ok := checks[scanRegion]
	if !ok {
		return nil, fmt.Errorf("--scan-region %s: %w (surviving: %v)", scanRegion, regions.ErrNotConfigured, surviving)
	}
	rep := &DrillReport{SchemaVersion: ReportSchemaVersion, Envdr: opts.Envdr, StartedAt: time.Now().UTC(),
		Lost: opts.Lose, Surviving: surviving, ScanRegion: scanRegion, Mode: "any-surviving", Config: configUsed(cfg)}
	rep.Host, _ = os.Hostname()
	rep.Caller = callerIdentity(ctx, scan.r)
	if opts.AllSurviving {
		rep.Mode = "all-surviving"
	}
	fails := newFailures(opts.MaxFailures)
	var pendMu sync.Mutex
	var pending []Pending
	var pendingOmitted int64
	maxPending := opts.MaxFailures
	if maxPending <= 0 {
		maxPending = DefaultMaxFailures
	}
	var records, recoverable, noSurviving, decryptFailed, notReplicated, replicatedOK, unreadable atomic.Int64
	var heldMu sync.Mutex
	held := map[string]int64{}
	var oldest time.Time // CreatedAt of the oldest record not yet replicated (under pendMu)
	requiredList := cfg.Policy.Required
	if len(requiredList) == 0 {
		requiredList = cfg.RegionNames()
	}

	var namedMu sync.Mutex
	named := map[string]namedObject{} // objects the records name (data_uri), for the data check
	handle := func(ctx context.Context, rec *envelope.Record) {
		if ctx.Err() != nil {
			return
		}
		if opts.Data != 0 {
			if key, ok := dataKey(cfg, rec.DataURI); ok {
				namedMu.Lock()
				named[key] = namedObject{id: rec.ID, created: rec.CreatedAt}
				namedMu.Unlock()
			}
		}
		heldMu.Lock()
		for n, w := range rec.Regions {
			if w.HasWrap() {
				held[n]++
			}
		}
		heldMu.Unlock()
		var missing []string
		for _, n := range requiredList {
			if !rec.Regions[n].HasWrap() {
				missing = append(missing, n)
			}
		}
		ok, reason, outcome := drillRecord(ctx, rec, checks, surviving, scanRegion, opts)
		if ctx.Err() != nil {
			return
		}
		records.Add(1)
		switch {
		case ok:
			recoverable.Add(1)
		case outcome == OutcomeNotReplicated:
			noSurviving.Add(1)
			fails.add(Failure{ID: rec.ID, Outcome: outcome, Reason: reason})
		default:
			decryptFailed.Add(1)
			fails.add(Failure{ID: rec.ID, Outcome: outcome, Reason: reason})
		}
		if len(missing) == 0 {
			if ok {
				replicatedOK.Add(1)
			}
			return
		}
		notReplicated.Add(1)
		pendMu.Lock()
		if !rec.CreatedAt.IsZero() && (oldest.IsZero() || rec.CreatedAt.Before(oldest)) {
			oldest = rec.CreatedAt
		}
		if len(pending) < maxPending {
			pending = append(pending, Pending{ID: rec.ID, Missing: missing, Recoverable: ok})
		} else {
			pendingOmitted++
		}
		pendMu.Unlock()
	}

	start := time.Now()
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
		return nil, fmt.Errorf("drill (lose %s): %w", opts.Lose, err)
	}
	rep.Shard = opts.Shard.String()
	if err := e.run(ctx); err != nil {
		if ctx.Err() == nil {
			return nil, fmt.Errorf("drill (lose %s): %w", opts.Lose, err)
		}
		rep.Interrupted = true
	}
	scanDur := time.Since(start)

	openStart := time.Now()
	for _, path := range opts.Open {
		rep.Files = append(rep.Files, openFile(ctx, cfg, checks, surviving, path))
	}
	openDur := time.Since(openStart)
	var dataDur time.Duration
	if opts.Data != 0 && ctx.Err() == nil {
		maxProblems := opts.MaxFailures
		if maxProblems <= 0 {
			maxProblems = DefaultMaxFailures
		}
		rep.Data = dataCheck(ctx, cfg, checks, surviving, opts.Data, named, maxProblems, rep.StartedAt)
		dataDur = time.Duration(rep.Data.Seconds * float64(time.Second))
	}

	// Recovery point: events still queued in the home region's queue, unless that is the region
	// lost (then its queue is gone with it and cannot be counted).
	rep.RecoveryPoint.NotReplicated = notReplicated.Load()
	rep.RecoveryPoint.AtRisk = rep.RecoveryPoint.NotReplicated
	switch {
	case cfg.QueueURL == "":
		rep.RecoveryPoint.QueueNote = "no queue_url configured"
	case cfg.HomeRegion == opts.Lose:
		rep.RecoveryPoint.QueueNote = "the queue is in the lost region " + opts.Lose + "; its events are lost with it and cannot be counted"
	default:
		home := checks[cfg.HomeRegion]
		n, err := replicate.QueueDepth(ctx, home.r.SQS(), cfg.QueueURL)
		if err != nil {
			rep.RecoveryPoint.QueueNote = "queue depth unavailable: " + trimErr(err)
		} else {
			q := int64(n)
			rep.RecoveryPoint.QueuedEvents = &q
			rep.RecoveryPoint.AtRisk += q
		}
	}

	rp := &rep.RecoveryPoint
	if !oldest.IsZero() {
		o := oldest.UTC()
		rp.OldestNotReplicated = &o
		rp.RPOSeconds = max(0, rep.StartedAt.Sub(o).Seconds())
	}
	rp.RPOLowerBound = rp.QueuedEvents == nil || *rp.QueuedEvents > 0

	rep.FinishedAt = time.Now().UTC()
	rep.DurationSeconds = rep.FinishedAt.Sub(rep.StartedAt).Seconds()
	rep.RTOSeconds = (scanDur + openDur + dataDur).Seconds()
	rep.Records, rep.Recoverable, rep.NotReplicated = records.Load(), recoverable.Load(), notReplicated.Load()
	rep.NoSurvivingWrap, rep.DecryptFailed, rep.Unreadable = noSurviving.Load(), decryptFailed.Load(), unreadable.Load()
	rep.Unrecoverable = rep.NoSurvivingWrap + rep.DecryptFailed
	rep.Replicated, rep.ReplicatedRecoverable = rep.Records-rep.NotReplicated, replicatedOK.Load()
	rep.RecoverablePercent = percent(rep.Recoverable, rep.Records)
	rep.ReplicatedRecoverablePercent = percent(rep.ReplicatedRecoverable, rep.Replicated)
	sort.Slice(pending, func(i, j int) bool { return pending[i].ID < pending[j].ID })
	rep.Pending, rep.PendingOmitted = pending, pendingOmitted
	if rep.Pending == nil {
		rep.Pending = []Pending{}
	}
	rep.Timings = Timings{ScanSeconds: scanDur.Seconds(), OpenSeconds: openDur.Seconds(), DataSeconds: dataDur.Seconds(), RecordsPerSec: rate(rep.Records, scanDur)}
	for _, n := range cfg.RegionNames() {
		row := MatrixRow{RegionTally: RegionTally{Region: n}, Lost: n == opts.Lose, WrapsHeld: held[n]}
		if c, ok := checks[n]; ok {
			row.RegionTally = c.tally.snapshot(n)
		}
		rep.Matrix = append(rep.Matrix, row)
	}
	rep.Failures, rep.FailuresOmitted = fails.list()
	rep.Isolation = guard.isolation()
	if opts.Sample > 0 {
		rep.Sample = sampleReport(opts.Sampling, rep.Records,
			[]RegionTally{{Region: "surviving", OK: rep.Recoverable}}, nil)
	}
	rep.judge(opts)
	return rep, nil
}

// callerIdentity asks r's STS who runs the drill; a failure is recorded, not fatal.
func callerIdentity(ctx context.Context, r *regions.Region) Caller {
	c := Caller{Region: r.Name}
	id, err := r.CallerIdentity(ctx)
	if err != nil {
		c.Error = trimErr(err)
		return c
	}
	c.Account, c.ARN, c.UserID = id.Account, id.ARN, id.UserID
	return c
}

// judge sets the thresholds, the checks and the verdict: the drill passes when every check does.
func (r *DrillReport) judge(opts DrillOptions) {
	minRec := opts.MinRecoverable
	if minRec <= 0 {
		minRec = 100
	}
	r.Thresholds = Thresholds{MinRecoverablePercent: minRec}
	files := int64(0)
	for _, f := range r.Files {
		if f.OK {
			files++
		}
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	r.Checks = []DrillCheck{
		{Name: "recoverable", Passed: r.RecoverablePercent >= minRec, Value: r.RecoverablePercent, Limit: minRec,
			Detail: fmt.Sprintf("%d of %d records recoverable (%.2f%%), at least %.2f%% required (--min-recoverable)", r.Recoverable, r.Records, r.RecoverablePercent, minRec)},
		{Name: "unreadable", Passed: r.Unreadable == 0, Value: float64(r.Unreadable), Limit: 0,
			Detail: fmt.Sprintf("%d table items could not be decoded", r.Unreadable)},
		{Name: "files", Passed: files == int64(len(r.Files)), Value: float64(files), Limit: float64(len(r.Files)),
			Detail: fmt.Sprintf("%d of %d --open files opened", files, len(r.Files))},
		{Name: "isolation", Passed: r.Isolation.LostRegionRequests == 0, Value: float64(r.Isolation.LostRegionRequests), Limit: 0,
			Detail: fmt.Sprintf("%d requests tried to reach the lost region %s", r.Isolation.LostRegionRequests, r.Lost)},
		{Name: "complete", Passed: !r.Interrupted, Value: b2f(!r.Interrupted), Limit: 1,
			Detail: "the scan ran to the end (not interrupted)"},
	}
	if sm := r.Sample; sm != nil && sm.MaxDefect > 0 {
		r.Checks = append(r.Checks, DrillCheck{Name: "sample", Passed: sm.WorstUpperBound <= sm.MaxDefect, Value: sm.WorstUpperBound, Limit: sm.MaxDefect,
			Detail: fmt.Sprintf("%d of %d sampled records unrecoverable: at %.4g%% confidence at most %.4g%% of the table is, at most %.4g%% allowed (--max-defect)",
				sm.Regions[0].Defects, sm.Drawn, 100*sm.Confidence, 100*sm.WorstUpperBound, 100*sm.MaxDefect)})
		// The sample's verdict replaces the whole-table percentage, which a sample cannot give.
		r.Checks[0].Passed = true
		r.Checks[0].Detail += "; judged by the sample's bound instead"
	}
	if d := r.Data; d != nil {
		envelopes := d.Checked - d.NotEnvelopes
		pct := percent(d.Recoverable, envelopes)
		r.Checks = append(r.Checks, DrillCheck{Name: "data", Passed: d.Failed == 0 && pct >= minRec, Value: pct, Limit: minRec,
			Detail: fmt.Sprintf("%d of %d envelope objects checked opened in a surviving region (%.2f%%, at least %.2f%% required), %d bytes; "+
				"%d missing from a replica (data RPO), %d without a wrap (key RPO), %d failed to open", d.Recoverable, envelopes, pct, minRec,
				d.BytesChecked, d.MissingObjects, d.MissingWraps, d.Failed)})
	}
	if opts.MaxRPO > 0 {
		lim := opts.MaxRPO.Seconds()
		r.Thresholds.MaxRPOSeconds = &lim
		d := fmt.Sprintf("recovery point %.0fs old, at most %.0fs allowed (--max-rpo)", r.RecoveryPoint.RPOSeconds, lim)
		if r.RecoveryPoint.RPOLowerBound {
			d += "; a lower bound: queued events' age is not counted"
		}
		r.Checks = append(r.Checks, DrillCheck{Name: "rpo", Passed: r.RecoveryPoint.RPOSeconds <= lim, Value: r.RecoveryPoint.RPOSeconds, Limit: lim, Detail: d})
	}
	r.Passed = true
	for _, c := range r.Checks {
		r.Passed = r.Passed && c.Passed
	}
}

// FailedChecks lists the checks that did not pass.
func (r *DrillReport) FailedChecks() []DrillCheck {
	var out []DrillCheck
	for _, c := range r.Checks {
		if !c.Passed {
			out = append(out, c)
		}
	}
	return out
}

// drillRecord proves rec opens in a surviving region (every one with AllSurviving). The scan
// region goes first: it checks the record it already read, with no extra table read.
func drillRecord(ctx context.Context, rec *envelope.Record, checks map[string]*regionCheck, surviving []string,
	scanRegion string, opts DrillOptions) (ok bool, reason, outcome string) {
	holders := 0
	for _, n := range surviving {
		if rec.Regions[n].HasWrap() {
			holders++
		}
	}
	if holders == 0 {
		for _, n := range surviving {
			checks[n].tally.count(OutcomeNoWrap)
		}
		why := "no region holds a wrap yet"
		if rec.Regions[opts.Lose].HasWrap() {
			why = "its only wrap is in the lost region " + opts.Lose
		}
		return false, "no surviving wrap: " + why, OutcomeNotReplicated
	}
	order := append([]string{scanRegion}, without(surviving, scanRegion)...)
	opened := 0
	var reasons []string
	for _, n := range order {
		c := checks[n]
		if !opts.AllSurviving && opened > 0 {
			c.tally.count(OutcomeSkipped)
			continue
		}
		if !opts.AllSurviving && !rec.Regions[n].HasWrap() {
			c.tally.count(OutcomeNoWrap)
			continue
		}
		_, outcome, used, err := c.checkWithFallback(ctx, rec, n == scanRegion)
		if ctx.Err() != nil {
			return false, "", ""
		}
		c.tally.count(outcome)
		if outcome == OutcomeOK {
			opened++
			if used != "" {
				reasons = append(reasons, fmt.Sprintf("%s: its own wrap is bad; opened with %s", n, used))
			}
			continue
		}
		reasons = append(reasons, fmt.Sprintf("%s: %s", n, trimErr(err)))
	}
	if opts.AllSurviving {
		return opened == len(surviving), strings.Join(reasons, "; "), OutcomeFailed
	}
	return opened > 0, strings.Join(reasons, "; "), OutcomeFailed
}

func percent(n, of int64) float64 {
	if of <= 0 {
		return 100
	}
	return 100 * float64(n) / float64(of)
}

func without(list []string, x string) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		if s != x {
			out = append(out, s)
		}
	}
	return out
}

// openFile opens an envelope end to end through the first surviving region that can: that
// region's wrap from its own table, else the header's wrap when the region is the envelope's
// home or holds a replica of the header's multi-Region key. The plaintext is discarded.
func openFile(ctx context.Context, cfg *config.Config, checks map[string]*regionCheck, surviving []string, path string) (res FileResult) {
	res.Path = path
	start := time.Now()
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	f, err := os.Open(path)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	hdr, err := envelope.ReadHeader(f)
	f.Close()
	if err != nil {
		res.Error = fmt.Sprintf("%s: %v", path, err)
		return res
	}
	res.ID = hdr.RecordID()
	var reasons []string
	for _, n := range surviving {
		c := checks[n]
		wraps, why := wrapsIn(ctx, cfg, c, hdr, res.ID, n)
		if len(wraps) == 0 {
			reasons = append(reasons, n+": "+why)
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		cw := &countingWriter{}
		var used *envelope.Wrap
		_, err = envelope.Open(ctx, cw, f, c.r, envelope.OpenOptions{Wrap: wraps[0], Fallbacks: wraps[1:],
			Used: func(w *envelope.Wrap, _ []error) { used = w }})
		f.Close()
		if err == nil {
			res.OK, res.Region, res.Bytes, res.Wrap = true, n, cw.n, used.Source
			return res
		}
		reasons = append(reasons, n+": "+trimErr(err))
	}
	res.Error = fmt.Sprintf("record %s: no surviving region opened it (%s)", res.ID, strings.Join(reasons, "; "))
	return res
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

var _ io.Writer = (*countingWriter)(nil)

// guard is the drill's HTTP client: it refuses, and counts, every request to the lost region's
// endpoints, so a code path that reaches for that region shows up in the report instead of
// silently working (or silently timing out) during a real outage.
type guard struct {
	lost  string
	hosts map[string]bool // the lost region's endpoint hosts no surviving region shares
	hits  atomic.Int64
	mu    sync.Mutex
	seen  map[string]bool
}

func newGuard(cfg *config.Config, lost string) *guard {
	g := &guard{lost: lost, hosts: map[string]bool{}, seen: map[string]bool{}}
	shared := map[string]bool{}
	for _, r := range cfg.Regions {
		for _, ep := range []string{r.Endpoints.KMS, r.Endpoints.SQS, r.Endpoints.DynamoDB, r.Endpoints.STS} {
			u, err := url.Parse(ep)
			if ep == "" || err != nil || u.Host == "" {
				continue
			}
			if r.Name == lost {
				g.hosts[u.Host] = true
			} else {
				shared[u.Host] = true
			}
		}
	}
	for h := range shared {
		delete(g.hosts, h)
	}
	return g
}

// ErrLostRegionContacted: the drill tried to reach the region it is meant to have lost.
var ErrLostRegionContacted = errors.New("drill: request to the lost region refused")

// wrap puts the guard in front of one region's HTTP client.
func (g *guard) wrap(next aws.HTTPClient) aws.HTTPClient { return guarded{g: g, next: next} }

type guarded struct {
	g    *guard
	next aws.HTTPClient
}

func (c guarded) Do(req *http.Request) (*http.Response, error) {
	if err := c.g.refuse(req); err != nil {
		return nil, err
	}
	return c.next.Do(req)
}

// refuse counts and refuses a request to the lost region.
func (g *guard) refuse(req *http.Request) error {
	host := req.URL.Host
	// AWS endpoints name the region (kms.eu-west-1.amazonaws.com); the stand-in's are ports.
	if g.hosts[host] || strings.Contains("."+req.URL.Hostname()+".", "."+g.lost+".") {
		g.hits.Add(1)
		g.mu.Lock()
		g.seen[host] = true
		g.mu.Unlock()
		return fmt.Errorf("%w: %s (%s)", ErrLostRegionContacted, g.lost, host)
	}
	return nil
}

func (g *guard) isolation() Isolation {
	g.mu.Lock()
	defer g.mu.Unlock()
	iso := Isolation{LostRegionRequests: g.hits.Load()}
	for h := range g.seen {
		iso.RefusedHosts = append(iso.RefusedHosts, h)
	}
	return iso
}
