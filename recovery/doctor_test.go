package recovery_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/policy"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
)

// find returns the checks of one name in one region.
func find(rep *recovery.DoctorReport, check, region string) []recovery.Check {
	var out []recovery.Check
	for _, c := range rep.Checks {
		if c.Check == check && c.Region == region {
			out = append(out, c)
		}
	}
	return out
}

func failing(rep *recovery.DoctorReport, check, region string) *recovery.Check {
	for _, c := range find(rep, check, region) {
		if c.Status == recovery.StatusFail {
			return &c
		}
	}
	return nil
}

// A sound setup passes; then a disabled replica, a missing replica, rotation off and a key
// policy open to "*" are each found, with the fix.
func TestDoctor(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	kc := func(region string) *kms.Client {
		r, err := f.topo.Region(region)
		require.NoError(t, err)
		return r.KMS()
	}
	// Make the setup sound: envdr's rendered key policies, rotation on.
	docs, err := policy.Render(f.cfg, policy.Options{})
	require.NoError(t, err)
	for _, d := range docs {
		if !strings.HasPrefix(d.Name, policy.KeyPolicyPrefix) {
			continue
		}
		region := strings.TrimSuffix(strings.TrimPrefix(d.Name, policy.KeyPolicyPrefix), ".json")
		_, err := kc(region).PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(f.env.Keys[region].MRK),
			PolicyName: aws.String("default"), Policy: aws.String(string(d.Doc.JSON()))})
		require.NoError(t, err)
	}
	primary := f.env.Keys["us-east-1"].MRK
	_, err = kc("us-east-1").EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String(primary)})
	require.NoError(t, err)

	rep, err := recovery.Doctor(ctx, f.as(t, iam.RoleOperator), recovery.DoctorOptions{Regions: fastRegions})
	require.NoError(t, err)
	for _, c := range rep.Checks {
		require.NotEqual(t, recovery.StatusFail, c.Status, "%+v", c)
	}
	require.True(t, rep.Passed())
	for _, region := range f.env.Regions {
		for _, check := range []string{recovery.CheckReachable, recovery.CheckKey, recovery.CheckRotation, recovery.CheckReplica, recovery.CheckPolicy, recovery.CheckTable} {
			require.NotEmpty(t, find(rep, check, region), "%s %s", check, region)
		}
	}
	require.NotEmpty(t, find(rep, recovery.CheckQueue, "us-east-1"))
	require.NotEmpty(t, find(rep, recovery.CheckDLQ, "us-east-1"))

	// Break it four ways. (The broken key policy keeps the account root's statement: the stand-in
	// evaluates key policies, and without it the doctor itself could no longer read the key.)
	_, err = kc("eu-west-1").DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(f.env.Keys["eu-west-1"].MRK)})
	require.NoError(t, err)
	_, err = kc("us-east-1").DisableKeyRotation(ctx, &kms.DisableKeyRotationInput{KeyId: aws.String(primary)})
	require.NoError(t, err)
	_, err = kc("ap-southeast-2").PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(f.env.Keys["ap-southeast-2"].MRK),
		PolicyName: aws.String("default"), Policy: aws.String(`{"Version":"2012-10-17","Id":"envdr-open","Statement":[
		{"Sid":"Admin","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},
		{"Sid":"Open","Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"}]}`)})
	require.NoError(t, err)
	// A fourth region configured in mrk mode whose replica was never made.
	const west = "us-west-2"
	srv := httptest.NewServer(f.env.KMS.Handler(west))
	t.Cleanup(srv.Close)
	replicaARN, err := regions.ReplicaARN(primary, west)
	require.NoError(t, err)
	cfg := *f.cfg
	cfg.Regions = append(append([]config.Region(nil), f.cfg.Regions...), config.Region{Name: west, Key: replicaARN, Mode: config.ModeMRK,
		KMSRate: 1000, Endpoints: config.Endpoints{KMS: srv.URL, DynamoDB: f.env.Backends.DynamoDB, SQS: f.env.Backends.SQS}})
	require.NoError(t, cfg.Validate())

	rep, err = recovery.Doctor(ctx, &cfg, recovery.DoctorOptions{Regions: fastRegions})
	require.NoError(t, err)
	require.False(t, rep.Passed())

	disabled := failing(rep, recovery.CheckKey, "eu-west-1")
	require.NotNil(t, disabled, "disabled replica")
	require.Contains(t, disabled.Detail, "Disabled")
	require.Contains(t, disabled.Fix, "aws kms enable-key --region eu-west-1 --key-id "+f.env.Keys["eu-west-1"].MRK)

	missing := failing(rep, recovery.CheckReplica, west)
	require.NotNil(t, missing, "missing replica")
	require.Contains(t, missing.Fix, "aws kms replicate-key --region us-east-1 --key-id "+primary+" --replica-region "+west)
	require.NotNil(t, failing(rep, recovery.CheckKey, west))

	for _, region := range f.env.Regions {
		rot := failing(rep, recovery.CheckRotation, region)
		require.NotNil(t, rot, "rotation off in %s", region)
		require.Contains(t, rot.Fix, "aws kms enable-key-rotation --region us-east-1 --key-id "+primary)
	}

	broad := failing(rep, recovery.CheckPolicy, "ap-southeast-2")
	require.NotNil(t, broad, "too broad key policy")
	var rules []string
	for _, c := range find(rep, recovery.CheckPolicy, "ap-southeast-2") {
		if c.Status == recovery.StatusFail {
			rules = append(rules, strings.SplitN(c.Detail, " ", 2)[0])
			require.NotEmpty(t, c.Fix)
		}
	}
	require.Contains(t, rules, policy.RuleWildcardPrincipal)
	require.Contains(t, rules, policy.RuleNoContext)
	require.Contains(t, rules, policy.RuleReplicaDiverges)
	require.Nil(t, failing(rep, recovery.CheckPolicy, "us-east-1"), "the primary's policy is still sound")
}
