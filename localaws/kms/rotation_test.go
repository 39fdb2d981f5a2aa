package kms

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/stretchr/testify/require"
)

// KMS API Reference, EnableKeyRotation / DisableKeyRotation /
// GetKeyRotationStatus: RotationPeriodInDays is 90–2560 (default 365) and is
// reported with the next rotation date while rotation is enabled.
func TestRotationStatus(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	st, err := c.GetKeyRotationStatus(ctx(t), &awskms.GetKeyRotationStatusInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.False(t, st.KeyRotationEnabled)
	require.Equal(t, *k.Arn, *st.KeyId)

	_, err = c.EnableKeyRotation(ctx(t), &awskms.EnableKeyRotationInput{KeyId: k.KeyId})
	require.NoError(t, err)
	st, err = c.GetKeyRotationStatus(ctx(t), &awskms.GetKeyRotationStatusInput{KeyId: k.Arn})
	require.NoError(t, err)
	require.True(t, st.KeyRotationEnabled)
	require.Equal(t, int32(365), *st.RotationPeriodInDays)
	require.WithinDuration(t, time.Now().AddDate(0, 0, 365), *st.NextRotationDate, time.Minute)

	_, err = c.EnableKeyRotation(ctx(t), &awskms.EnableKeyRotationInput{KeyId: k.KeyId, RotationPeriodInDays: aws.Int32(90)})
	require.NoError(t, err)
	st, err = c.GetKeyRotationStatus(ctx(t), &awskms.GetKeyRotationStatusInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.Equal(t, int32(90), *st.RotationPeriodInDays)
	for _, days := range []int32{89, 2561} {
		_, err = c.EnableKeyRotation(ctx(t), &awskms.EnableKeyRotationInput{KeyId: k.KeyId, RotationPeriodInDays: aws.Int32(days)})
		requireCode(t, err, "ValidationException")
	}

	// Pending deletion reads false; cancelling restores it (GetKeyRotationStatus).
	_, err = c.ScheduleKeyDeletion(ctx(t), &awskms.ScheduleKeyDeletionInput{KeyId: k.KeyId, PendingWindowInDays: aws.Int32(7)})
	require.NoError(t, err)
	st, err = c.GetKeyRotationStatus(ctx(t), &awskms.GetKeyRotationStatusInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.False(t, st.KeyRotationEnabled)
	_, err = c.CancelKeyDeletion(ctx(t), &awskms.CancelKeyDeletionInput{KeyId: k.KeyId})
	require.NoError(t, err)
	st, err = c.GetKeyRotationStatus(ctx(t), &awskms.GetKeyRotationStatusInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.True(t, st.KeyRotationEnabled)

	// Disabled: EnableKeyRotation answers DisabledException (key states table).
	_, err = c.EnableKeyRotation(ctx(t), &awskms.EnableKeyRotationInput{KeyId: k.KeyId})
	requireAPIError[*types.DisabledException](t, err)
	_, err = c.EnableKey(ctx(t), &awskms.EnableKeyInput{KeyId: k.KeyId})
	require.NoError(t, err)

	_, err = c.DisableKeyRotation(ctx(t), &awskms.DisableKeyRotationInput{KeyId: k.KeyId})
	require.NoError(t, err)
	st, err = c.GetKeyRotationStatus(ctx(t), &awskms.GetKeyRotationStatusInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.False(t, st.KeyRotationEnabled)
	require.Nil(t, st.NextRotationDate)
}

// KMS API Reference, RotateKeyOnDemand, and developer guide "Rotating keys":
// rotation adds key material; KMS keeps every earlier version so existing
// ciphertexts still decrypt, and new encryptions use the newest material.
func TestRotateOnDemandKeepsOldVersions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	ec := map[string]string{"envdr:id": "rot"}
	var blobs [][]byte
	var materials []string
	for i := 0; i < 4; i++ {
		gd, err := c.GenerateDataKey(ctx(t), &awskms.GenerateDataKeyInput{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
		require.NoError(t, err)
		d, err := c.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: k.KeyId})
		require.NoError(t, err)
		require.Equal(t, *d.KeyMetadata.CurrentKeyMaterialId, *gd.KeyMaterialId, "new encryptions use the newest material")
		require.NotContains(t, materials, *gd.KeyMaterialId)
		blobs = append(blobs, gd.CiphertextBlob)
		materials = append(materials, *gd.KeyMaterialId)
		out, err := c.RotateKeyOnDemand(ctx(t), &awskms.RotateKeyOnDemandInput{KeyId: k.Arn})
		require.NoError(t, err)
		require.Equal(t, *k.KeyId, *out.KeyId)
	}
	for i, blob := range blobs {
		dec, err := c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: blob, EncryptionContext: ec})
		require.NoError(t, err, "version %d", i)
		require.Equal(t, materials[i], *dec.KeyMaterialId)
	}
	st, err := c.GetKeyRotationStatus(ctx(t), &awskms.GetKeyRotationStatusInput{KeyId: k.KeyId})
	require.NoError(t, err)
	// OnDemandRotationStartDate names a rotation in progress and is cleared once it is done
	// (https://docs.aws.amazon.com/kms/latest/APIReference/API_GetKeyRotationStatus.html);
	// the stand-in's rotations are done when RotateKeyOnDemand returns.
	require.Nil(t, st.OnDemandRotationStartDate)

	// ListKeyRotations lists the rotations, newest CURRENT.
	lr, err := c.ListKeyRotations(ctx(t), &awskms.ListKeyRotationsInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.Len(t, lr.Rotations, 4)
	require.Equal(t, types.RotationTypeOnDemand, lr.Rotations[0].RotationType)
	require.Equal(t, types.KeyMaterialStateCurrent, lr.Rotations[3].KeyMaterialState)
	require.Equal(t, materials[1], *lr.Rotations[0].KeyMaterialId)
	all, err := c.ListKeyRotations(ctx(t), &awskms.ListKeyRotationsInput{KeyId: k.KeyId, IncludeKeyMaterial: types.IncludeKeyMaterialAllKeyMaterial, Limit: aws.Int32(2)})
	require.NoError(t, err)
	require.Len(t, all.Rotations, 2)
	require.True(t, all.Truncated)
	require.Equal(t, materials[0], *all.Rotations[0].KeyMaterialId)
	rest, err := c.ListKeyRotations(ctx(t), &awskms.ListKeyRotationsInput{KeyId: k.KeyId, IncludeKeyMaterial: types.IncludeKeyMaterialAllKeyMaterial, Marker: all.NextMarker})
	require.NoError(t, err)
	require.Len(t, rest.Rotations, 3)
	require.False(t, rest.Truncated)
}

// KMS API Reference, RotateKeyOnDemand: at most 25 on-demand rotations per
// key (LimitExceededException); a disabled key cannot be rotated.
func TestRotateOnDemandLimits(t *testing.T) {
	t.Parallel()
	// LimitExceededException is retried by the SDK as throttling; do not wait for it.
	b := setup(t, setupOpts{noRetry: true})
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	for i := 0; i < 25; i++ {
		_, err := c.RotateKeyOnDemand(ctx(t), &awskms.RotateKeyOnDemandInput{KeyId: k.KeyId})
		require.NoError(t, err)
	}
	_, err := c.RotateKeyOnDemand(ctx(t), &awskms.RotateKeyOnDemandInput{KeyId: k.KeyId})
	requireAPIError[*types.LimitExceededException](t, err)

	k2 := b.createKey(t, "us-east-1", false)
	_, err = c.DisableKey(ctx(t), &awskms.DisableKeyInput{KeyId: k2.KeyId})
	require.NoError(t, err)
	_, err = c.RotateKeyOnDemand(ctx(t), &awskms.RotateKeyOnDemandInput{KeyId: k2.KeyId})
	requireAPIError[*types.DisabledException](t, err)
}

// KMS developer guide, "Rotating multi-Region keys": rotation is managed on
// the primary; KMS gives the new material to every replica, so after a
// rotation ciphertexts still cross Regions both ways, and replicas report the
// shared rotation status.
func TestMultiRegionRotationPropagates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.mrk(t)
	ec := map[string]string{"envdr:id": "mrk-rot"}
	old, err := b.c("eu-west-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: p.KeyId, Plaintext: []byte("old"), EncryptionContext: ec})
	require.NoError(t, err)

	_, err = b.c("eu-west-1").RotateKeyOnDemand(ctx(t), &awskms.RotateKeyOnDemandInput{KeyId: p.KeyId})
	requireAPIError[*types.UnsupportedOperationException](t, err)
	_, err = b.c("eu-west-1").EnableKeyRotation(ctx(t), &awskms.EnableKeyRotationInput{KeyId: p.KeyId})
	requireAPIError[*types.UnsupportedOperationException](t, err)

	_, err = b.c("us-east-1").RotateKeyOnDemand(ctx(t), &awskms.RotateKeyOnDemandInput{KeyId: p.KeyId})
	require.NoError(t, err)
	_, err = b.c("us-east-1").EnableKeyRotation(ctx(t), &awskms.EnableKeyRotationInput{KeyId: p.KeyId, RotationPeriodInDays: aws.Int32(180)})
	require.NoError(t, err)

	var current string
	for _, r := range testRegions {
		d, err := b.c(r).DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
		require.NoError(t, err)
		if current == "" {
			current = *d.KeyMetadata.CurrentKeyMaterialId
		}
		require.Equal(t, current, *d.KeyMetadata.CurrentKeyMaterialId, r)
		require.NotEqual(t, *p.CurrentKeyMaterialId, current)
		st, err := b.c(r).GetKeyRotationStatus(ctx(t), &awskms.GetKeyRotationStatusInput{KeyId: p.KeyId})
		require.NoError(t, err)
		require.True(t, st.KeyRotationEnabled, r)
		require.Equal(t, int32(180), *st.RotationPeriodInDays)
	}
	newer, err := b.c("us-east-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: p.KeyId, Plaintext: []byte("new"), EncryptionContext: ec})
	require.NoError(t, err)
	for _, r := range testRegions {
		for _, blob := range [][]byte{old.CiphertextBlob, newer.CiphertextBlob} {
			_, err := b.c(r).Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: blob, EncryptionContext: ec})
			require.NoError(t, err, r)
		}
	}
	// A replica made after a rotation gets every version too.
	q := b.createKey(t, "us-east-1", true)
	first, err := b.c("us-east-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: q.KeyId, Plaintext: []byte("v1")})
	require.NoError(t, err)
	_, err = b.c("us-east-1").RotateKeyOnDemand(ctx(t), &awskms.RotateKeyOnDemandInput{KeyId: q.KeyId})
	require.NoError(t, err)
	_, err = b.c("us-east-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: q.KeyId, ReplicaRegion: aws.String("eu-west-1")})
	require.NoError(t, err)
	dec, err := b.c("eu-west-1").Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: first.CiphertextBlob})
	require.NoError(t, err)
	require.Equal(t, []byte("v1"), dec.Plaintext)
}

// KMS API Reference, EnableKeyRotation: KMS rotates the key material every
// RotationPeriodInDays; the stand-in does so lazily when the date has passed
// (driven here by the service clock), for the primary and its replicas.
func TestAutomaticRotation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.mrk(t)
	c := b.c("us-east-1")
	enc, err := c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: p.KeyId, Plaintext: []byte("p")})
	require.NoError(t, err)
	_, err = c.EnableKeyRotation(ctx(t), &awskms.EnableKeyRotationInput{KeyId: p.KeyId, RotationPeriodInDays: aws.Int32(90)})
	require.NoError(t, err)
	b.svc.skew.Store(int64(91 * 24 * time.Hour))
	for _, r := range testRegions {
		d, err := b.c(r).DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
		require.NoError(t, err)
		require.NotEqual(t, *p.CurrentKeyMaterialId, *d.KeyMetadata.CurrentKeyMaterialId, r)
		_, err = b.c(r).Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
		require.NoError(t, err)
	}
	lr, err := c.ListKeyRotations(ctx(t), &awskms.ListKeyRotationsInput{KeyId: p.KeyId})
	require.NoError(t, err)
	require.Len(t, lr.Rotations, 1)
	require.Equal(t, types.RotationTypeAutomatic, lr.Rotations[0].RotationType)
	st, err := c.GetKeyRotationStatus(ctx(t), &awskms.GetKeyRotationStatusInput{KeyId: p.KeyId})
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().AddDate(0, 0, 91+90), *st.NextRotationDate, time.Minute)
}
