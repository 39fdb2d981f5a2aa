package localaws_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/policy"
)

// Every key of a localtest Env (as of `make local-up`) carries the key policy `envdr policy
// render` generates for it: the multi-Region key's primary and replicas the config's, each
// independent key the one a config in independent mode renders.
func TestKeysCarryTheRenderedKeyPolicies(t *testing.T) {
	t.Parallel()
	k := newKeyTest(t, "us-east-1", mrkKey)
	env, ctx := k.env, k.ctx
	want, err := localaws.RenderedKeyPolicies(env.Config, env.Keys)
	require.NoError(t, err)
	for _, r := range env.Regions {
		c := kms.NewFromConfig(env.AWSConfig(r))
		for _, arn := range []string{env.Keys[r].MRK, env.Keys[r].Independent} {
			got, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(arn)})
			require.NoError(t, err, "%s %s", r, arn)
			require.NotNil(t, want[arn], arn)
			require.JSONEq(t, string(want[arn].JSON()), aws.ToString(got.Policy), "%s %s", r, arn)
		}
	}
	// The independent keys' policy is the independent mode's: the daemon re-encrypts inside KMS
	// only with a multi-Region key.
	daemonActions := func(d *policy.Document) policy.Strings {
		for _, s := range d.Statement {
			if s.Sid == "DaemonWrapAndVerify" {
				return s.Action
			}
		}
		return nil
	}
	require.Equal(t, policy.Strings{"kms:Decrypt", "kms:Encrypt"}, daemonActions(want[env.Keys["eu-west-1"].Independent]))
	require.Contains(t, daemonActions(want[env.Keys["eu-west-1"].MRK]), "kms:ReEncryptFrom")
}

// Every role render produces an IAM policy for becomes a stand-in role with a profile.
func TestRoleOf(t *testing.T) {
	for doc, role := range map[string]string{
		policy.DaemonPolicy: iam.RoleDaemon, policy.RewrapPolicy: iam.RoleRewrap, "iam-gameday.json": "envdr-gameday",
	} {
		got, ok := localaws.RoleOf(doc)
		require.True(t, ok, doc)
		require.Equal(t, role, got)
	}
	for _, doc := range []string{"kms-key-policy.us-east-1.json", "iam-daemon.yaml"} {
		_, ok := localaws.RoleOf(doc)
		require.False(t, ok, doc)
	}
	id := iam.NewIdentity("envdr-a-role-with-a-long-name")
	require.Len(t, id.AccessKey, 20)
	require.NotEqual(t, id.AccessKey, iam.NewIdentity("envdr-a-role-with-a-longer-name").AccessKey)
}

