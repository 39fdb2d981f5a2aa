package kms

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/stretchr/testify/require"
)

// KMS API Reference, Encrypt and Decrypt: a symmetric ciphertext decrypts
// without KeyId, and Decrypt returns the plaintext, the key ARN and the algorithm.
func TestEncryptDecryptRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	ec := map[string]string{"envdr:id": "env-1", "tenant": "a"}
	enc, err := c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("secret"), EncryptionContext: ec})
	require.NoError(t, err)
	require.Equal(t, *k.Arn, *enc.KeyId)
	require.Equal(t, types.EncryptionAlgorithmSpecSymmetricDefault, enc.EncryptionAlgorithm)
	require.NotContains(t, string(enc.CiphertextBlob), "secret")

	dec, err := c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
	require.NoError(t, err)
	require.Equal(t, []byte("secret"), dec.Plaintext)
	require.Equal(t, *k.Arn, *dec.KeyId)
	require.Equal(t, *k.CurrentKeyMaterialId, *dec.KeyMaterialId)

	// Decrypt: "KeyId ... If you specify it, it must identify the KMS key that
	// was used to encrypt the ciphertext" — key ID, key ARN, alias name and alias ARN all work.
	_, err = c.CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/rt"), TargetKeyId: k.KeyId})
	require.NoError(t, err)
	for _, id := range []string{*k.KeyId, *k.Arn, "alias/rt", "arn:aws:kms:us-east-1:111122223333:alias/rt"} {
		dec, err := c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec, KeyId: aws.String(id)})
		require.NoError(t, err, id)
		require.Equal(t, []byte("secret"), dec.Plaintext)
		// Encrypt accepts the same four forms.
		_, err = c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("x")})
		require.NoError(t, err, id)
	}
}

// KMS API Reference, Decrypt, errors: IncorrectKeyException when KeyId names
// a different key from the one that encrypted the ciphertext.
func TestDecryptIncorrectKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k1 := b.createKey(t, "us-east-1", false)
	k2 := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	enc, err := c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k1.KeyId, Plaintext: []byte("p")})
	require.NoError(t, err)
	_, err = c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: k2.KeyId})
	requireAPIError[*types.IncorrectKeyException](t, err)
	_, err = c.ReEncrypt(ctx(t), &awskms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceKeyId: k2.Arn, DestinationKeyId: k2.KeyId})
	requireAPIError[*types.IncorrectKeyException](t, err)
}

// KMS developer guide, "Encryption context": the exact context given on
// encryption is required on decryption; a wrong, extra or missing pair fails
// with InvalidCiphertextException, and the order of pairs does not matter.
func TestEncryptionContextBinding(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	ec := map[string]string{"envdr:id": "env-1", "b": "2", "a": "1"}
	enc, err := c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("p"), EncryptionContext: ec})
	require.NoError(t, err)

	same := map[string]string{"a": "1", "b": "2", "envdr:id": "env-1"}
	_, err = c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: same})
	require.NoError(t, err)

	bad := map[string]map[string]string{
		"missing all":  nil,
		"missing one":  {"a": "1", "b": "2"},
		"extra":        {"a": "1", "b": "2", "envdr:id": "env-1", "c": "3"},
		"wrong value":  {"a": "1", "b": "2", "envdr:id": "env-2"},
		"wrong key":    {"a": "1", "bb": "2", "envdr:id": "env-1"},
		"shifted join": {"a": "1b", "": "2", "envdr:id": "env-1"},
	}
	for name, ctxMap := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ctxMap})
			requireAPIError[*types.InvalidCiphertextException](t, err)
		})
	}

	// Without a context at encryption, any context at decryption is wrong.
	enc2, err := c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("p")})
	require.NoError(t, err)
	_, err = c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc2.CiphertextBlob, EncryptionContext: map[string]string{"a": "1"}})
	requireAPIError[*types.InvalidCiphertextException](t, err)
	_, err = c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc2.CiphertextBlob})
	require.NoError(t, err)
}

