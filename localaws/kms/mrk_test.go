package kms

import (
	"regexp"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/stretchr/testify/require"
)

// KMS developer guide, "Multi-Region key identifiers": multi-Region key IDs
// are mrk- followed by 32 hex digits; single-Region key IDs are UUIDs.
func TestKeyIDFormats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m := b.createKey(t, "us-east-1", true)
	s := b.createKey(t, "us-east-1", false)
	require.Regexp(t, `^mrk-[0-9a-f]{32}$`, *m.KeyId)
	require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, *s.KeyId)
	require.Equal(t, "arn:aws:kms:us-east-1:111122223333:key/"+*m.KeyId, *m.Arn)
	require.True(t, *m.MultiRegion)
	require.False(t, *s.MultiRegion)
	require.Nil(t, s.MultiRegionConfiguration)
	require.Equal(t, types.MultiRegionKeyTypePrimary, m.MultiRegionConfiguration.MultiRegionKeyType)
	require.Equal(t, types.KeySpecSymmetricDefault, s.KeySpec)
	require.Equal(t, types.KeyUsageTypeEncryptDecrypt, s.KeyUsage)
	require.Equal(t, "111122223333", *s.AWSAccountId)
	require.True(t, s.Enabled)
	require.Equal(t, "test key", *s.Description)
	require.Regexp(t, regexp.MustCompile(`^[0-9a-f]{64}$`), *s.CurrentKeyMaterialId)
}

