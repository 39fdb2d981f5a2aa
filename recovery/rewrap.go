package recovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	ratelimit "golang.org/x/time/rate"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// RewrapOptions tune Rewrap.
type RewrapOptions struct {
	// Region whose wraps are re-made (required).
	Region string
	// ToKey is the target key (ARN or alias ARN in Region); default: the region's configured key.
	ToKey string
	// Since: wraps made before it are re-made. Default: the target key's latest rotation
	// (ListKeyRotations), so after a rotation every record moves to the new key material
	// exactly once; zero when the key never rotated (then only a key change or a missing wrap
	// triggers a rewrap).
	Since time.Time
	// DryRun counts what would change without any KMS call or write.
	DryRun bool
	// Checkpoint is the file that records each scan segment's progress, so an interrupted run
	// resumes where it stopped; empty: DefaultCheckpoint (one file per region and shard).
	Checkpoint string
	// Shard, when Count > 1, re-makes the wraps of this process's part of one scan split Count
	// ways (--shard i/N; every shard given the same Segments): N processes rewrap a region
	// together, each keeping its own checkpoint and resuming on its own.
	Shard Shard
	// Rate caps records rewrapped per second (0: only the region's KMS limiter, kms_rate).
	Rate float64
	// Segments, Workers, MaxFailures, Progress, Total, Regions: as in VerifyOptions.
	Segments, Workers int
	// PageSize is the records per scan page: the checkpoint's granularity (default 100).
	PageSize    int32
	MaxFailures int
	Progress    func(n int)
	Total       func(n int64)
	Regions     regions.Options
}

// RewrapReport counts what a rewrap run did.
type RewrapReport struct {
	Region          string    `json:"region"`
	Shard           string    `json:"shard,omitempty"`
	TargetKey       string    `json:"target_key"`
	Since           time.Time `json:"since,omitzero"`
	DryRun          bool      `json:"dry_run,omitempty"`
	Checkpoint      string    `json:"checkpoint,omitempty"`
	Resumed         bool      `json:"resumed,omitempty"`
	Interrupted     bool      `json:"interrupted,omitempty"`
	Records         int64     `json:"records"`
	Changed         int64     `json:"changed"`
	Unchanged       int64     `json:"unchanged"`
	Failed          int64     `json:"failed"`
	DurationSeconds float64   `json:"duration_seconds"`
	RecordsPerSec   float64   `json:"records_per_second"`
	Failures        []Failure `json:"failures"`
	FailuresOmitted int64     `json:"failures_omitted"`
}

// ErrCheckpointMismatch: the checkpoint file belongs to another rewrap.
var ErrCheckpointMismatch = errors.New("checkpoint belongs to another rewrap")

// DefaultCheckpoint is where a rewrap of region (shard s of it, when s.Count > 1) keeps its
// checkpoint: the user's state directory ($XDG_STATE_HOME/envdr, else ~/.local/state/envdr),
// else the working directory. Each shard has its own file, so N processes sharing a state
// directory never write each other's progress.
func DefaultCheckpoint(table, region string, s Shard) string {
	part := ""
	if s.Count > 1 {
		part = fmt.Sprintf("-shard-%d-of-%d", s.Index+1, s.Count)
	}
	name := fmt.Sprintf("rewrap-%s-%s%s.json", table, region, part)
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "envdr", name)
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".local", "state", "envdr", name)
	}
	return ".envdr-rewrap-" + region + part + ".json"
}

// checkpoint is the persisted progress of one rewrap. Its parameters (table, region, target,
// since) pin the run: a resumed run re-makes exactly the wraps the first one would have.
type checkpoint struct {
	Version   int       `json:"version"`
	Table     string    `json:"table"`
	Region    string    `json:"region"`
	TargetKey string    `json:"target_key"`
	Since     time.Time `json:"since"`
	// Shard is the --shard i/N the checkpoint belongs to ("" for a whole scan): a shard resumes
	// only its own segments.
	Shard     string         `json:"shard,omitempty"`
	StartedAt time.Time      `json:"started_at"`
	Segments  []segmentState `json:"segments"`
	// Changed counts the wraps re-made by every run of this rewrap so far (information only).
	Changed int64 `json:"changed"`

	path string
	mu   sync.Mutex
}

type segmentState struct {
	After string `json:"after,omitempty"`
	Done  bool   `json:"done,omitempty"`
}

func loadCheckpoint(path string) (*checkpoint, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	var c checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("checkpoint %s: not a rewrap checkpoint (%v); delete it to start over", path, err)
	}
	if c.Version != 1 || len(c.Segments) == 0 {
		return nil, fmt.Errorf("checkpoint %s: not a version 1 rewrap checkpoint with scan segments; delete it to start over", path)
	}
	c.path = path
	return &c, nil
}

