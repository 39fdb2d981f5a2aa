package kms

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"
)

// ReplicateKey: "the replica key is in the Creating state until the replication completes"
// and a Creating key cannot be used
// (https://docs.aws.amazon.com/kms/latest/APIReference/API_ReplicateKey.html,
// https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html).
func TestReplicaIsCreatingForAWhile(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{creating: 300 * time.Millisecond})
	p, err := b.c("us-east-1").CreateKey(ctx(t), &awskms.CreateKeyInput{MultiRegion: aws.Bool(true)})
	require.NoError(t, err)
	out, err := b.c("us-east-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p.KeyMetadata.KeyId, ReplicaRegion: aws.String("eu-west-1")})
	require.NoError(t, err)
	require.Equal(t, types.KeyStateCreating, out.ReplicaKeyMetadata.KeyState)
	_, err = b.c("eu-west-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: out.ReplicaKeyMetadata.Arn, Plaintext: []byte("p")})
	requireAPIError[*types.KMSInvalidStateException](t, err)
	_, err = b.c("eu-west-1").DisableKey(ctx(t), &awskms.DisableKeyInput{KeyId: out.ReplicaKeyMetadata.Arn})
	requireAPIError[*types.KMSInvalidStateException](t, err)

	require.Eventually(t, func() bool {
		d, err := b.c("eu-west-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: out.ReplicaKeyMetadata.Arn})
		return err == nil && d.KeyMetadata.KeyState == types.KeyStateEnabled
	}, 5*time.Second, 20*time.Millisecond)
	_, err = b.c("eu-west-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: out.ReplicaKeyMetadata.Arn, Plaintext: []byte("p")})
	require.NoError(t, err)
}

// UpdatePrimaryRegion: both keys must be Enabled, and both are Updating until the change is
// done; Updating keys still encrypt and decrypt
// (https://docs.aws.amazon.com/kms/latest/APIReference/API_UpdatePrimaryRegion.html).
func TestUpdatePrimaryRegionNeedsEnabledKeysAndUpdates(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{updating: 300 * time.Millisecond})
	p := b.mrk(t)
	_, err := b.c("eu-west-1").DisableKey(ctx(t), &awskms.DisableKeyInput{KeyId: p.KeyId})
	require.NoError(t, err)
	_, err = b.c("us-east-1").UpdatePrimaryRegion(ctx(t), &awskms.UpdatePrimaryRegionInput{KeyId: p.KeyId, PrimaryRegion: aws.String("eu-west-1")})
	requireAPIError[*types.DisabledException](t, err)
	_, err = b.c("eu-west-1").EnableKey(ctx(t), &awskms.EnableKeyInput{KeyId: p.KeyId})
	require.NoError(t, err)

	_, err = b.c("us-east-1").UpdatePrimaryRegion(ctx(t), &awskms.UpdatePrimaryRegionInput{KeyId: p.KeyId, PrimaryRegion: aws.String("eu-west-1")})
	require.NoError(t, err)
	for _, r := range []string{"us-east-1", "eu-west-1"} {
		d, err := b.c(r).DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
		require.NoError(t, err)
		require.Equal(t, types.KeyStateUpdating, d.KeyMetadata.KeyState, r)
		_, err = b.c(r).Encrypt(ctx(t), &awskms.EncryptInput{KeyId: p.KeyId, Plaintext: []byte("p")})
		require.NoError(t, err, "an Updating key still encrypts")
	}
	_, err = b.c("eu-west-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p.KeyId, ReplicaRegion: aws.String("ap-southeast-2")})
	require.Error(t, err)
	require.Eventually(t, func() bool {
		d, err := b.c("eu-west-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
		return err == nil && d.KeyMetadata.KeyState == types.KeyStateEnabled &&
			d.KeyMetadata.MultiRegionConfiguration.MultiRegionKeyType == types.MultiRegionKeyTypePrimary
	}, 5*time.Second, 20*time.Millisecond)
}

// Request quotas are per class: the cryptographic operations share one, the management
// operations have their own; the ThrottlingException message is KMS's
// (https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html,
// https://docs.aws.amazon.com/kms/latest/developerguide/throttling.html).
func TestQuotaClasses(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{noRetry: true})
	k := b.createKey(t, "us-east-1", false)
	b.svc.SetClassRateLimit("us-east-1", ClassCryptographic, 0.01)
	_, err := b.c("us-east-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("p")})
	require.NoError(t, err)
	// Decrypt and GenerateDataKey share Encrypt's (spent) quota...
	_, err = b.c("us-east-1").GenerateDataKey(ctx(t), &awskms.GenerateDataKeyInput{KeyId: k.KeyId, NumberOfBytes: aws.Int32(32)})
	requireCode(t, err, "ThrottlingException")
	var ae smithy.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, ThrottleMessage, ae.ErrorMessage())
	// ... and management operations are not counted against it.
	for i := 0; i < 5; i++ {
		_, err = b.c("us-east-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: k.KeyId})
		require.NoError(t, err)
	}
	b.svc.SetClassRateLimit("us-east-1", ClassManagement, 0.01)
	_, err = b.c("us-east-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: k.KeyId})
	require.NoError(t, err)
	_, err = b.c("us-east-1").ListKeys(ctx(t), &awskms.ListKeysInput{})
	requireCode(t, err, "ThrottlingException")
}
