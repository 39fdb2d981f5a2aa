package recovery

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"
)

// Merging shard reports (issue 25): N processes each ran `verify --shard i/N` or `drill --lose R
// --shard i/N` over their part of one parallel scan; MergeVerify and MergeDrill combine their
// reports into the report of the whole scan, which carries its own digest and names the shards'
// (merged_from). They refuse a set that is not exactly the shards 1..N of one scan: a missing
// or repeated shard, another table, other regions, or a sample.

// ErrShardSet: the reports are not exactly the shards of one scan.
var ErrShardSet = errors.New("not the shards of one scan")

// shardsOf checks that parts' shards (shard) are exactly "1/N" ... "N/N".
func shardsOf[T any](parts []T, shard func(T) string) error {
	shards := make([]string, 0, len(parts))
	for _, p := range parts {
		shards = append(shards, shard(p))
	}
	return shardSet(shards)
}

// shardSet checks that shards are "1/N" ... "N/N", each once.
func shardSet(shards []string) error {
	if len(shards) == 0 {
		return fmt.Errorf("%w: no reports", ErrShardSet)
	}
	seen := map[int]bool{}
	count := 0
	for _, s := range shards {
		if s == "" {
			return fmt.Errorf("%w: a report of a whole scan (no --shard) is already complete", ErrShardSet)
		}
		sh, err := ParseShard(s)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrShardSet, err)
		}
		if count != 0 && sh.Count != count {
			return fmt.Errorf("%w: shards of %d and of %d", ErrShardSet, count, sh.Count)
		}
		count = sh.Count
		if seen[sh.Index] {
			return fmt.Errorf("%w: shard %s twice", ErrShardSet, s)
		}
		seen[sh.Index] = true
	}
	if len(seen) != count {
		var missing []string
		for i := range count {
			if !seen[i] {
				missing = append(missing, Shard{Index: i, Count: count}.String())
			}
		}
		return fmt.Errorf("%w: missing shard %v", ErrShardSet, missing)
	}
	return nil
}

// sumTallies adds region tallies by region, in the first report's order; the KMS mean is
// weighted by calls.
func sumTallies(lists ...[]RegionTally) []RegionTally {
	var out []RegionTally
	at := map[string]int{}
	for _, l := range lists {
		for _, t := range l {
			i, ok := at[t.Region]
			if !ok {
				at[t.Region] = len(out)
				out = append(out, RegionTally{Region: t.Region})
				i = len(out) - 1
			}
			o := &out[i]
			total := o.MeanMillis*float64(o.Calls) + t.MeanMillis*float64(t.Calls)
			o.OK += t.OK
			o.NoWrap += t.NoWrap
			o.NoRecord += t.NoRecord
			o.Failed += t.Failed
			o.Unavailable += t.Unavailable
			o.Skipped += t.Skipped
			o.NotCurrent += t.NotCurrent
			o.Fallbacks += t.Fallbacks
			o.Calls += t.Calls
			o.MaxMillis = max(o.MaxMillis, t.MaxMillis)
			if o.Calls > 0 {
				o.MeanMillis = total / float64(o.Calls)
			}
		}
	}
	return out
}

// span is the earliest start and the latest end of the shards (they run side by side).
type span struct {
	start, end time.Time
}

func (s *span) add(start time.Time, seconds float64) {
	end := start.Add(time.Duration(seconds * float64(time.Second)))
	if s.start.IsZero() || start.Before(s.start) {
		s.start = start
	}
	if end.After(s.end) {
		s.end = end
	}
}

