package recovery_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/recovery"
)

// failover --promote moves the multi-Region key's primary (UpdatePrimaryRegion in the current
// primary's region), doctor then reports the new primary, envelopes keep replicating, and a
// promotion while the primary's region is lost fails naming why.
func TestPromoteMovesThePrimary(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	res, err := recovery.Promote(ctx, f.cfg, "us-east-1", fastRegions)
	require.NoError(t, err)
	require.False(t, res.Changed, "us-east-1 is the primary already")

	res, err = recovery.Promote(ctx, f.cfg, "eu-west-1", fastRegions)
	require.NoError(t, err)
	require.True(t, res.Changed)
	require.Equal(t, "us-east-1", res.From)
	eu, err := f.topo.Region("eu-west-1")
	require.NoError(t, err)
	md, err := eu.KMS().DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(f.env.Keys["eu-west-1"].MRK)})
	require.NoError(t, err)
	require.Equal(t, "PRIMARY", string(md.KeyMetadata.MultiRegionConfiguration.MultiRegionKeyType))

	rep, err := recovery.Doctor(ctx, f.as(t, iam.RoleOperator), recovery.DoctorOptions{Regions: fastRegions})
	require.NoError(t, err)
	var primary *recovery.Check
	for i, c := range rep.Checks {
		if c.Check == recovery.CheckPrimary {
			primary = &rep.Checks[i]
		}
	}
	require.NotNil(t, primary)
	require.Equal(t, "eu-west-1", primary.Region)
	for _, c := range rep.Checks {
		if c.Check == recovery.CheckReplica || c.Check == recovery.CheckPrimary {
			require.Equalf(t, recovery.StatusPass, c.Status, "%+v", c)
		}
	}

	// Records still open in every region after the move.
	ids := f.seed(t, 3, f.env.Regions...)
	v, err := recovery.Verify(ctx, f.as(t, iam.RoleOperator), recovery.VerifyOptions{Regions: fastRegions, NoWrite: true})
	require.NoError(t, err)
	require.True(t, v.Passed(), "%+v", v.Failures)
	require.EqualValues(t, len(ids), v.Records)

	// With the primary's region lost, KMS cannot move it: a clear error.
	f.env.Down("eu-west-1")
	_, err = recovery.Promote(ctx, f.cfg, "ap-southeast-2", fastRegions)
	require.ErrorIs(t, err, recovery.ErrPrimaryRegionUnavailable)
	require.ErrorContains(t, err, "eu-west-1")
	f.env.Up("eu-west-1")
	res, err = recovery.Promote(ctx, f.cfg, "us-east-1", fastRegions)
	require.NoError(t, err)
	require.True(t, res.Changed)
	require.Equal(t, "eu-west-1", res.From)
}
