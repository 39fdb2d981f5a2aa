package localaws_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/localtest"
)

// requireCode requires err to be an AWS API error with code, and returns it.
func requireCode(t *testing.T, err error, code string) smithy.APIError {
	t.Helper()
	var ae smithy.APIError
	require.True(t, errors.As(err, &ae), "want an API error, got %v", err)
	require.Equal(t, code, ae.ErrorCode(), err.Error())
	return ae
}

// requireDenied checks an AWS access denial: the service's code, and a message naming the
// principal, the action and the resource, as AWS's do.
func requireDenied(t *testing.T, err error, code, role, action, resource string) {
	t.Helper()
	msg := requireCode(t, err, code).ErrorMessage()
	require.Contains(t, msg, "User: arn:aws:sts::"+iam.Account+":assumed-role/"+role+"/")
	require.Contains(t, msg, "is not authorized to perform: "+action+" on resource: "+resource)
}

// keyTest is where the authorization tests start: a test's own stand-in, a context for its
// calls, and one region's key with that region's KMS as the admin (allowed everything).
type keyTest struct {
	env    *localtest.Env
	ctx    context.Context
	region string
	key    string
	admin  *kms.Client
}

// newKeyTest starts a stand-in for t with region's key that pick picks (mrkKey, independentKey).
func newKeyTest(t *testing.T, region string, pick func(localaws.RegionKeys) string) *keyTest {
	t.Helper()
	env := localtest.New(t)
	return &keyTest{env: env, ctx: ctxT(t), region: region, key: pick(env.Keys[region]),
		admin: kms.NewFromConfig(env.AWSConfig(region))}
}

func mrkKey(k localaws.RegionKeys) string         { return k.MRK }
func independentKey(k localaws.RegionKeys) string { return k.Independent }

// kmsAs is the region's KMS signed as role.
func (k *keyTest) kmsAs(role string) *kms.Client {
	return kms.NewFromConfig(k.env.AWSConfigAs(k.region, role))
}

// encrypt returns "x" encrypted under the key by the daemon, with encCtx: the rendered key
// policy names the daemon for Encrypt (the admin manages keys but cannot use them).
func (k *keyTest) encrypt(t *testing.T) []byte {
	t.Helper()
	enc, err := k.kmsAs(iam.RoleDaemon).Encrypt(k.ctx, &kms.EncryptInput{KeyId: aws.String(k.key), Plaintext: []byte("x"), EncryptionContext: encCtx})
	require.NoError(t, err)
	return enc.CiphertextBlob
}
