// Package envelopetest provides an in-memory stand-in for a region's KMS key, for tests of code
// built on package envelope (the envelope tests themselves, the CLI, the replicator) that
// must not need AWS. It is not a KMS: the "master key" sits in memory and its wraps are only
// meaningful to the same FakeKMS value.
package envelopetest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/envdr/envdr/envelope"
)

// ErrInvalidCiphertext mirrors KMS's InvalidCiphertextException: the wrap was not made by this
// key, was altered, or is bound to another encryption context.
var ErrInvalidCiphertext = errors.New("envelopetest: invalid ciphertext (wrong key, tampered wrap or other context)")

// ErrWrongKey: the caller named a key other than this one.
var ErrWrongKey = errors.New("envelopetest: wrap names another key")

// FakeKMS is one region's key. A wrap is nonce || AES-256-GCM(master, DEK) with the key ARN
// and the canonical context as associated data, so, like KMS, unwrapping with another context
// fails.
type FakeKMS struct {
	Region string
	KeyARN string

	aead cipher.AEAD
	mu   sync.Mutex
	rand io.Reader

	// Calls counts GenerateDataKey, Wrap and Unwrap calls.
	Generated, Wrapped, Unwrapped atomic.Int64
}

var (
	_ envelope.KeyGenerator = (*FakeKMS)(nil)
	_ envelope.Unwrapper    = (*FakeKMS)(nil)
)

// NewFakeKMS returns a key for region whose master key is derived from seed (any string; the
// same seed gives the same key). rand supplies DEKs and nonces; nil means crypto/rand, a
// deterministic reader (see DeterministicReader) makes reproducible envelopes.
func NewFakeKMS(region, keyARN, seed string, rnd io.Reader) *FakeKMS {
	mk := sha256.Sum256([]byte("envelopetest master key\x00" + seed))
	block, err := aes.NewCipher(mk[:])
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	return &FakeKMS{Region: region, KeyARN: keyARN, aead: aead, rand: rnd}
}

func (k *FakeKMS) read(b []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, err := io.ReadFull(k.rand, b)
	return err
}

func (k *FakeKMS) aad(ec envelope.Context) []byte {
	return ec.AppendBinary([]byte(k.KeyARN + "\x00"))
}

// GenerateDataKey returns a fresh DEK wrapped under this key and bound to ec.
func (k *FakeKMS) GenerateDataKey(_ context.Context, ec envelope.Context) (*envelope.DataKey, error) {
	k.Generated.Add(1)
	dek := make([]byte, envelope.DEKSize)
	if err := k.read(dek); err != nil {
		return nil, err
	}
	wrapped, err := k.wrap(dek, ec)
	if err != nil {
		return nil, err
	}
	return &envelope.DataKey{Plaintext: dek, Wrapped: wrapped, KeyARN: k.KeyARN, Region: k.Region}, nil
}

// Wrap encrypts dek under this key bound to ec (KMS Encrypt).
func (k *FakeKMS) Wrap(_ context.Context, dek []byte, ec envelope.Context) ([]byte, error) {
	k.Wrapped.Add(1)
	return k.wrap(dek, ec)
}

func (k *FakeKMS) wrap(dek []byte, ec envelope.Context) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if err := k.read(nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(nonce, nonce, dek, k.aad(ec)), nil
}

// Unwrap decrypts a wrap made by this key for ec (KMS Decrypt).
func (k *FakeKMS) Unwrap(_ context.Context, wrapped []byte, keyARN string, ec envelope.Context) ([]byte, error) {
	k.Unwrapped.Add(1)
	if keyARN != "" && keyARN != k.KeyARN {
		return nil, fmt.Errorf("%w: %s is not %s", ErrWrongKey, keyARN, k.KeyARN)
	}
	ns := k.aead.NonceSize()
	if len(wrapped) < ns+k.aead.Overhead() {
		return nil, ErrInvalidCiphertext
	}
	dek, err := k.aead.Open(nil, wrapped[:ns], wrapped[ns:], k.aad(ec))
	if err != nil {
		return nil, ErrInvalidCiphertext
	}
	return dek, nil
}

// DeterministicReader returns an endless reader of SHA-256 counter-mode bytes from seed, for
// reproducible keys, salts and payloads in tests. Never use it for real keys.
func DeterministicReader(seed string) io.Reader {
	return &detReader{seed: sha256.Sum256([]byte(seed))}
}

type detReader struct {
	seed [32]byte
	ctr  uint64
	buf  []byte
}

func (r *detReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(r.buf) == 0 {
			var in [40]byte
			copy(in[:], r.seed[:])
			for i := 0; i < 8; i++ {
				in[32+i] = byte(r.ctr >> (8 * i))
			}
			r.ctr++
			sum := sha256.Sum256(in[:])
			r.buf = sum[:]
		}
		c := copy(p[n:], r.buf)
		r.buf = r.buf[c:]
		n += c
	}
	return n, nil
}