// KMS API Reference, Decrypt, errors: InvalidCiphertextException "the
// specified ciphertext ... has been corrupted": flipping any byte fails.
func TestCiphertextTamper(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	ec := map[string]string{"envdr:id": "env-1"}
	enc, err := c.GenerateDataKey(ctx(t), &awskms.GenerateDataKeyInput{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
	require.NoError(t, err)
	blob := enc.CiphertextBlob
	for i := range blob {
		bad := append([]byte(nil), blob...)
		bad[i] ^= 0x01
		_, err := c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: bad, EncryptionContext: ec})
		requireAPIError[*types.InvalidCiphertextException](t, err)
	}
	for _, bad := range [][]byte{blob[:len(blob)-1], append(append([]byte(nil), blob...), 0), []byte("not a ciphertext")} {
		_, err := c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: bad, EncryptionContext: ec})
		requireAPIError[*types.InvalidCiphertextException](t, err)
	}
}

// KMS API Reference, GenerateDataKey: KeySpec AES_256 / AES_128 or
// NumberOfBytes (1–1024), exactly one of them; the response carries the
// plaintext data key and the same key encrypted under the KMS key.
func TestGenerateDataKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	for _, tc := range []struct {
		spec types.DataKeySpec
		n    *int32
		want int
	}{
		{types.DataKeySpecAes256, nil, 32},
		{types.DataKeySpecAes128, nil, 16},
		{"", aws.Int32(1), 1},
		{"", aws.Int32(64), 64},
		{"", aws.Int32(1024), 1024},
	} {
		out, err := c.GenerateDataKey(ctx(t), &awskms.GenerateDataKeyInput{KeyId: k.KeyId, KeySpec: tc.spec, NumberOfBytes: tc.n})
		require.NoError(t, err)
		require.Len(t, out.Plaintext, tc.want)
		require.Equal(t, *k.Arn, *out.KeyId)
		require.Equal(t, *k.CurrentKeyMaterialId, *out.KeyMaterialId)
		dec, err := c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: out.CiphertextBlob})
		require.NoError(t, err)
		require.Equal(t, out.Plaintext, dec.Plaintext)
	}
	for _, in := range []*awskms.GenerateDataKeyInput{
		{KeyId: k.KeyId},
		{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256, NumberOfBytes: aws.Int32(32)},
		{KeyId: k.KeyId, NumberOfBytes: aws.Int32(0)},
		{KeyId: k.KeyId, NumberOfBytes: aws.Int32(1025)},
		{KeyId: k.KeyId, KeySpec: "AES_512"},
	} {
		_, err := c.GenerateDataKey(ctx(t), in)
		requireCode(t, err, "ValidationException")
	}
	// Two data keys are never the same.
	a, err := c.GenerateDataKey(ctx(t), &awskms.GenerateDataKeyInput{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256})
	require.NoError(t, err)
	bb, err := c.GenerateDataKey(ctx(t), &awskms.GenerateDataKeyInput{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256})
	require.NoError(t, err)
	require.NotEqual(t, a.Plaintext, bb.Plaintext)
}

// KMS API Reference, GenerateDataKeyWithoutPlaintext: the same as
// GenerateDataKey but only the encrypted copy is returned.
func TestGenerateDataKeyWithoutPlaintext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	ec := map[string]string{"envdr:id": "e"}
	out, err := c.GenerateDataKeyWithoutPlaintext(ctx(t), &awskms.GenerateDataKeyWithoutPlaintextInput{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
	require.NoError(t, err)
	require.Equal(t, *k.Arn, *out.KeyId)
	dec, err := c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: out.CiphertextBlob, EncryptionContext: ec})
	require.NoError(t, err)
	require.Len(t, dec.Plaintext, 32)
	_, err = c.GenerateDataKeyWithoutPlaintext(ctx(t), &awskms.GenerateDataKeyWithoutPlaintextInput{KeyId: k.KeyId})
	requireCode(t, err, "ValidationException")
}