// MergeVerify combines the reports of `verify --shard i/N`, i = 1..N, into one.
func MergeVerify(parts []*VerifyResult) (*VerifyResult, error) {
	if err := shardsOf(parts, func(p *VerifyResult) string { return p.Shard }); err != nil {
		return nil, err
	}
	first := parts[0].VerifyReport
	m := &VerifyReport{SchemaVersion: ReportSchemaVersion, Kind: "verify", Envdr: first.Envdr, Table: first.Table,
		ScanRegion: first.ScanRegion, Regions: first.Regions, Required: first.Required, Quorum: first.Quorum,
		RequireCurrent: first.RequireCurrent, Strict: first.Strict, Skipped: []SkippedRegion{}}
	var sp span
	var tallies [][]RegionTally
	skipped := map[string]SkippedRegion{}
	for _, p := range parts {
		r := p.VerifyReport
		if r.Table != m.Table || !slices.Equal(r.Regions, m.Regions) || !slices.Equal(r.Required, m.Required) || r.RequireCurrent != m.RequireCurrent {
			return nil, fmt.Errorf("%w: shard %s checked table %s, regions %v (required %v), require_current %v; shard %s: table %s, regions %v (required %v), require_current %v",
				ErrShardSet, first.Shard, m.Table, m.Regions, m.Required, m.RequireCurrent, r.Shard, r.Table, r.Regions, r.Required, r.RequireCurrent)
		}
		if r.Sample != nil {
			return nil, fmt.Errorf("%w: shard %s is a sample", ErrShardSet, r.Shard)
		}
		sp.add(r.StartedAt, r.DurationSeconds)
		m.Records += r.Records
		m.OK += r.OK
		m.Failed += r.Failed
		m.Unreadable += r.Unreadable
		m.Updated += r.Updated
		m.StampWrites += r.StampWrites
		m.StampItems += r.StampItems
		m.StampFallbacks += r.StampFallbacks
		m.Failures = append(m.Failures, r.Failures...)
		m.FailuresOmitted += r.FailuresOmitted
		m.Interrupted = m.Interrupted || r.Interrupted
		tallies = append(tallies, r.PerRegion)
		for _, s := range r.Skipped {
			skipped[s.Region] = s
		}
		m.MergedFrom = append(m.MergedFrom, MergedShard{Shard: r.Shard, SHA256: r.SHA256})
	}
	m.StartedAt, m.DurationSeconds = sp.start, sp.end.Sub(sp.start).Seconds()
	m.RecordsPerSec = rate(m.Records, sp.end.Sub(sp.start))
	m.PerRegion = sumTallies(tallies...)
	sortFailures(m.Failures)
	for _, s := range skipped {
		m.Skipped = append(m.Skipped, s)
	}
	sort.Slice(m.Skipped, func(i, j int) bool { return m.Skipped[i].Region < m.Skipped[j].Region })
	sortMerged(m.MergedFrom)
	return NewVerifyResult(m), nil
}

func sortMerged(ms []MergedShard) {
	sort.Slice(ms, func(i, j int) bool {
		a, _ := ParseShard(ms[i].Shard)
		b, _ := ParseShard(ms[j].Shard)
		return a.Index < b.Index
	})
}

