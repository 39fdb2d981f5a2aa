package kms

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/stretchr/testify/require"
)

// cryptoCalls runs every cryptographic operation against keyID and returns their errors.
func cryptoCalls(t *testing.T, c *awskms.Client, keyID *string, blob []byte) map[string]error {
	t.Helper()
	out := map[string]error{}
	_, out["Encrypt"] = c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: keyID, Plaintext: []byte("p")})
	_, out["GenerateDataKey"] = c.GenerateDataKey(ctx(t), &awskms.GenerateDataKeyInput{KeyId: keyID, KeySpec: types.DataKeySpecAes256})
	_, out["GenerateDataKeyWithoutPlaintext"] = c.GenerateDataKeyWithoutPlaintext(ctx(t), &awskms.GenerateDataKeyWithoutPlaintextInput{KeyId: keyID, KeySpec: types.DataKeySpecAes256})
	_, out["Decrypt"] = c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: blob})
	_, out["ReEncrypt"] = c.ReEncrypt(ctx(t), &awskms.ReEncryptInput{CiphertextBlob: blob, DestinationKeyId: keyID})
	return out
}

// KMS developer guide, "Key states of KMS keys": cryptographic operations on a
// Disabled key fail with DisabledException; EnableKey makes it usable again.
func TestDisabledKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	enc, err := c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("p")})
	require.NoError(t, err)
	_, err = c.DisableKey(ctx(t), &awskms.DisableKeyInput{KeyId: k.KeyId})
	require.NoError(t, err)
	d, err := c.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.Equal(t, types.KeyStateDisabled, d.KeyMetadata.KeyState)
	require.False(t, d.KeyMetadata.Enabled)
	for op, err := range cryptoCalls(t, c, k.KeyId, enc.CiphertextBlob) {
		require.Error(t, err, op)
		requireAPIError[*types.DisabledException](t, err)
	}
	_, err = c.EnableKey(ctx(t), &awskms.EnableKeyInput{KeyId: k.Arn})
	require.NoError(t, err)
	for op, err := range cryptoCalls(t, c, k.KeyId, enc.CiphertextBlob) {
		require.NoError(t, err, op)
	}
	// A disabled replica does not affect its primary: key state is per key.
	p := b.mrk(t)
	_, err = b.c("eu-west-1").DisableKey(ctx(t), &awskms.DisableKeyInput{KeyId: p.KeyId})
	require.NoError(t, err)
	_, err = b.c("eu-west-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: p.KeyId, Plaintext: []byte("p")})
	requireAPIError[*types.DisabledException](t, err)
	_, err = b.c("us-east-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: p.KeyId, Plaintext: []byte("p")})
	require.NoError(t, err)
}

// KMS API Reference, ScheduleKeyDeletion and CancelKeyDeletion: the window is
// 7–30 days (default 30); a key pending deletion cannot be used
// (KMSInvalidStateException) and cancelling leaves it Disabled.
func TestScheduleAndCancelDeletion(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	enc, err := c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("p")})
	require.NoError(t, err)

	for _, days := range []int32{6, 31} {
		_, err := c.ScheduleKeyDeletion(ctx(t), &awskms.ScheduleKeyDeletionInput{KeyId: k.KeyId, PendingWindowInDays: aws.Int32(days)})
		requireCode(t, err, "ValidationException")
	}
	_, err = c.CancelKeyDeletion(ctx(t), &awskms.CancelKeyDeletionInput{KeyId: k.KeyId})
	requireAPIError[*types.KMSInvalidStateException](t, err)

	before := time.Now()
	out, err := c.ScheduleKeyDeletion(ctx(t), &awskms.ScheduleKeyDeletionInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.Equal(t, *k.Arn, *out.KeyId)
	require.Equal(t, types.KeyStatePendingDeletion, out.KeyState)
	require.Equal(t, int32(30), *out.PendingWindowInDays)
	require.WithinDuration(t, before.AddDate(0, 0, 30), *out.DeletionDate, time.Minute)

	d, err := c.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.Equal(t, types.KeyStatePendingDeletion, d.KeyMetadata.KeyState)
	require.Equal(t, *out.DeletionDate, *d.KeyMetadata.DeletionDate)
	// PendingDeletionWindowInDays is "present only when the KeyState of the KMS key is
	// PendingReplicaDeletion" (https://docs.aws.amazon.com/kms/latest/APIReference/API_KeyMetadata.html).
	require.Nil(t, d.KeyMetadata.PendingDeletionWindowInDays)

	for op, err := range cryptoCalls(t, c, k.KeyId, enc.CiphertextBlob) {
		require.Error(t, err, op)
		requireAPIError[*types.KMSInvalidStateException](t, err)
	}
	for _, err := range []error{
		func() error { _, err := c.EnableKey(ctx(t), &awskms.EnableKeyInput{KeyId: k.KeyId}); return err }(),
		func() error { _, err := c.DisableKey(ctx(t), &awskms.DisableKeyInput{KeyId: k.KeyId}); return err }(),
		func() error {
			_, err := c.ScheduleKeyDeletion(ctx(t), &awskms.ScheduleKeyDeletionInput{KeyId: k.KeyId, PendingWindowInDays: aws.Int32(7)})
			return err
		}(),
		func() error {
			_, err := c.CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/late"), TargetKeyId: k.KeyId})
			return err
		}(),
		func() error {
			_, err := c.EnableKeyRotation(ctx(t), &awskms.EnableKeyRotationInput{KeyId: k.KeyId})
			return err
		}(),
		func() error {
			_, err := c.RotateKeyOnDemand(ctx(t), &awskms.RotateKeyOnDemandInput{KeyId: k.KeyId})
			return err
		}(),
	} {
		requireAPIError[*types.KMSInvalidStateException](t, err)
	}

	cout, err := c.CancelKeyDeletion(ctx(t), &awskms.CancelKeyDeletionInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.Equal(t, *k.Arn, *cout.KeyId)
	d, err = c.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.Equal(t, types.KeyStateDisabled, d.KeyMetadata.KeyState)
	require.Nil(t, d.KeyMetadata.DeletionDate)
	_, err = c.EnableKey(ctx(t), &awskms.EnableKeyInput{KeyId: k.KeyId})
	require.NoError(t, err)
	_, err = c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	require.NoError(t, err)
}

// KMS API Reference, ScheduleKeyDeletion: "After the waiting period ends, KMS
// deletes the KMS key, its key material, and all KMS data associated with it,
// including all aliases that refer to it."
func TestDeletionCompletesAfterWindow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	_, err := c.CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/doomed"), TargetKeyId: k.KeyId})
	require.NoError(t, err)
	_, err = c.ScheduleKeyDeletion(ctx(t), &awskms.ScheduleKeyDeletionInput{KeyId: k.KeyId, PendingWindowInDays: aws.Int32(7)})
	require.NoError(t, err)

	b.svc.skew.Store(int64(6 * 24 * time.Hour))
	_, err = c.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: k.KeyId})
	require.NoError(t, err)

	b.svc.skew.Store(int64(7*24*time.Hour + time.Minute))
	_, err = c.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: k.KeyId})
	requireAPIError[*types.NotFoundException](t, err)
	_, err = c.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: aws.String("alias/doomed")})
	requireAPIError[*types.NotFoundException](t, err)
	keys, err := c.ListKeys(ctx(t), &awskms.ListKeysInput{})
	require.NoError(t, err)
	require.Empty(t, keys.Keys)
}

