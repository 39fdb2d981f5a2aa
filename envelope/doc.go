// Package envelope is envdr's data format: sealing and opening streams of any size with a data
// encryption key (DEK) in constant memory, the header (authenticated by every chunk) that
// carries the home region's wrapped DEK, the key commitment, the canonical encryption context,
// the multi-wrapped record kept per envelope and the replication event put on the queue.
//
// It is pure Go and imports no AWS SDK: keys come in through two small interfaces, KeyGenerator
// (a fresh DEK and its wrap, for Seal) and Unwrapper (a wrap back to the DEK, for Open), which
// package regions implements over KMS and tests implement with a fake.
//
// The byte-level specification is docs/FORMAT.md; known-answer vectors live in
// testdata/vectors and are regenerated with `go generate` (see vectors_test.go).
//
// Security properties, in short:
//   - payload: chunked AES-256-GCM (STREAM construction): each chunk's nonce is its counter and a
//     final-chunk flag, so truncation, reordering, duplication and appended data are detected;
//     no chunk's plaintext is released before that chunk authenticates;
//   - the header is bound into every chunk (its SHA-256 is each chunk's associated data);
//   - the chunk key is HKDF-SHA256(DEK, per-envelope salt), so every envelope has its own key
//     even when a DEK is shared through CachingKeyGenerator;
//   - a key commitment (HKDF-SHA256 of the DEK under a distinct label) is checked in constant
//     time before any chunk is decrypted, so a wrap of another key cannot be swapped in;
//   - the encryption context is canonical, always carries envdr:id, and is compared key by key
//     before any KMS call so a mismatch names the keys that differ.
package envelope

//go:generate go test -run ^TestVectors$ -update .
