package faults

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// window is how many leading bytes of an encoded secret index it. Secrets are at least this
// long in every encoding (DEKs are 32 bytes; plaintext samples are cut to ≥ 16 bytes).
const window = 16

// secrets collects what must never appear in envdr's output: DEKs and plaintext samples. It
// indexes every encoding (raw, standard and URL base64, lower and upper hex) by its first
// window bytes, so one pass over megabytes of logs checks thousands of secrets.
type secrets struct {
	mu    sync.Mutex
	index map[string][][]byte // first window bytes -> full encodings starting with them
	n     int
}

func newSecrets() *secrets { return &secrets{index: map[string][][]byte{}} }

// add registers secrets; each shorter than window bytes is ignored (it cannot be told apart
// from chance matches).
func (s *secrets) add(vals ...[]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range vals {
		if len(v) < window {
			continue
		}
		s.n++
		for _, enc := range [][]byte{
			bytes.Clone(v),
			[]byte(strings.TrimRight(base64.StdEncoding.EncodeToString(v), "=")),
			[]byte(strings.TrimRight(base64.URLEncoding.EncodeToString(v), "=")),
			[]byte(hex.EncodeToString(v)),
			[]byte(strings.ToUpper(hex.EncodeToString(v))),
		} {
			k := string(enc[:window])
			s.index[k] = append(s.index[k], enc)
		}
	}
}

// addSample registers a plaintext in pieces of 32 bytes too, so a leaked part of it (one chunk
// written to stdout, a log line quoting a slice) is found, not only the whole.
func (s *secrets) addSample(pt []byte) {
	s.add(pt)
	for i := 0; i+32 <= len(pt) && len(pt) > 32; i += 32 {
		s.add(pt[i : i+32])
	}
}

func (s *secrets) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// find returns the offset of the first secret found in text, or -1.
func (s *secrets) find(text []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i+window <= len(text); i++ {
		cands, ok := s.index[string(text[i:i+window])]
		if !ok {
			continue
		}
		for _, c := range cands {
			if bytes.HasPrefix(text[i:], c) {
				return i
			}
		}
	}
	return -1
}

// TestSecretScannerFindsEveryEncoding keeps the hygiene checks honest: a scanner that finds
// nothing would make every other test's "no secret in the output" vacuous.
func TestSecretScannerFindsEveryEncoding(t *testing.T) {
	t.Parallel()
	s := newSecrets()
	dek := bytes.Repeat([]byte{0xA7, 0x11, 0x3C}, 11)[:32]
	pt := []byte("the quick brown fox jumps over the lazy dog, then over the sleeping cat again")
	s.add(dek)
	s.addSample(pt)
	noise := []byte(`{"level":"info","msg":"event replicated","id":"abc"}` + "\n")
	for name, leak := range map[string][]byte{
		"raw":       dek,
		"base64":    []byte(base64.StdEncoding.EncodeToString(dek)),
		"base64url": []byte(base64.RawURLEncoding.EncodeToString(dek)),
		"hex":       []byte(hex.EncodeToString(dek)),
		"HEX":       []byte(strings.ToUpper(hex.EncodeToString(dek))),
		"plaintext": pt,
		"pt part":   pt[32:64],
		"pt hex":    []byte(hex.EncodeToString(pt)),
	} {
		text := append(append(bytes.Clone(noise), leak...), noise...)
		require.Equal(t, len(noise), s.find(text), name)
	}
	require.Equal(t, -1, s.find(bytes.Repeat(noise, 100)))
}