// save writes the checkpoint atomically (temporary file, fsync, rename): a kill at any moment
// leaves either the previous or the new state, never half a file.
func (c *checkpoint) save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return fmt.Errorf("checkpoint %s: %w", c.path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), "."+filepath.Base(c.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", c.path, err)
	}
	// A failed write or fsync must not rename a possibly truncated checkpoint into place.
	if _, err = tmp.Write(b); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), c.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("checkpoint %s: %w", c.path, err)
	}
	return nil
}

// rewrapper re-makes one region's wraps.
type rewrapper struct {
	cfg    *config.Config
	topo   *regions.Topology
	r      *regions.Region
	target string // resolved key ARN
	since  time.Time
	home   *replicate.Store
}

// needs reports whether w must be re-made: missing (backfill), under another key, or made
// before the target key's current material (rotation). It is the whole "exactly once" rule: a
// wrap re-made by any run is under the target key and newer than since, so no later run, and no
// resumed run re-reading a page, touches it again.
func (x *rewrapper) needs(w *envelope.RegionWrap) bool {
	return !w.HasWrap() || w.KeyARN != x.target || w.WrappedAt.Before(x.since)
}

var errRaced = errors.New("the region's wrap changed while it was re-made")

// Rewrap re-makes opts.Region's wrap of every record that needs it: ReEncrypt inside KMS in that
// region (the DEK never leaves KMS) from the region's current wrap, or for a backfill from a
// replica of another region's multi-Region wrap; for independent keys with no wrap in the
// region, Decrypt in a region that holds one and Encrypt here, wiping the DEK at once. Each new
// wrap is decrypted once in the region and its commitment checked before a conditional write
// replaces the old one.
func Rewrap(ctx context.Context, cfg *config.Config, opts RewrapOptions) (*RewrapReport, error) {
	rc, ok := cfg.Region(opts.Region)
	if !ok {
		return nil, fmt.Errorf("region %s: %w (configured: %v)", opts.Region, regions.ErrNotConfigured, cfg.RegionNames())
	}
	topo, err := regions.New(ctx, cfg, opts.Regions)
	if err != nil {
		return nil, err
	}
	r, _ := topo.Region(rc.Name)
	homeR, err := topo.HomeRegion()
	if err != nil {
		return nil, err
	}
	x := &rewrapper{cfg: cfg, topo: topo, r: r, home: replicate.NewStore(cfg.Table, homeR.Name, homeR.DynamoDB(), cfg.RegionNames())}
	toKey := opts.ToKey
	if toKey == "" {
		toKey = rc.Key
	}
	if kr := regions.ARNRegion(toKey); kr != "" && kr != rc.Name {
		return nil, fmt.Errorf("region %s: --to-key %s is in region %s; use a key (or replica) in %s", rc.Name, toKey, kr, rc.Name)
	}
	md, err := r.KMS().DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(toKey)})
	if err != nil {
		return nil, &regions.Error{Region: rc.Name, Op: "DescribeKey", KeyARN: toKey, Err: err}
	}
	x.target = aws.ToString(md.KeyMetadata.Arn)
	// The target was named by the operator (--to-key, or the configured key): the new wraps made
	// under it are checked by decrypting them, which the strict key check must allow.
	r.TrustKey(x.target)
	x.since = opts.Since
	if x.since.IsZero() {
		if x.since, err = lastRotation(ctx, topo, r, x.target); err != nil {
			return nil, err
		}
	}
	if now := time.Now(); now.Before(x.since) {
		return nil, fmt.Errorf("region %s: this machine's clock (%s) is behind the key's last rotation (%s); fix the clock or pass --since",
			rc.Name, now.UTC().Format(time.RFC3339), x.since.UTC().Format(time.RFC3339))
	}

	segments := opts.Segments
	if segments < 1 {
		segments = DefaultSegments
	}
	rep := &RewrapReport{Region: rc.Name, Shard: opts.Shard.String(), TargetKey: x.target, Since: x.since, DryRun: opts.DryRun}
	var cp *checkpoint
	if !opts.DryRun {
		path := opts.Checkpoint
		if path == "" {
			path = DefaultCheckpoint(cfg.Table, rc.Name, opts.Shard)
		}
		rep.Checkpoint = path
		if cp, err = loadCheckpoint(path); err != nil {
			return nil, err
		}
		if cp != nil {
			if cp.Table != cfg.Table || cp.Region != rc.Name || cp.TargetKey != x.target || !cp.Since.Equal(x.since) || cp.Shard != opts.Shard.String() {
				return nil, fmt.Errorf("%w: %s is for table %s region %s key %s since %s%s; finish that rewrap or delete the file",
					ErrCheckpointMismatch, path, cp.Table, cp.Region, cp.TargetKey, cp.Since.UTC().Format(time.RFC3339), shardNote(cp.Shard))
			}
			segments = len(cp.Segments)
			rep.Resumed = true
		} else {
			cp = &checkpoint{Version: 1, Table: cfg.Table, Region: rc.Name, TargetKey: x.target, Since: x.since, Shard: opts.Shard.String(),
				StartedAt: time.Now().UTC(), Segments: make([]segmentState, segments), path: path}
			if err := cp.save(); err != nil {
				return nil, err
			}
		}
	}

	var limiter *ratelimit.Limiter
	if opts.Rate > 0 {
		limiter = ratelimit.NewLimiter(ratelimit.Limit(opts.Rate), 1)
	}
	fails := newFailures(opts.MaxFailures)
	var records, changed, unchanged, failed atomic.Int64
	handle := func(ctx context.Context, rec *envelope.Record) {
		if ctx.Err() != nil {
			return
		}
		if !x.needs(rec.Regions[rc.Name]) {
			records.Add(1)
			unchanged.Add(1)
			return
		}
		if opts.DryRun {
			records.Add(1)
			changed.Add(1)
			return
		}
		if limiter != nil {
			if err := limiter.Wait(ctx); err != nil {
				return
			}
		}
		did, err := x.rewrapRecord(ctx, rec)
		if err != nil && ctx.Err() != nil {
			return // interrupted: the resumed run decides
		}
		records.Add(1)
		switch {
		case err != nil:
			failed.Add(1)
			fails.add(Failure{ID: rec.ID, Region: rc.Name, Outcome: OutcomeFailed, Reason: trimErr(err)})
		case did:
			changed.Add(1)
		default:
			unchanged.Add(1)
		}
	}
	e := &engine{store: x.home, segments: segments, workers: opts.Workers, pageSize: opts.PageSize, handle: handle, progress: opts.Progress,
		bad: func(b replicate.BadItem) {
			failed.Add(1)
			fails.add(Failure{ID: b.ID, Region: rc.Name, Outcome: "unreadable", Reason: trimErr(b.Err)})
		}}
	if e.pageSize == 0 {
		e.pageSize = 100
	}
	if opts.Shard.Count > 1 {
		// Positions in the plan number the checkpoint's segments, so a resumed shard reads the
		// same DynamoDB segments of the same TotalSegments.
		e.plan = shardPlan(segments, opts.Shard)
	}
	if cp != nil {
		baseChanged := cp.Changed
		e.resume = func(seg int) (string, bool) {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			return cp.Segments[seg].After, cp.Segments[seg].Done
		}
		e.pageDone = func(seg int, next string) error {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			cp.Segments[seg] = segmentState{After: next, Done: next == ""}
			cp.Changed = baseChanged + changed.Load()
			return cp.save()
		}
	}
	if opts.Total != nil {
		if n, err := ApproxRecords(ctx, x.home, homeR.DynamoDB(), len(cfg.RegionNames())); err == nil {
			opts.Total(n / int64(max(opts.Shard.Count, 1)))
		}
	}
	start := time.Now()
	runErr := e.run(ctx)
	d := time.Since(start)
	rep.Records, rep.Changed, rep.Unchanged, rep.Failed = records.Load(), changed.Load(), unchanged.Load(), failed.Load()
	rep.DurationSeconds, rep.RecordsPerSec = d.Seconds(), rate(rep.Records, d)
	rep.Failures, rep.FailuresOmitted = fails.list()
	if runErr != nil {
		if ctx.Err() != nil {
			rep.Interrupted = true
			return rep, nil
		}
		return rep, fmt.Errorf("rewrap %s: %w", rc.Name, runErr)
	}
	if cp != nil {
		// Finished: the next rewrap starts afresh (and finds nothing to do unless something
		// changed); failed records are retried by it.
		if err := os.Remove(cp.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return rep, fmt.Errorf("checkpoint %s: %w", cp.path, err)
		}
	}
	return rep, nil
}

