package envelope_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/envelope/envelopetest"
)

// tamperSetup seals a multi-chunk envelope through a fake KMS.
type tamperSetup struct {
	kms       *envelopetest.FakeKMS
	file      []byte
	hdrBytes  []byte
	chunks    [][]byte
	hdr       *envelope.Header
	pt        []byte
	user      map[string]string
	chunkSize int
}

func setupTamper(t *testing.T, id string) *tamperSetup {
	t.Helper()
	kms := envelopetest.NewFakeKMS(testRegion, testARN, "tamper", nil)
	user := map[string]string{"app": "billing", "tenant": "t-42"}
	const cs = 1024
	pt := payload(5*cs + 300)
	var buf bytes.Buffer
	hdr, err := envelope.Seal(context.Background(), &buf, bytes.NewReader(pt), kms,
		envelope.SealOptions{ID: id, Context: user, ChunkSize: cs})
	require.NoError(t, err)
	h, chunks, parsed := splitEnvelope(t, buf.Bytes())
	require.Len(t, chunks, 6)
	require.Equal(t, hdr, parsed)
	return &tamperSetup{kms: kms, file: buf.Bytes(), hdrBytes: h, chunks: chunks, hdr: hdr, pt: pt, user: user, chunkSize: cs}
}

// TestTamperMatrix: every class of corruption is rejected with a named, typed error, and the
// only bytes written are authentic chunks that precede the corruption (none at all for any
// corruption of the header, the wrap, the context or the first chunk).
func TestTamperMatrix(t *testing.T) {
	t.Parallel()
	s := setupTamper(t, "tamper-a")
	other := setupTamper(t, "tamper-b") // same fake KMS seed: wraps are interchangeable but bound to their contexts
	hl := len(s.hdrBytes)
	enc := s.chunkSize + envelope.TagSize
	flip := func(i int) []byte {
		c := bytes.Clone(s.file)
		c[i] ^= 0x40
		return c
	}
	withHeader := func(h *envelope.Header) []byte {
		raw := rawFrom(h).encode()
		return join(append([][]byte{raw}, s.chunks...)...)
	}
	hdrWith := func(f func(h *envelope.Header)) *envelope.Header {
		c := *s.hdr
		f(&c)
		return &c
	}
	// A wrap of a different DEK under the right key and the right context: only an attacker
	// with kms:Encrypt on the key could make one; the commitment catches it.
	foreignDEK := testDEK(9)
	foreignWrap, err := s.kms.Wrap(context.Background(), foreignDEK, s.hdr.Context)
	require.NoError(t, err)

	type tc struct {
		name     string
		file     []byte
		opts     envelope.OpenOptions
		want     error
		released int // authentic chunks written before the failure
		wantType any // optional: pointer to the typed error expected
	}
	cases := []tc{
		{name: "flip magic", file: flip(0), want: envelope.ErrBadHeader, wantType: new(*envelope.FormatError)},
		{name: "flip version", file: flip(8), want: envelope.ErrUnknownVersion, wantType: new(*envelope.FormatError)},
		{name: "flip header_len", file: flip(11), want: envelope.ErrBadHeader},
		{name: "flip flags", file: flip(13), want: envelope.ErrBadHeader},
		{name: "flip chunk_size", file: flip(16), want: envelope.ErrAuth, wantType: new(*envelope.ChunkError)},
		{name: "flip salt", file: flip(20), want: envelope.ErrAuth},
		{name: "flip commitment", file: flip(60), want: envelope.ErrCommitmentMismatch, wantType: new(*envelope.KeyError)},
		{name: "flip id", file: flip(84), want: envelope.ErrBadHeader},
		{name: "flip wrapped DEK", file: flip(hl - 60), want: envelopetest.ErrInvalidCiphertext, wantType: new(*envelope.KeyError)},
		{name: "edited context value", file: withHeader(hdrWith(func(h *envelope.Header) {
			h.Context = mustContext(t, h.ID, map[string]string{"app": "billing", "tenant": "t-43"})
		})), want: envelopetest.ErrInvalidCiphertext},
		{name: "edited context, open names keys", file: withHeader(hdrWith(func(h *envelope.Header) {
			h.Context = mustContext(t, h.ID, map[string]string{"app": "billing", "tenant": "t-43"})
		})), opts: envelope.OpenOptions{Context: s.user}, want: envelope.ErrContextMismatch, wantType: new(*envelope.ContextMismatchError)},
		{name: "wrong expected context", file: s.file, opts: envelope.OpenOptions{Context: map[string]string{"app": "billing"}},
			want: envelope.ErrContextMismatch},
		{name: "edited home region", file: withHeader(hdrWith(func(h *envelope.Header) { h.HomeRegion = "eu-west-1" })), want: envelope.ErrAuth},
		{name: "swapped wrap from another envelope", file: withHeader(hdrWith(func(h *envelope.Header) { h.WrappedDEK = other.hdr.WrappedDEK })),
			want: envelopetest.ErrInvalidCiphertext},
		{name: "other envelope's wrap via options", file: s.file, opts: envelope.OpenOptions{Wrap: other.hdr.Wrap()},
			want: envelopetest.ErrInvalidCiphertext},
		{name: "foreign DEK wrapped for this context", file: withHeader(hdrWith(func(h *envelope.Header) { h.WrappedDEK = foreignWrap })),
			want: envelope.ErrCommitmentMismatch},
		{name: "foreign DEK via options", file: s.file, opts: envelope.OpenOptions{Wrap: &envelope.Wrap{Region: "eu-west-1", KeyARN: testARN, Wrapped: foreignWrap}},
			want: envelope.ErrCommitmentMismatch},
		{name: "other envelope's header and commitment", file: join(append([][]byte{other.hdrBytes}, s.chunks...)...), want: envelope.ErrAuth},
		{name: "flip chunk 0 body", file: flip(hl + 5), want: envelope.ErrAuth},
		{name: "flip chunk 2 body", file: flip(hl + 2*enc + 100), want: envelope.ErrAuth, released: 2},
		{name: "flip chunk 1 tag", file: flip(hl + 2*enc - 1), want: envelope.ErrAuth, released: 1},
		{name: "flip final tag", file: flip(len(s.file) - 1), want: envelope.ErrAuth, released: 5},
		{name: "truncate in header", file: s.file[:40], want: envelope.ErrTruncated, wantType: new(*envelope.FormatError)},
		{name: "truncate after header", file: s.file[:hl], want: envelope.ErrTruncated},
		{name: "truncate in chunk 0 tag", file: s.file[:hl+10], want: envelope.ErrTruncated},
		{name: "truncate at boundary 1", file: s.file[:hl+enc], want: envelope.ErrTruncated},
		{name: "truncate at boundary 3", file: s.file[:hl+3*enc], want: envelope.ErrTruncated, released: 2},
		{name: "truncate at boundary 5", file: s.file[:hl+5*enc], want: envelope.ErrTruncated, released: 4},
		{name: "truncate mid chunk 3", file: s.file[:hl+3*enc+500], want: envelope.ErrAuth, released: 3},
		{name: "truncate last byte", file: s.file[:len(s.file)-1], want: envelope.ErrAuth, released: 5},
		{name: "append byte", file: join(s.file, []byte{0}), want: envelope.ErrAuth, released: 5},
		{name: "append final chunk again", file: join(s.file, s.chunks[5]), want: envelope.ErrAuth, released: 5},
		{name: "append full chunk", file: join(s.file, s.chunks[1]), want: envelope.ErrAuth, released: 5},
		{name: "swap chunks 1 and 2", file: join(s.hdrBytes, s.chunks[0], s.chunks[2], s.chunks[1], s.chunks[3], s.chunks[4], s.chunks[5]),
			want: envelope.ErrAuth, released: 1},
		{name: "duplicate chunk 3", file: join(s.hdrBytes, s.chunks[0], s.chunks[1], s.chunks[2], s.chunks[3], s.chunks[3], s.chunks[4], s.chunks[5]),
			want: envelope.ErrAuth, released: 4},
		{name: "drop chunk 4", file: join(s.hdrBytes, s.chunks[0], s.chunks[1], s.chunks[2], s.chunks[3], s.chunks[5]),
			want: envelope.ErrAuth, released: 4},
		{name: "drop final chunk", file: join(s.hdrBytes, s.chunks[0], s.chunks[1], s.chunks[2], s.chunks[3], s.chunks[4]),
			want: envelope.ErrTruncated, released: 4},
		{name: "chunk from another envelope", file: join(s.hdrBytes, s.chunks[0], other.chunks[1], s.chunks[2], s.chunks[3], s.chunks[4], s.chunks[5]),
			want: envelope.ErrAuth, released: 1},
		{name: "empty input", file: nil, want: envelope.ErrBadHeader},
		{name: "not an envelope", file: []byte("hello, world: this is plain text, not an envelope at all"), want: envelope.ErrBadHeader},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			_, err := envelope.Open(context.Background(), &out, bytes.NewReader(c.file), s.kms, c.opts)
			require.Error(t, err)
			require.ErrorIs(t, err, c.want, "got %v", err)
			if c.wantType != nil {
				require.ErrorAs(t, err, c.wantType)
			}
			requireBytes(t, s.pt[:c.released*s.chunkSize], out.Bytes())
			var ce *envelope.ChunkError
			if errors.As(err, &ce) {
				require.EqualValues(t, c.released, ce.Index, "failing chunk index")
			}
			// Same verdict and output when the source is not in memory (pull path).
			var out2 bytes.Buffer
			_, err2 := envelope.Open(context.Background(), &out2, iotest.OneByteReader(bytes.NewReader(c.file)), s.kms, c.opts)
			require.ErrorIs(t, err2, c.want)
			require.Equal(t, err.Error(), err2.Error())
			requireBytes(t, out.Bytes(), out2.Bytes())
		})
	}
	t.Run("untampered opens", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		hdr, err := envelope.Open(context.Background(), &out, bytes.NewReader(s.file), s.kms, envelope.OpenOptions{Context: s.user})
		require.NoError(t, err)
		require.Equal(t, "tamper-a", hdr.ID)
		requireBytes(t, s.pt, out.Bytes())
	})
}