// An identity policy alone cannot open a key: the rendered key policy delegates to the account
// (arn:aws:iam::ACCOUNT:root) only the key administration actions, so a role whose IAM policy
// allows kms:Decrypt, but which the key policy does not name, is denied; under KMS's default key
// policy (root: kms:*) the same IAM policy suffices. ("Key policies in AWS KMS": "Unless the key
// policy explicitly allows it, you cannot use IAM policies to allow access to a KMS key",
// https://docs.aws.amazon.com/kms/latest/developerguide/key-policies.html.)
func TestIAMAllowWithoutKeyPolicyDelegationIsDenied(t *testing.T) {
	t.Parallel()
	k := newKeyTest(t, "eu-west-1", mrkKey)
	env, ctx, key := k.env, k.ctx, k.key
	blob := k.encrypt(t)
	allow, err := policy.Parse([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Decrypt","kms:DescribeKey"],"Resource":"*"}]}`))
	require.NoError(t, err)
	require.NoError(t, env.IAM.SetPolicy(iam.RoleNobody, allow))
	nobody := k.kmsAs(iam.RoleNobody)

	_, err = nobody.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(key), EncryptionContext: encCtx})
	requireDenied(t, err, "AccessDeniedException", iam.RoleNobody, "kms:Decrypt", key)
	require.Contains(t, requireCode(t, err, "AccessDeniedException").ErrorMessage(), "because no resource-based policy allows the kms:Decrypt action")
	// DescribeKey is a key administration action the rendered policy delegates to IAM.
	_, err = nobody.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key)})
	require.NoError(t, err)

	_, err = k.admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(key), Policy: aws.String(
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`)})
	require.NoError(t, err)
	_, err = nobody.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(key), EncryptionContext: encCtx})
	require.NoError(t, err, "the default key policy delegates kms:Decrypt to IAM")
}

// withStatements is the region's rendered key policy with extra statements appended.
func withStatements(t *testing.T, k *keyTest, extra ...policy.Statement) string {
	t.Helper()
	docs, err := localaws.RenderedKeyPolicies(k.env.Config, k.env.Keys)
	require.NoError(t, err)
	d := *docs[k.key]
	d.Statement = append(append([]policy.Statement(nil), d.Statement...), extra...)
	return string(d.JSON())
}

// A key policy Deny with NotPrincipal applies to every principal it does not spare
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notprincipal.html):
// the daemon, allowed by the rendered policy, loses Decrypt; the operator, spared, keeps it.
func TestKeyPolicyDenyWithNotPrincipal(t *testing.T) {
	t.Parallel()
	k := newKeyTest(t, "us-east-1", mrkKey)
	ctx, key := k.ctx, k.key
	blob := k.encrypt(t)
	operator, _ := k.env.IAM.Identity(iam.RoleOperator)
	kp := withStatements(t, k, policy.Statement{
		Sid: "OnlyTheOperatorDecrypts", Effect: "Deny",
		NotPrincipal: policy.AWS("arn:aws:iam::"+iam.Account+":root", operator.ARN()),
		Action:       policy.Strings{"kms:Decrypt"}, Resource: policy.Strings{"*"},
	})
	_, err := k.admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(key), Policy: aws.String(kp)})
	require.NoError(t, err)

	_, err = k.kmsAs(iam.RoleDaemon).Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(key), EncryptionContext: encCtx})
	requireDenied(t, err, "AccessDeniedException", iam.RoleDaemon, "kms:Decrypt", key)
	require.Contains(t, requireCode(t, err, "AccessDeniedException").ErrorMessage(), "with an explicit deny in a resource-based policy")
	_, err = k.kmsAs(iam.RoleOperator).Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(key), EncryptionContext: encCtx})
	require.NoError(t, err, "NotPrincipal spares the operator")
	_, err = k.kmsAs(iam.RoleDaemon).Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("x"), EncryptionContext: encCtx})
	require.NoError(t, err, "the Deny is for Decrypt only")
}

// A key policy Deny with a Date condition applies while aws:CurrentTime satisfies it, and not
// otherwise ("Date condition operators",
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_Date).
func TestKeyPolicyDenyWithDateCondition(t *testing.T) {
	t.Parallel()
	k := newKeyTest(t, "ap-southeast-2", mrkKey)
	ctx, key := k.ctx, k.key
	producer := k.kmsAs(iam.RoleProducer)
	gdk := func() error {
		_, err := producer.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32), EncryptionContext: encCtx})
		return err
	}
	require.NoError(t, gdk())
	past, future := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	deny := func(op, when string) string {
		return withStatements(t, k, policy.Statement{
			Sid: "Freeze", Effect: "Deny", Principal: policy.AWS("*"),
			Action: policy.Strings{"kms:GenerateDataKey"}, Resource: policy.Strings{"*"},
			Condition: policy.Conditions{op: {"aws:CurrentTime": {when}}},
		})
	}
	for _, c := range []struct {
		op, when string
		denied   bool
	}{
		{"DateGreaterThan", past, true},    // frozen since an hour ago
		{"DateLessThan", future, true},     // frozen for another hour
		{"DateGreaterThan", future, false}, // not frozen yet
		{"DateLessThan", past, false},      // frozen until an hour ago
	} {
		_, err := k.admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(key), Policy: aws.String(deny(c.op, c.when))})
		require.NoError(t, err)
		err = gdk()
		if !c.denied {
			require.NoError(t, err, "%s %s", c.op, c.when)
			continue
		}
		requireDenied(t, err, "AccessDeniedException", iam.RoleProducer, "kms:GenerateDataKey", key)
		require.Contains(t, requireCode(t, err, "AccessDeniedException").ErrorMessage(), "explicit deny", "%s %s", c.op, c.when)
	}
}

// A key policy the stand-in could not evaluate exactly is refused, naming the operator, instead
// of a Deny that would silently never apply.
func TestKeyPolicyWithUnsupportedOperatorIsRefused(t *testing.T) {
	t.Parallel()
	k := newKeyTest(t, "us-east-1", independentKey)
	kp := withStatements(t, k, policy.Statement{
		Effect: "Deny", Principal: policy.AWS("*"), Action: policy.Strings{"kms:Decrypt"}, Resource: policy.Strings{"*"},
		Condition: policy.Conditions{"BinaryEquals": {"aws:SourceIp": {"AA=="}}},
	})
	_, err := k.admin.PutKeyPolicy(k.ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(k.key), Policy: aws.String(kp)})
	require.Contains(t, requireCode(t, err, "MalformedPolicyDocumentException").ErrorMessage(), `"BinaryEquals"`)
}

// tamper changes the body of every request after the SDK signed it, as a man in the middle
// would.
type tamper struct{ from, to []byte }

func (tp tamper) RoundTrip(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	b = bytes.ReplaceAll(b, tp.from, tp.to)
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	return http.DefaultTransport.RoundTrip(r)
}

// KMS signs its body: a request signed over UNSIGNED-PAYLOAD (which only S3 accepts), or whose
// body was altered after signing, is InvalidSignatureException
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html,
// https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html).
func TestKMSRefusesUnsignedOrAlteredBody(t *testing.T) {
	t.Parallel()
	k := newKeyTest(t, "eu-west-1", mrkKey)
	ctx, key := k.ctx, k.key
	cfg := k.env.AWSConfigAs(k.region, iam.RoleProducer)
	cfg.RetryMaxAttempts = 1
	in := &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32), EncryptionContext: map[string]string{"envdr:id": "env-1"}}

	unsigned := kms.NewFromConfig(cfg, func(o *kms.Options) {
		o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
	})
	_, err := unsigned.GenerateDataKey(ctx, in)
	require.Contains(t, requireCode(t, err, "InvalidSignatureException").ErrorMessage(), "signature we calculated does not match")

	altered := kms.NewFromConfig(cfg, func(o *kms.Options) {
		o.HTTPClient = &http.Client{Transport: tamper{from: []byte(`"env-1"`), to: []byte(`"env-2"`)}}
	})
	_, err = altered.GenerateDataKey(ctx, in)
	require.Contains(t, requireCode(t, err, "InvalidSignatureException").ErrorMessage(), "signature we calculated does not match")

	// The same request, signed and sent as is, is accepted.
	_, err = kms.NewFromConfig(cfg).GenerateDataKey(ctx, in)
	require.NoError(t, err)
}