// KMS API Reference, ReplicateKey: called in the primary's Region, creates a
// replica with the same key ID in ReplicaRegion; DescribeKey of every related
// key reports the primary and all replicas (MultiRegionConfiguration).
func TestReplicateKeyAndDescribe(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.createKey(t, "us-east-1", true)
	out, err := b.c("us-east-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p.Arn, ReplicaRegion: aws.String("eu-west-1"), Description: aws.String("replica")})
	require.NoError(t, err)
	r := out.ReplicaKeyMetadata
	require.Equal(t, *p.KeyId, *r.KeyId)
	require.Equal(t, "arn:aws:kms:eu-west-1:111122223333:key/"+*p.KeyId, *r.Arn)
	require.Equal(t, types.MultiRegionKeyTypeReplica, r.MultiRegionConfiguration.MultiRegionKeyType)
	require.Equal(t, "us-east-1", *r.MultiRegionConfiguration.PrimaryKey.Region)
	require.Equal(t, *p.Arn, *r.MultiRegionConfiguration.PrimaryKey.Arn)
	require.Equal(t, *p.CurrentKeyMaterialId, *r.CurrentKeyMaterialId)
	require.Contains(t, *out.ReplicaPolicy, "arn:aws:iam::111122223333:root")
	require.Equal(t, "replica", *r.Description)

	_, err = b.c("us-east-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p.KeyId, ReplicaRegion: aws.String("ap-southeast-2")})
	require.NoError(t, err)

	for _, region := range testRegions {
		d, err := b.c(region).DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
		require.NoError(t, err, region)
		md := d.KeyMetadata
		require.Equal(t, "arn:aws:kms:"+region+":111122223333:key/"+*p.KeyId, *md.Arn)
		cfg := md.MultiRegionConfiguration
		require.Equal(t, *p.Arn, *cfg.PrimaryKey.Arn)
		require.Equal(t, "us-east-1", *cfg.PrimaryKey.Region)
		var replicas []string
		for _, rk := range cfg.ReplicaKeys {
			replicas = append(replicas, *rk.Region)
			require.Equal(t, "arn:aws:kms:"+*rk.Region+":111122223333:key/"+*p.KeyId, *rk.Arn)
		}
		require.ElementsMatch(t, []string{"eu-west-1", "ap-southeast-2"}, replicas)
		want := types.MultiRegionKeyTypeReplica
		if region == "us-east-1" {
			want = types.MultiRegionKeyTypePrimary
		}
		require.Equal(t, want, cfg.MultiRegionKeyType)
	}
}

// KMS API Reference, ReplicateKey, errors: AlreadyExistsException when the
// Region already has a replica; UnsupportedOperationException for a key that
// is not a multi-Region primary key; NotFoundException for an unknown key.
func TestReplicateKeyErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.mrk(t)
	_, err := b.c("us-east-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p.KeyId, ReplicaRegion: aws.String("eu-west-1")})
	requireAPIError[*types.AlreadyExistsException](t, err)

	single := b.createKey(t, "us-east-1", false)
	_, err = b.c("us-east-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: single.KeyId, ReplicaRegion: aws.String("eu-west-1")})
	requireAPIError[*types.UnsupportedOperationException](t, err)

	// Replicating a replica: the call must be made on the primary.
	_, err = b.c("eu-west-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p.KeyId, ReplicaRegion: aws.String("ap-southeast-2")})
	requireAPIError[*types.UnsupportedOperationException](t, err)

	_, err = b.c("us-east-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: aws.String("mrk-00000000000000000000000000000000"), ReplicaRegion: aws.String("eu-west-1")})
	requireAPIError[*types.NotFoundException](t, err)

	// The stand-in serves a fixed set of Regions.
	p2 := b.createKey(t, "us-east-1", true)
	_, err = b.c("us-east-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p2.KeyId, ReplicaRegion: aws.String("sa-east-1")})
	requireCode(t, err, "ValidationException")
	_, err = b.c("us-east-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p2.KeyId, ReplicaRegion: aws.String("us-east-1")})
	requireCode(t, err, "ValidationException")

	// A primary pending deletion cannot be replicated.
	_, err = b.c("us-east-1").ScheduleKeyDeletion(ctx(t), &awskms.ScheduleKeyDeletionInput{KeyId: p2.KeyId, PendingWindowInDays: aws.Int32(7)})
	require.NoError(t, err)
	_, err = b.c("us-east-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p2.KeyId, ReplicaRegion: aws.String("eu-west-1")})
	requireAPIError[*types.KMSInvalidStateException](t, err)
}

// KMS developer guide, "Multi-Region keys": related keys share key ID and key
// material, so a ciphertext made in one Region decrypts with the related key
// in any other, in every direction, and ReEncrypt in a replica Region accepts it.
func TestMultiRegionCrossDecrypt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.mrk(t)
	ec := map[string]string{"envdr:id": "mrk-env"}
	for _, from := range testRegions {
		gd, err := b.c(from).GenerateDataKey(ctx(t), &awskms.GenerateDataKeyInput{KeyId: p.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
		require.NoError(t, err)
		for _, to := range testRegions {
			dec, err := b.c(to).Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: gd.CiphertextBlob, EncryptionContext: ec,
				KeyId: aws.String("arn:aws:kms:" + to + ":111122223333:key/" + *p.KeyId)})
			require.NoError(t, err, "%s -> %s", from, to)
			require.Equal(t, gd.Plaintext, dec.Plaintext)
			require.Equal(t, "arn:aws:kms:"+to+":111122223333:key/"+*p.KeyId, *dec.KeyId)

			// The envdr mrk path: ReEncrypt in the target Region to its own key.
			re, err := b.c(to).ReEncrypt(ctx(t), &awskms.ReEncryptInput{CiphertextBlob: gd.CiphertextBlob, SourceEncryptionContext: ec,
				DestinationKeyId: p.KeyId, DestinationEncryptionContext: ec})
			require.NoError(t, err, "%s -> %s", from, to)
			require.Equal(t, "arn:aws:kms:"+to+":111122223333:key/"+*p.KeyId, *re.KeyId)
			dec, err = b.c(to).Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: re.CiphertextBlob, EncryptionContext: ec})
			require.NoError(t, err)
			require.Equal(t, gd.Plaintext, dec.Plaintext)
		}
	}
	// Context binding holds across Regions too.
	gd, err := b.c("us-east-1").GenerateDataKey(ctx(t), &awskms.GenerateDataKeyInput{KeyId: p.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
	require.NoError(t, err)
	_, err = b.c("eu-west-1").Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: gd.CiphertextBlob})
	requireAPIError[*types.InvalidCiphertextException](t, err)
}

// KMS developer guide, "Multi-Region keys": a single-Region key exists in one
// Region only; its ciphertexts cannot be decrypted in any other Region, and
// neither can a multi-Region key's ciphertext in a Region without a replica.
func TestSingleRegionCiphertextStaysHome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	enc, err := b.c("us-east-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("p")})
	require.NoError(t, err)
	for _, r := range []string{"eu-west-1", "ap-southeast-2"} {
		_, err := b.c(r).Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
		requireAPIError[*types.InvalidCiphertextException](t, err)
	}
	lone := b.createKey(t, "us-east-1", true) // multi-Region, not replicated
	enc, err = b.c("us-east-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: lone.KeyId, Plaintext: []byte("p")})
	require.NoError(t, err)
	_, err = b.c("eu-west-1").Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	requireAPIError[*types.InvalidCiphertextException](t, err)
}

// KMS API Reference, UpdatePrimaryRegion: called in the primary's Region,
// makes the replica in PrimaryRegion the primary; the old primary becomes a replica.
func TestUpdatePrimaryRegion(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.mrk(t)
	_, err := b.c("us-east-1").UpdatePrimaryRegion(ctx(t), &awskms.UpdatePrimaryRegionInput{KeyId: p.KeyId, PrimaryRegion: aws.String("eu-west-1")})
	require.NoError(t, err)
	for _, region := range testRegions {
		d, err := b.c(region).DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
		require.NoError(t, err)
		require.Equal(t, "eu-west-1", *d.KeyMetadata.MultiRegionConfiguration.PrimaryKey.Region)
		require.Len(t, d.KeyMetadata.MultiRegionConfiguration.ReplicaKeys, 2)
	}
	// The old primary is now a replica: ReplicateKey must be called in eu-west-1.
	_, err = b.c("us-east-1").UpdatePrimaryRegion(ctx(t), &awskms.UpdatePrimaryRegionInput{KeyId: p.KeyId, PrimaryRegion: aws.String("ap-southeast-2")})
	requireAPIError[*types.UnsupportedOperationException](t, err)
	single := b.createKey(t, "us-east-1", false)
	_, err = b.c("us-east-1").UpdatePrimaryRegion(ctx(t), &awskms.UpdatePrimaryRegionInput{KeyId: single.KeyId, PrimaryRegion: aws.String("eu-west-1")})
	requireAPIError[*types.UnsupportedOperationException](t, err)
	lone := b.createKey(t, "us-east-1", true)
	_, err = b.c("us-east-1").UpdatePrimaryRegion(ctx(t), &awskms.UpdatePrimaryRegionInput{KeyId: lone.KeyId, PrimaryRegion: aws.String("eu-west-1")})
	requireAPIError[*types.NotFoundException](t, err)
}