// MergeDrill combines the reports of `drill --lose R --shard i/N`, i = 1..N, into one, judged
// again by the first shard's thresholds. The recovery point's queued events are the largest
// any shard counted (every shard counts the same queues); its age is the oldest.
func MergeDrill(parts []*DrillReport) (*DrillReport, error) {
	if err := shardsOf(parts, func(p *DrillReport) string { return p.Shard }); err != nil {
		return nil, err
	}
	first := parts[0]
	m := &DrillReport{SchemaVersion: ReportSchemaVersion, Envdr: first.Envdr, Host: first.Host, Caller: first.Caller,
		Lost: first.Lost, Surviving: first.Surviving, ScanRegion: first.ScanRegion, Mode: first.Mode, Config: first.Config,
		Thresholds: first.Thresholds, Pending: []Pending{}}
	var sp span
	var matrices [][]RegionTally
	held := map[string]int64{}
	for _, r := range parts {
		if r.Lost != m.Lost || r.Mode != m.Mode || r.Config.Table != m.Config.Table || !slices.Equal(r.Surviving, m.Surviving) {
			return nil, fmt.Errorf("%w: shard %s lost %s (%s, table %s); shard %s lost %s (%s, table %s)",
				ErrShardSet, first.Shard, m.Lost, m.Mode, m.Config.Table, r.Shard, r.Lost, r.Mode, r.Config.Table)
		}
		if r.Sample != nil {
			return nil, fmt.Errorf("%w: shard %s is a sample", ErrShardSet, r.Shard)
		}
		sp.add(r.StartedAt, r.DurationSeconds)
		m.RTOSeconds = max(m.RTOSeconds, r.RTOSeconds)
		m.Records += r.Records
		m.Recoverable += r.Recoverable
		m.Unrecoverable += r.Unrecoverable
		m.NoSurvivingWrap += r.NoSurvivingWrap
		m.DecryptFailed += r.DecryptFailed
		m.NotReplicated += r.NotReplicated
		m.Replicated += r.Replicated
		m.ReplicatedRecoverable += r.ReplicatedRecoverable
		m.Unreadable += r.Unreadable
		m.Failures = append(m.Failures, r.Failures...)
		m.FailuresOmitted += r.FailuresOmitted
		m.Pending = append(m.Pending, r.Pending...)
		m.PendingOmitted += r.PendingOmitted
		m.Files = append(m.Files, r.Files...)
		m.Interrupted = m.Interrupted || r.Interrupted
		m.Isolation.LostRegionRequests += r.Isolation.LostRegionRequests
		m.Timings.ScanSeconds = max(m.Timings.ScanSeconds, r.Timings.ScanSeconds)
		m.Timings.OpenSeconds = max(m.Timings.OpenSeconds, r.Timings.OpenSeconds)
		var tallies []RegionTally
		for _, row := range r.Matrix {
			tallies = append(tallies, row.RegionTally)
			held[row.Region] += row.WrapsHeld
		}
		matrices = append(matrices, tallies)
		rp := r.RecoveryPoint
		if rp.QueuedEvents != nil && (m.RecoveryPoint.QueuedEvents == nil || *rp.QueuedEvents > *m.RecoveryPoint.QueuedEvents) {
			q := *rp.QueuedEvents
			m.RecoveryPoint.QueuedEvents = &q
		}
		if m.RecoveryPoint.QueueNote == "" {
			m.RecoveryPoint.QueueNote = rp.QueueNote
		}
		m.RecoveryPoint.RPOSeconds = max(m.RecoveryPoint.RPOSeconds, rp.RPOSeconds)
		m.RecoveryPoint.RPOLowerBound = m.RecoveryPoint.RPOLowerBound || rp.RPOLowerBound
		if o := rp.OldestNotReplicated; o != nil && (m.RecoveryPoint.OldestNotReplicated == nil || o.Before(*m.RecoveryPoint.OldestNotReplicated)) {
			t := *o
			m.RecoveryPoint.OldestNotReplicated = &t
		}
		m.MergedFrom = append(m.MergedFrom, MergedShard{Shard: r.Shard, SHA256: r.SHA256})
	}
	m.StartedAt, m.FinishedAt = sp.start, sp.end
	m.DurationSeconds = sp.end.Sub(sp.start).Seconds()
	m.RecoverablePercent = percent(m.Recoverable, m.Records)
	m.ReplicatedRecoverablePercent = percent(m.ReplicatedRecoverable, m.Replicated)
	m.RecoveryPoint.NotReplicated = m.NotReplicated
	m.RecoveryPoint.AtRisk = m.NotReplicated
	if q := m.RecoveryPoint.QueuedEvents; q != nil {
		m.RecoveryPoint.AtRisk += *q
	}
	m.Timings.RecordsPerSec = rate(m.Records, time.Duration(m.Timings.ScanSeconds*float64(time.Second)))
	for _, t := range sumTallies(matrices...) {
		m.Matrix = append(m.Matrix, MatrixRow{RegionTally: t, Lost: t.Region == m.Lost, WrapsHeld: held[t.Region]})
	}
	sortFailures(m.Failures)
	sort.Slice(m.Pending, func(i, j int) bool { return m.Pending[i].ID < m.Pending[j].ID })
	sortMerged(m.MergedFrom)
	opts := DrillOptions{MinRecoverable: m.Thresholds.MinRecoverablePercent}
	if l := m.Thresholds.MaxRPOSeconds; l != nil {
		opts.MaxRPO = time.Duration(*l * float64(time.Second))
	}
	m.judge(opts)
	return m, nil
}