// shardNote names a checkpoint's shard in an error, if it has one.
func shardNote(shard string) string {
	if shard == "" {
		return " (a whole scan, no --shard)"
	}
	return " shard " + shard
}

// rewrapRecord re-makes rec's wrap in x.r and writes it; did is false when another writer got
// there first. The new wrap is checked (decrypted in the region, commitment compared) before it
// is written, so the region's item goes on holding a checked wrap (docs/FORMAT.md §6.1, I3).
func (x *rewrapper) rewrapRecord(ctx context.Context, rec *envelope.Record) (did bool, err error) {
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			if rec, err = x.home.Get(ctx, rec.ID); err != nil {
				return false, err
			}
			if !x.needs(rec.Regions[x.r.Name]) {
				return false, nil
			}
		}
		old := rec.Regions[x.r.Name]
		wrapped, keyARN, err := x.make(ctx, rec)
		if err != nil {
			return false, err
		}
		now := time.Now().UTC()
		wrote := false
		_, err = x.home.Update(ctx, rec.ID, func(cur *envelope.Record) (*envelope.Record, error) {
			wrote = false
			if cur == nil {
				return nil, fmt.Errorf("region %s: record %s: %w", x.r.Name, rec.ID, replicate.ErrRecordNotFound)
			}
			cw := cur.Regions[x.r.Name]
			if !x.needs(cw) {
				return nil, nil // someone else re-made it meanwhile
			}
			if !sameWrap(cw, old) {
				return nil, errRaced
			}
			next := cur.Clone()
			// Replacing a region's wrap is deliberate, not a merge (envelope.Record.Merge). The
			// new wrap was decrypted in the region and checked: it is verified now.
			next.Regions[x.r.Name] = &envelope.RegionWrap{KeyARN: keyARN, Wrapped: wrapped, WrappedAt: now, VerifiedAt: now, LastErrorAt: now}
			wrote = true
			return next, nil
		})
		if errors.Is(err, errRaced) {
			continue
		}
		if err != nil {
			return false, err
		}
		return wrote, nil
	}
	return false, fmt.Errorf("region %s: record %s: %w (3 tries)", x.r.Name, rec.ID, errRaced)
}