// TestContextMismatchNamesKeys: a context error says which keys differ, never KMS's bare error.
func TestContextMismatchNamesKeys(t *testing.T) {
	t.Parallel()
	s := setupTamper(t, "names-keys")
	var out bytes.Buffer
	_, err := envelope.Open(context.Background(), &out, bytes.NewReader(s.file), s.kms, envelope.OpenOptions{
		Context: map[string]string{"app": "payroll", "region": "x"},
	})
	var cm *envelope.ContextMismatchError
	require.ErrorAs(t, err, &cm)
	require.Equal(t, []string{"region"}, cm.Missing)
	require.Equal(t, []string{"tenant"}, cm.Extra)
	require.Equal(t, []string{"app"}, cm.Different)
	require.Contains(t, err.Error(), `"tenant"`)
	require.NotContains(t, err.Error(), "payroll", "values are not echoed")
	require.Zero(t, s.kms.Unwrapped.Load(), "a context mismatch is caught before any KMS call")
	require.Zero(t, out.Len())
}

// TestKeyErrorNamesRegionAndKey: unwrap failures carry the region, key ARN and record ID.
func TestKeyErrorNamesRegionAndKey(t *testing.T) {
	t.Parallel()
	s := setupTamper(t, "key-error")
	otherKMS := envelopetest.NewFakeKMS("eu-west-1", "arn:aws:kms:eu-west-1:111122223333:key/other", "other", nil)
	_, err := envelope.Open(context.Background(), &bytes.Buffer{}, bytes.NewReader(s.file), otherKMS,
		envelope.OpenOptions{Wrap: &envelope.Wrap{Region: "eu-west-1", KeyARN: otherKMS.KeyARN, Wrapped: s.hdr.WrappedDEK}})
	var ke *envelope.KeyError
	require.ErrorAs(t, err, &ke)
	require.Equal(t, "unwrap", ke.Op)
	require.Equal(t, "eu-west-1", ke.Region)
	require.Equal(t, otherKMS.KeyARN, ke.KeyARN)
	require.Equal(t, "key-error", ke.ID)
	require.ErrorIs(t, err, envelopetest.ErrInvalidCiphertext)
	require.Contains(t, err.Error(), "eu-west-1")
}

// TestHeaderFieldOffsets pins the fixed offsets FORMAT.md documents.
func TestHeaderFieldOffsets(t *testing.T) {
	t.Parallel()
	s := setupTamper(t, "offsets")
	b := s.hdrBytes
	require.Equal(t, envelope.Magic[:], b[:8])
	require.EqualValues(t, 1, b[8])
	require.EqualValues(t, len(b), binary.BigEndian.Uint32(b[9:13]))
	require.EqualValues(t, 0, b[13])
	require.EqualValues(t, s.chunkSize, binary.BigEndian.Uint32(b[14:18]))
	require.Equal(t, s.hdr.Salt, b[18:50])
	require.Equal(t, s.hdr.Commitment, b[50:82])
	require.EqualValues(t, len("offsets"), b[82])
	require.Equal(t, "offsets", string(b[83:90]))
}
