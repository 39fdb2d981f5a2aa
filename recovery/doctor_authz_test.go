package recovery_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/policy"
	"github.com/envdr/envdr/recovery"
)

// doctor evaluates, through the stand-in's POST /iam/simulate, every call envdr run makes as
// the daemon role: the rendered policy passes; without sqs:GetQueueAttributes (the old
// generators' daemon policy) it fails, naming the action and the queue.
func TestDoctorChecksDaemonPermissions(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	rep, err := recovery.Doctor(ctx, f.as(t, iam.RoleOperator), recovery.DoctorOptions{Regions: fastRegions})
	require.NoError(t, err)
	for _, r := range f.env.Regions {
		c := find(rep, recovery.CheckDaemonPermissions, r)
		require.NotEmpty(t, c, r)
		require.Equal(t, recovery.StatusPass, c[0].Status, "%+v", c[0])
	}

	docs, err := policy.Render(f.cfg, policy.Options{})
	require.NoError(t, err)
	for _, d := range docs {
		if d.Name != policy.DaemonPolicy {
			continue
		}
		var kept []policy.Statement
		for _, s := range d.Doc.Statement {
			var keep policy.Strings
			for _, a := range s.Action {
				if a != "sqs:GetQueueAttributes" {
					keep = append(keep, a)
				}
			}
			// A statement left with no action goes: IAM refuses one without Action.
			if len(keep) > 0 {
				s.Action = keep
				kept = append(kept, s)
			}
		}
		d.Doc.Statement = kept
		require.NoError(t, f.env.IAM.SetPolicy(iam.RoleDaemon, d.Doc))
	}
	rep, err = recovery.Doctor(ctx, f.as(t, iam.RoleOperator), recovery.DoctorOptions{Regions: fastRegions})
	require.NoError(t, err)
	require.False(t, rep.Passed())
	c := failing(rep, recovery.CheckDaemonPermissions, "us-east-1")
	require.NotNil(t, c)
	require.Contains(t, c.Detail, "sqs:GetQueueAttributes on arn:aws:sqs:us-east-1:")
	require.Contains(t, c.Fix, "iam-daemon.json")
}
