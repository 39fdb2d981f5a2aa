package recovery_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/recovery"
)

// Statistical and sharded verify (issue 25) on the stand-in: a sample reads exactly the records
// it asks for and states each region's bound from its own defects; a sample larger than the
// table covers it all and gives exact fractions; confidence and max defect size the sample and
// decide the verdict; four shards of one scan see every record exactly once, with the failures
// of a whole scan.
func TestSampledAndShardedVerify(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	const n, broken = 80, 8
	ids := f.seed(t, n, f.env.Regions...)
	other, err := f.home.Get(ctx, ids[n-1])
	require.NoError(t, err)
	for _, id := range ids[:broken] {
		_, err := f.home.Update(ctx, id, func(cur *envelope.Record) (*envelope.Record, error) {
			next := cur.Clone()
			next.Regions["eu-west-1"].Wrapped = bytes.Clone(other.Regions["eu-west-1"].Wrapped)
			return next, nil
		})
		require.NoError(t, err)
	}
	f.env.Settle()
	verify := func(o recovery.VerifyOptions) *recovery.VerifyReport {
		o.NoWrite, o.Regions = true, fastRegions
		rep, err := recovery.Verify(ctx, f.as(t, iam.RoleOperator), o)
		require.NoError(t, err)
		return rep
	}

	s := verify(recovery.VerifyOptions{Sampling: recovery.Sampling{Sample: 40, Seed: 7}})
	require.Equal(t, int64(40), s.Records)
	require.NotNil(t, s.Sample)
	require.Equal(t, recovery.SampleMethod, s.Sample.Method)
	require.Equal(t, int64(40), s.Sample.Drawn)
	require.False(t, s.Sample.Exhaustive)
	require.Equal(t, recovery.DefaultConfidence, s.Sample.Confidence)
	for _, b := range s.Sample.Regions {
		require.InDelta(t, recovery.UpperBound(b.Defects, 40, recovery.DefaultConfidence), b.UpperBound, 1e-12, b.Region)
		if b.Region == "eu-west-1" {
			require.LessOrEqual(t, b.Defects, int64(broken))
			require.Equal(t, s.Failed, b.Defects, "every failure of the sample is eu-west-1's")
		} else {
			require.Zero(t, b.Defects, b.Region)
		}
	}
	require.Equal(t, s.Failed == 0, s.Passed())

	all := verify(recovery.VerifyOptions{Sampling: recovery.Sampling{Sample: 500}})
	require.True(t, all.Sample.Exhaustive)
	require.Equal(t, int64(n), all.Sample.Drawn)
	for _, b := range all.Sample.Regions {
		if b.Region == "eu-west-1" {
			require.Equal(t, int64(broken), b.Defects)
			require.InDelta(t, float64(broken)/n, b.UpperBound, 1e-12)
		}
	}
	require.False(t, all.Passed())

	c := verify(recovery.VerifyOptions{Sampling: recovery.Sampling{Confidence: 0.9, MaxDefect: 0.2}})
	require.Equal(t, 11, c.Sample.Requested, "ln(0.1)/ln(0.8) = 10.3")
	require.Equal(t, int64(11), c.Records)
	require.Equal(t, c.Sample.WorstUpperBound <= 0.2, c.Passed())

	whole := verify(recovery.VerifyOptions{Segments: 2})
	require.Equal(t, int64(broken), whole.Failed)
	var records, failed int64
	seen := map[string]bool{}
	var parts []*recovery.VerifyResult
	for i := range 4 {
		part := verify(recovery.VerifyOptions{Segments: 2, Sampling: recovery.Sampling{Shard: recovery.Shard{Index: i, Count: 4}}})
		// Each shard's report file, as verify --report writes it, read back through its digest.
		js, err := recovery.NewVerifyResult(part).JSON()
		require.NoError(t, err)
		back, err := recovery.VerifyVerifyReport(js)
		require.NoError(t, err)
		parts = append(parts, back)
		require.Equal(t, recovery.Shard{Index: i, Count: 4}.String(), part.Shard)
		records += part.Records
		failed += part.Failed
		for _, x := range part.Failures {
			require.False(t, seen[x.ID], "record %s failed in two shards", x.ID)
			seen[x.ID] = true
		}
	}
	require.Equal(t, int64(n), records, "the shards together read every record once")
	require.Equal(t, int64(broken), failed)
	for _, id := range ids[:broken] {
		require.True(t, seen[id], id)
	}

	// envdr report merge: the whole table's report, with a digest verify-report accepts.
	merged, err := recovery.MergeVerify([]*recovery.VerifyResult{parts[2], parts[0], parts[3], parts[1]})
	require.NoError(t, err)
	require.Equal(t, int64(n), merged.Records)
	require.Equal(t, whole.Failed, merged.Failed)
	require.Len(t, merged.Failures, broken)
	require.False(t, merged.Passed)
	require.Len(t, merged.MergedFrom, 4)
	require.Equal(t, "1/4", merged.MergedFrom[0].Shard)
	js, err := merged.JSON()
	require.NoError(t, err)
	back, err := recovery.VerifyVerifyReport(js)
	require.NoError(t, err)
	require.Equal(t, merged.SHA256, back.SHA256)
	require.Equal(t, "verify", recovery.ReportKind(js))
	edited := bytes.Replace(js, []byte(`"records": 80`), []byte(`"records": 81`), 1)
	require.NotEqual(t, js, edited)
	_, err = recovery.VerifyVerifyReport(edited)
	require.ErrorIs(t, err, recovery.ErrReportDigest)
	_, err = recovery.MergeVerify(parts[:3])
	require.ErrorIs(t, err, recovery.ErrShardSet, "a missing shard")
	_, err = recovery.MergeVerify([]*recovery.VerifyResult{parts[0], parts[1], parts[2], parts[2]})
	require.ErrorIs(t, err, recovery.ErrShardSet, "a repeated shard")
}