// KMS API Reference, ScheduleKeyDeletion: a primary with replicas goes to
// PendingReplicaDeletion; its own waiting period begins when the last replica
// is deleted.
func TestPrimaryWaitsForReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.mrk(t)
	out, err := b.c("us-east-1").ScheduleKeyDeletion(ctx(t), &awskms.ScheduleKeyDeletionInput{KeyId: p.KeyId, PendingWindowInDays: aws.Int32(7)})
	require.NoError(t, err)
	require.Equal(t, types.KeyStatePendingReplicaDeletion, out.KeyState)
	require.Nil(t, out.DeletionDate)
	// Shown only in this state (https://docs.aws.amazon.com/kms/latest/APIReference/API_KeyMetadata.html).
	pd, err := b.c("us-east-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
	require.NoError(t, err)
	require.Equal(t, int32(7), aws.ToInt32(pd.KeyMetadata.PendingDeletionWindowInDays))
	_, err = b.c("us-east-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: p.KeyId, Plaintext: []byte("p")})
	requireAPIError[*types.KMSInvalidStateException](t, err)

	for _, r := range []string{"eu-west-1", "ap-southeast-2"} {
		_, err := b.c(r).ScheduleKeyDeletion(ctx(t), &awskms.ScheduleKeyDeletionInput{KeyId: p.KeyId, PendingWindowInDays: aws.Int32(7)})
		require.NoError(t, err)
	}
	b.svc.skew.Store(int64(8 * 24 * time.Hour))
	d, err := b.c("us-east-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
	require.NoError(t, err)
	require.Equal(t, types.KeyStatePendingDeletion, d.KeyMetadata.KeyState)
	require.Empty(t, d.KeyMetadata.MultiRegionConfiguration.ReplicaKeys)
	require.NotNil(t, d.KeyMetadata.DeletionDate)
	_, err = b.c("eu-west-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
	requireAPIError[*types.NotFoundException](t, err)

	b.svc.skew.Store(int64(16 * 24 * time.Hour))
	_, err = b.c("us-east-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
	requireAPIError[*types.NotFoundException](t, err)
}

// KMS API Reference, common errors: an unknown key is NotFoundException, and
// so is a key ARN naming another Region ("Invalid arn <region>"): each
// Region's endpoint knows only its own keys.
func TestNotFoundAndForeignRegionArn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	p := b.mrk(t)
	c := b.c("eu-west-1")
	for _, id := range []string{
		"1234abcd-12ab-34cd-56ef-1234567890ab",
		"not-a-key-id",
		*k.KeyId, // exists in us-east-1 only
		*k.Arn,
		*p.Arn, // the related replica in eu-west-1 exists, but this ARN names us-east-1
		"arn:aws:kms:eu-west-1:999999999999:key/" + *k.KeyId,
		"alias/missing",
		"arn:aws:kms:eu-west-1:111122223333:alias/missing",
	} {
		_, err := c.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: aws.String(id)})
		requireAPIError[*types.NotFoundException](t, err)
		_, err = c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("p")})
		requireAPIError[*types.NotFoundException](t, err)
	}
	// Management operations take a key ID or key ARN, not an alias.
	_, err := b.c("us-east-1").CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/k"), TargetKeyId: k.KeyId})
	require.NoError(t, err)
	_, err = b.c("us-east-1").DisableKey(ctx(t), &awskms.DisableKeyInput{KeyId: aws.String("alias/k")})
	requireAPIError[*types.NotFoundException](t, err)
}