// KMS API Reference, ReEncrypt: decrypts with the source key and context and
// encrypts under the destination key and context, returning both key ARNs;
// SourceKeyId is optional for symmetric keys.
func TestReEncrypt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k1 := b.createKey(t, "us-east-1", false)
	k2 := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	src := map[string]string{"envdr:id": "e", "v": "1"}
	dst := map[string]string{"envdr:id": "e", "v": "2"}
	enc, err := c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k1.KeyId, Plaintext: []byte("dek"), EncryptionContext: src})
	require.NoError(t, err)

	out, err := c.ReEncrypt(ctx(t), &awskms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: src,
		DestinationKeyId: k2.KeyId, DestinationEncryptionContext: dst})
	require.NoError(t, err)
	require.Equal(t, *k1.Arn, *out.SourceKeyId)
	require.Equal(t, *k2.Arn, *out.KeyId)
	require.Equal(t, types.EncryptionAlgorithmSpecSymmetricDefault, out.SourceEncryptionAlgorithm)
	require.Equal(t, types.EncryptionAlgorithmSpecSymmetricDefault, out.DestinationEncryptionAlgorithm)
	require.Equal(t, *k1.CurrentKeyMaterialId, *out.SourceKeyMaterialId)
	require.Equal(t, *k2.CurrentKeyMaterialId, *out.DestinationKeyMaterialId)

	dec, err := c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: out.CiphertextBlob, EncryptionContext: dst, KeyId: k2.Arn})
	require.NoError(t, err)
	require.Equal(t, []byte("dek"), dec.Plaintext)
	_, err = c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: out.CiphertextBlob, EncryptionContext: src})
	requireAPIError[*types.InvalidCiphertextException](t, err)

	// With SourceKeyId given (as an alias) it must match.
	_, err = c.CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/src"), TargetKeyId: k1.KeyId})
	require.NoError(t, err)
	_, err = c.ReEncrypt(ctx(t), &awskms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: src,
		SourceKeyId: aws.String("alias/src"), DestinationKeyId: k2.Arn})
	require.NoError(t, err)

	// The wrong source context is InvalidCiphertextException, not a new ciphertext.
	_, err = c.ReEncrypt(ctx(t), &awskms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: dst, DestinationKeyId: k2.KeyId})
	requireAPIError[*types.InvalidCiphertextException](t, err)
	// An unknown destination is NotFoundException.
	_, err = c.ReEncrypt(ctx(t), &awskms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: src, DestinationKeyId: aws.String("alias/nope")})
	requireAPIError[*types.NotFoundException](t, err)
}

// KMS API Reference, Encrypt: Plaintext is 1 to 4096 bytes; DryRun answers
// DryRunOperationException when the call would have succeeded.
func TestEncryptLimitsAndDryRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	c := b.c("us-east-1")
	_, err := c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: make([]byte, 4096)})
	require.NoError(t, err)
	_, err = c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: make([]byte, 4097)})
	requireCode(t, err, "ValidationException")
	_, err = c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("x"), DryRun: aws.Bool(true)})
	requireAPIError[*types.DryRunOperationException](t, err)
	_, err = c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("x"), EncryptionAlgorithm: types.EncryptionAlgorithmSpecRsaesOaepSha256})
	requireAPIError[*types.InvalidKeyUsageException](t, err)
	enc, err := c.Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("x")})
	require.NoError(t, err)
	_, err = c.Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, DryRun: aws.Bool(true)})
	requireAPIError[*types.DryRunOperationException](t, err)

	r, err := c.GenerateRandom(ctx(t), &awskms.GenerateRandomInput{NumberOfBytes: aws.Int32(48)})
	require.NoError(t, err)
	require.Len(t, r.Plaintext, 48)
}