func sameWrap(a, b *envelope.RegionWrap) bool {
	if !a.HasWrap() || !b.HasWrap() {
		return a.HasWrap() == b.HasWrap()
	}
	return a.KeyARN == b.KeyARN && bytes.Equal(a.Wrapped, b.Wrapped) && a.WrappedAt.Equal(b.WrappedAt)
}

// deadWrap reports whether err says a wrap can no longer be opened where it is (its key
// disabled, pending deletion or gone, the wrap refused, its key no longer trusted, or it opens
// to another data key than the record's commitment names), as opposed to a passing failure
// (throttling, an unreachable region) that a later run may not see.
func deadWrap(err error) bool {
	return errors.Is(err, regions.ErrKeyDisabled) || errors.Is(err, regions.ErrKeyNotFound) ||
		errors.Is(err, regions.ErrInvalidCiphertext) || errors.Is(err, regions.ErrUntrustedKey) ||
		errors.Is(err, envelope.ErrCommitmentMismatch)
}

// make produces the new wrap under the target key, checked: ReEncrypt of the region's own wrap
// when it is good, else a backfill from the first other region's wrap that yields a checked
// wrap. A region whose wrap fails its commitment counts as having no wrap.
func (x *rewrapper) make(ctx context.Context, rec *envelope.Record) ([]byte, string, error) {
	ec := rec.Context.Map()
	var dead error
	if w := rec.Regions[x.r.Name]; w.HasWrap() {
		// Rotation or key change: inside KMS, in this region.
		wrapped, arn, err := x.r.ReEncrypt(ctx, w.Wrapped, w.KeyARN, x.target, ec)
		if err == nil {
			err = x.check(ctx, rec, wrapped, arn)
		}
		if err == nil || !deadWrap(err) {
			return wrapped, arn, err
		}
		// The region's wrap no longer opens (its key disabled, deleted or replaced), or is a
		// wrap of another data key: repair the region by backfilling from another region's
		// good wrap, as for a missing one.
		dead = fmt.Errorf("region %s: record %s: the region's wrap under %s is dead: %w", x.r.Name, rec.ID, w.KeyARN, err)
	}
	wrapped, arn, err := x.backfill(ctx, rec, ec)
	if err != nil && dead != nil {
		return nil, "", fmt.Errorf("%w; and the repair from another region failed: %w", dead, err)
	}
	return wrapped, arn, err
}