// KMS developer guide, "Regions": keys, aliases and key state belong to one
// Region; the same alias name in two Regions names two different keys.
func TestRegionsAreSeparate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := map[string]string{}
	for _, r := range testRegions {
		k := b.createKey(t, r, false)
		ids[r] = *k.KeyId
		_, err := b.c(r).CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/envdr"), TargetKeyId: k.KeyId})
		require.NoError(t, err)
	}
	for _, r := range testRegions {
		d, err := b.c(r).DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: aws.String("alias/envdr")})
		require.NoError(t, err)
		require.Equal(t, ids[r], *d.KeyMetadata.KeyId)
		keys, err := b.c(r).ListKeys(ctx(t), &awskms.ListKeysInput{})
		require.NoError(t, err)
		require.Len(t, keys.Keys, 1)
		require.Equal(t, ids[r], *keys.Keys[0].KeyId)
	}
	// Disabling a key in one Region leaves the others alone.
	_, err := b.c("eu-west-1").DisableKey(ctx(t), &awskms.DisableKeyInput{KeyId: aws.String(ids["eu-west-1"])})
	require.NoError(t, err)
	_, err = b.c("us-east-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: aws.String("alias/envdr"), Plaintext: []byte("p")})
	require.NoError(t, err)
	_, err = b.c("eu-west-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: aws.String("alias/envdr"), Plaintext: []byte("p")})
	requireAPIError[*types.DisabledException](t, err)
}
