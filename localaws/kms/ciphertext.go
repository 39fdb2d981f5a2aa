package kms

import (
	"crypto/rand"
	"encoding/binary"
	"sort"
)

// Ciphertext blob layout (opaque to clients, like AWS's):
//
//	0x01 | len(keyID) u8 | keyID | material version u32 BE | nonce (12) | AES-256-GCM(plaintext) + tag
//
// The GCM additional data is everything before the nonce followed by the
// canonical encryption context, so the blob is bound to the key ID, the
// material version and the exact context. The key ID, not the ARN, is bound
// because related multi-Region keys share it and must decrypt each other's
// ciphertexts; single-Region key IDs are unique, so they decrypt nowhere else.
const ciphertextFormat = 0x01

const nonceSize = 12

type ciphertextHeader struct {
	keyID   string
	version uint32
	hdrLen  int
}

func parseCiphertext(blob []byte) (ciphertextHeader, bool) {
	if len(blob) < 2 || blob[0] != ciphertextFormat {
		return ciphertextHeader{}, false
	}
	n := int(blob[1])
	hdrLen := 2 + n + 4
	if n == 0 || len(blob) < hdrLen+nonceSize+16 {
		return ciphertextHeader{}, false
	}
	return ciphertextHeader{
		keyID:   string(blob[2 : 2+n]),
		version: binary.BigEndian.Uint32(blob[2+n : hdrLen]),
		hdrLen:  hdrLen,
	}, true
}

// canonicalContext encodes an encryption context unambiguously with sorted
// keys, so the same map always gives the same bytes and no two maps collide.
func canonicalContext(dst []byte, ctx map[string]string) []byte {
	keys := make([]string, 0, len(ctx))
	for k := range ctx {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	dst = binary.AppendUvarint(dst, uint64(len(keys)))
	for _, k := range keys {
		dst = binary.AppendUvarint(dst, uint64(len(k)))
		dst = append(dst, k...)
		v := ctx[k]
		dst = binary.AppendUvarint(dst, uint64(len(v)))
		dst = append(dst, v...)
	}
	return dst
}

func seal(keyID string, version uint32, m *material, plaintext []byte, ctx map[string]string) ([]byte, error) {
	out := make([]byte, 0, 2+len(keyID)+4+nonceSize+len(plaintext)+16)
	out = append(out, ciphertextFormat, byte(len(keyID)))
	out = append(out, keyID...)
	out = binary.BigEndian.AppendUint32(out, version)
	hdrLen := len(out)
	aad := canonicalContext(append([]byte(nil), out...), ctx)
	out = out[:hdrLen+nonceSize]
	if _, err := rand.Read(out[hdrLen:]); err != nil {
		return nil, err
	}
	return m.aead.Seal(out, out[hdrLen:], plaintext, aad), nil
}

func open(h ciphertextHeader, blob []byte, m *material, ctx map[string]string) ([]byte, bool) {
	aad := canonicalContext(append([]byte(nil), blob[:h.hdrLen]...), ctx)
	nonce := blob[h.hdrLen : h.hdrLen+nonceSize]
	pt, err := m.aead.Open(nil, nonce, blob[h.hdrLen+nonceSize:], aad)
	return pt, err == nil
}