// backfill makes the region's wrap from another region's wrap: the first source whose result
// checks out (a source wrap of another data key is skipped, never copied).
func (x *rewrapper) backfill(ctx context.Context, rec *envelope.Record, ec map[string]string) ([]byte, string, error) {
	var errs []error
	for _, name := range x.sources(rec) {
		wrapped, arn, err := x.backfillFrom(ctx, rec, name, ec)
		if err == nil {
			if err = x.check(ctx, rec, wrapped, arn); err == nil {
				return wrapped, arn, nil
			}
		}
		errs = append(errs, fmt.Errorf("from %s: %w", name, err))
	}
	if len(errs) == 0 {
		return nil, "", fmt.Errorf("region %s: record %s: no region holds a wrap to backfill from", x.r.Name, rec.ID)
	}
	return nil, "", fmt.Errorf("region %s: record %s: no wrap to backfill from opened: %w", x.r.Name, rec.ID, errors.Join(errs...))
}

// backfillFrom makes the region's wrap from region name's wrap: a multi-Region wrap of the
// target's key opens through this region's replica (ReEncrypt here, the DEK never leaves KMS);
// otherwise Decrypt once in name (commitment checked), Encrypt here, wipe.
func (x *rewrapper) backfillFrom(ctx context.Context, rec *envelope.Record, name string, ec map[string]string) ([]byte, string, error) {
	w := rec.Regions[name]
	if regions.IsMultiRegionKeyARN(x.target) && regions.KeyID(w.KeyARN) == regions.KeyID(x.target) {
		if src, err := regions.ReplicaARN(w.KeyARN, x.r.Name); err == nil {
			return x.r.ReEncrypt(ctx, w.Wrapped, src, x.target, ec)
		}
	}
	sr, err := x.topo.Region(name)
	if err != nil {
		return nil, "", err
	}
	wrapped, keyARN, err := x.r.CopyWrap(ctx, sr, w.Wrapped, w.KeyARN, rec.Commitment, ec, rec.ID, nil)
	if err != nil {
		return nil, "", err
	}
	if keyARN != x.target {
		return x.r.ReEncrypt(ctx, wrapped, keyARN, x.target, ec)
	}
	return wrapped, keyARN, nil
}

// sources lists the regions holding a wrap, the record's source region first.
func (x *rewrapper) sources(rec *envelope.Record) []string {
	var out []string
	if rec.Regions[rec.SourceRegion].HasWrap() && rec.SourceRegion != x.r.Name {
		out = append(out, rec.SourceRegion)
	}
	for _, n := range x.cfg.RegionNames() {
		if n != rec.SourceRegion && n != x.r.Name && rec.Regions[n].HasWrap() {
			out = append(out, n)
		}
	}
	return out
}

// check opens the new wrap once in the region and checks the commitment, so a bad wrap never
// replaces a good one.
func (x *rewrapper) check(ctx context.Context, rec *envelope.Record, wrapped []byte, keyARN string) error {
	dek, err := x.r.DecryptRaw(ctx, wrapped, keyARN, rec.Context.Map())
	if err != nil {
		return fmt.Errorf("record %s: the new wrap does not open: %w", rec.ID, err)
	}
	defer envelope.Wipe(dek)
	if err := envelope.CheckCommitment(dek, rec.Commitment); err != nil {
		return fmt.Errorf("region %s: record %s: the new wrap under %s: %w", x.r.Name, rec.ID, keyARN, err)
	}
	return nil
}

// lastRotation returns the target key's latest rotation date (zero if it never rotated). For a
// multi-Region replica it asks the primary when the replica's region does not answer for it.
func lastRotation(ctx context.Context, topo *regions.Topology, r *regions.Region, keyARN string) (time.Time, error) {
	latest := func(c *kms.Client, arn string) (time.Time, error) {
		var t time.Time
		p := kms.NewListKeyRotationsPaginator(c, &kms.ListKeyRotationsInput{KeyId: aws.String(arn)})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				return time.Time{}, err
			}
			for _, rot := range out.Rotations {
				if d := aws.ToTime(rot.RotationDate); d.After(t) {
					t = d
				}
			}
		}
		return t, nil
	}
	t, err := latest(r.KMS(), keyARN)
	if err == nil {
		return t, nil
	}
	if regions.IsMultiRegionKeyARN(keyARN) {
		if pr := topo.Home; pr != r.Name {
			if home, herr := topo.Region(pr); herr == nil {
				if primary, perr := regions.ReplicaARN(keyARN, pr); perr == nil {
					if t, err2 := latest(home.KMS(), primary); err2 == nil {
						return t, nil
					}
				}
			}
		}
	}
	return time.Time{}, &regions.Error{Region: r.Name, Op: "ListKeyRotations", KeyARN: keyARN,
		Err: fmt.Errorf("%w; pass --since to say which wraps to re-make", err)}
}
