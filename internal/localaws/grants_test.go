package localaws_test

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/policy"
)

// Grants, as https://docs.aws.amazon.com/kms/latest/developerguide/grants.html and the API
// reference pages of CreateGrant, ListGrants, ListRetirableGrants, RetireGrant and RevokeGrant
// describe them: a grant lets its grantee perform its operations on the key, within its
// encryption-context constraint, unless a policy explicitly denies it; the retiring principal
// retires it, a key user with kms:RevokeGrant revokes it.
func TestGrantsAllowWithinConstraints(t *testing.T) {
	t.Parallel()
	k := newKeyTest(t, "eu-west-1", mrkKey)
	env, ctx, key, admin := k.env, k.ctx, k.key, k.admin
	// The rendered key policy lets no one create grants (envdr uses none): this test's key
	// goes back to KMS's default policy, which delegates every action to IAM (the admin's).
	_, err := admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(key), Policy: aws.String(
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`)})
	require.NoError(t, err)
	nobody := k.kmsAs(iam.RoleNobody)
	operatorID, _ := env.IAM.Identity(iam.RoleOperator)
	nobodyID, _ := env.IAM.Identity(iam.RoleNobody)
	gdk := func(id string) error {
		_, err := nobody.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32),
			EncryptionContext: map[string]string{"envdr:id": id, "app": "x"}})
		return err
	}
	requireDenied(t, gdk("env-1"), "AccessDeniedException", iam.RoleNobody, "kms:GenerateDataKey", key)

	g, err := admin.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(key), GranteePrincipal: aws.String(nobodyID.ARN()),
		RetiringPrincipal: aws.String(operatorID.ARN()), Name: aws.String("envdr-test"),
		Operations:  []kmstypes.GrantOperation{kmstypes.GrantOperationGenerateDataKey, kmstypes.GrantOperationDecrypt},
		Constraints: &kmstypes.GrantConstraints{EncryptionContextSubset: map[string]string{"envdr:id": "env-1"}}})
	require.NoError(t, err)
	require.NoError(t, gdk("env-1"), "the grant allows GenerateDataKey with envdr:id=env-1")
	requireDenied(t, gdk("env-2"), "AccessDeniedException", iam.RoleNobody, "kms:GenerateDataKey", key)
	_, err = nobody.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("x"), EncryptionContext: map[string]string{"envdr:id": "env-1"}})
	requireDenied(t, err, "AccessDeniedException", iam.RoleNobody, "kms:Encrypt", key)
	// A grant token is accepted; an unknown one is refused.
	_, err = nobody.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32),
		EncryptionContext: map[string]string{"envdr:id": "env-1"}, GrantTokens: []string{aws.ToString(g.GrantToken)}})
	require.NoError(t, err)
	_, err = nobody.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32),
		EncryptionContext: map[string]string{"envdr:id": "env-1"}, GrantTokens: []string{"bogus"}})
	var bad *kmstypes.InvalidGrantTokenException
	require.ErrorAs(t, err, &bad)

	// Listed for the key and for the retiring principal; not in another region (grants are
	// per key and Region).
	lg, err := admin.ListGrants(ctx, &kms.ListGrantsInput{KeyId: aws.String(key)})
	require.NoError(t, err)
	require.Len(t, lg.Grants, 1)
	require.Equal(t, aws.ToString(g.GrantId), aws.ToString(lg.Grants[0].GrantId))
	require.Equal(t, "env-1", lg.Grants[0].Constraints.EncryptionContextSubset["envdr:id"])
	lr, err := admin.ListRetirableGrants(ctx, &kms.ListRetirableGrantsInput{RetiringPrincipal: aws.String(operatorID.ARN())})
	require.NoError(t, err)
	require.Len(t, lr.Grants, 1)
	other, err := kms.NewFromConfig(env.AWSConfig("us-east-1")).ListGrants(ctx, &kms.ListGrantsInput{KeyId: aws.String(env.Keys["us-east-1"].MRK)})
	require.NoError(t, err)
	require.Empty(t, other.Grants)

	// An explicit deny beats the grant.
	deny, err := policy.Parse([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:*","Resource":"*"}]}`))
	require.NoError(t, err)
	require.NoError(t, env.IAM.SetPolicy(iam.RoleNobody, deny))
	requireDenied(t, gdk("env-1"), "AccessDeniedException", iam.RoleNobody, "kms:GenerateDataKey", key)
	require.NoError(t, env.IAM.SetPolicy(iam.RoleNobody))

	// The grantee cannot retire it (no RetireGrant in its operations); the retiring principal can.
	_, err = nobody.RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g.GrantToken})
	requireDenied(t, err, "AccessDeniedException", iam.RoleNobody, "kms:RetireGrant", "*")
	_, err = k.kmsAs(iam.RoleOperator).RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g.GrantToken})
	require.NoError(t, err)
	requireDenied(t, gdk("env-1"), "AccessDeniedException", iam.RoleNobody, "kms:GenerateDataKey", key)

	// RevokeGrant by a key administrator.
	g2, err := admin.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(key), GranteePrincipal: aws.String(nobodyID.ARN()),
		Operations: []kmstypes.GrantOperation{kmstypes.GrantOperationGenerateDataKey}})
	require.NoError(t, err)
	require.NoError(t, gdk("any"))
	_, err = admin.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: aws.String(key), GrantId: g2.GrantId})
	require.NoError(t, err)
	requireDenied(t, gdk("any"), "AccessDeniedException", iam.RoleNobody, "kms:GenerateDataKey", key)
	_, err = admin.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: aws.String(key), GrantId: g2.GrantId})
	var badID *kmstypes.InvalidGrantIdException
	require.ErrorAs(t, err, &badID)
}