// Two shards of a drill merge into the drill of the whole table.
func TestShardedDrillMerges(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.seed(t, 24, f.env.Regions...)
	f.env.Settle()
	whole, err := recovery.Drill(ctx, f.as(t, iam.RoleDrill), recovery.DrillOptions{Lose: "eu-west-1", Segments: 2, Regions: fastRegions})
	require.NoError(t, err)
	var parts []*recovery.DrillReport
	for i := range 2 {
		r, err := recovery.Drill(ctx, f.as(t, iam.RoleDrill), recovery.DrillOptions{Lose: "eu-west-1", Segments: 2, Regions: fastRegions,
			Sampling: recovery.Sampling{Shard: recovery.Shard{Index: i, Count: 2}}})
		require.NoError(t, err)
		js, err := r.JSON()
		require.NoError(t, err)
		back, err := recovery.VerifyDrillReport(js)
		require.NoError(t, err)
		parts = append(parts, back)
	}
	require.Less(t, parts[0].Records, whole.Records)
	m, err := recovery.MergeDrill(parts)
	require.NoError(t, err)
	require.Equal(t, whole.Records, m.Records)
	require.Equal(t, whole.Recoverable, m.Recoverable)
	require.True(t, m.Passed, "%+v", m.FailedChecks())
	js, err := m.JSON()
	require.NoError(t, err)
	back, err := recovery.VerifyDrillReport(js)
	require.NoError(t, err)
	require.Len(t, back.MergedFrom, 2)
}

// A statistical drill bounds the fraction of the table the surviving regions cannot open, and
// with a max defect judges by that bound (issue 25).
func TestSampledDrill(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.seed(t, 30, f.env.Regions...)
	f.env.Settle()
	rep, err := recovery.Drill(ctx, f.as(t, iam.RoleDrill), recovery.DrillOptions{Lose: "ap-southeast-2", Regions: fastRegions,
		Sampling: recovery.Sampling{Confidence: 0.9, MaxDefect: 0.2}})
	require.NoError(t, err)
	require.Equal(t, int64(11), rep.Records)
	require.NotNil(t, rep.Sample)
	require.Equal(t, "surviving", rep.Sample.Regions[0].Region)
	require.Zero(t, rep.Sample.Regions[0].Defects)
	require.InDelta(t, recovery.UpperBound(0, 11, 0.9), rep.Sample.WorstUpperBound, 1e-12)
	require.True(t, rep.Passed, "%+v", rep.FailedChecks())
}

// A sample sizes its scan segments from a few probed segments, not DescribeTable (which DynamoDB
// Local answers by counting the table): an empty table is 0, a tiny one is counted exactly, a
// larger one is estimated within a factor of two.
func TestProbeRecordsEstimatesTheTable(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	n, err := recovery.ProbeRecords(ctx, f.home, 1)
	require.NoError(t, err)
	require.Zero(t, n)
	seedLoad(t, f, 5)
	n, err = recovery.ProbeRecords(ctx, f.home, 2)
	require.NoError(t, err)
	require.Equal(t, int64(5), n, "a tiny table is counted")
	seedLoad(t, f, 595)
	for seed := range uint64(3) {
		n, err = recovery.ProbeRecords(ctx, f.home, seed+3)
		require.NoError(t, err)
		require.InDelta(t, 600, n, 300, "seed %d", seed+3)
	}
}
