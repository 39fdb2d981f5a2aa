package envelope_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/envelope/envelopetest"
)

// Test-only keys and names. These DEKs are public; never use them for anything else.
const (
	testRegion = "us-east-1"
	testARN    = "arn:aws:kms:us-east-1:111122223333:key/mrk-00000000000000000000000000000001"
)

func testDEK(n int) []byte {
	k := sha256.Sum256([]byte{'e', 'n', 'v', 'd', 'r', ' ', 't', 'e', 's', 't', ' ', 'd', 'e', 'k', byte(n)})
	return k[:]
}

func testSalt(name string) []byte {
	s := sha256.Sum256([]byte("envdr test salt " + name))
	return s[:]
}

var (
	streamOnce sync.Once
	stream     []byte
)

// payload returns the first n bytes of one fixed pseudo-random stream. Every test plaintext is
// a prefix of it, so "output is a prefix of the stream" is a complete check that nothing but
// authentic plaintext was released, even when chunks of different envelopes are spliced.
func payload(n int) []byte {
	streamOnce.Do(func() {
		stream = make([]byte, 4<<20)
		_, _ = io.ReadFull(envelopetest.DeterministicReader("envdr test payload"), stream)
	})
	if n > len(stream) {
		panic("payload too long")
	}
	return stream[:n:n]
}

// isStreamPrefix reports whether b is a prefix of the payload stream.
func isStreamPrefix(b []byte) bool {
	payload(0)
	return len(b) <= len(stream) && bytes.Equal(stream[:len(b)], b)
}

func mustContext(t testing.TB, id string, user map[string]string) envelope.Context {
	t.Helper()
	c, err := envelope.NewContext(id, user)
	require.NoError(t, err)
	return c
}

// sealWith seals pt under dek with the given header fields (salt and wrap fixed by the caller).
func sealWith(t testing.TB, dek []byte, hdr *envelope.Header, pt []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := envelope.NewWriterFixedSalt(&buf, dek, hdr)
	require.NoError(t, err)
	_, err = w.ReadFrom(bytes.NewReader(pt))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// pipeRoundTripAlloc seals n bytes of the pattern stream (header ID and context id) with the
// writer newWriter makes, in a goroutine over a pipe, opens them on the other end with the reader
// newReader makes, requires the pattern back, and returns the heap bytes allocated meanwhile.
func pipeRoundTripAlloc(t testing.TB, id string, n int64,
	newWriter func(io.Writer, *envelope.Header) (*envelope.Writer, error),
	newReader func(io.Reader) (*envelope.Reader, error)) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	pr, pw := io.Pipe()
	go func() {
		hdr := &envelope.Header{ID: id, Context: mustContext(t, id, nil)}
		w, err := newWriter(pw, hdr)
		if err == nil {
			_, err = w.ReadFrom(&patternReader{n: n})
		}
		if err == nil {
			err = w.Close()
		}
		pw.CloseWithError(err)
	}()
	r, err := newReader(pr)
	require.NoError(t, err)
	sum := sha256.New()
	got, err := r.WriteTo(sum)
	require.NoError(t, err)
	require.Equal(t, n, got)
	runtime.ReadMemStats(&after)
	want := sha256.New()
	_, _ = io.Copy(want, &patternReader{n: n})
	require.Equal(t, want.Sum(nil), sum.Sum(nil))
	return after.TotalAlloc - before.TotalAlloc
}

// rawHeader encodes header fields without validation, to build malformed headers.
type rawHeader struct {
	version   byte
	lenDelta  int // added to the true length in header_len
	flags     byte
	chunkSize uint32
	salt      []byte
	commit    []byte
	id        string
	region    string
	arn       string
	wrapped   []byte
	ctxKeys   []string // in the order given (may be unsorted on purpose)
	ctxVals   []string
	extra     []byte // appended after the context, inside header_len
}

func rawFrom(h *envelope.Header) rawHeader {
	r := rawHeader{
		version: 1, flags: 0, chunkSize: uint32(h.ChunkSize), salt: h.Salt, commit: h.Commitment,
		id: h.ID, region: h.HomeRegion, arn: h.KeyARN, wrapped: h.WrappedDEK,
	}
	if h.SharedKey {
		r.flags = 1
	}
	m := h.Context.Map()
	for _, k := range h.Context.Keys() {
		r.ctxKeys = append(r.ctxKeys, k)
		r.ctxVals = append(r.ctxVals, m[k])
	}
	return r
}

func (r rawHeader) encode() []byte {
	var b []byte
	b = append(b, envelope.Magic[:]...)
	b = append(b, r.version, 0, 0, 0, 0)
	b = append(b, r.flags)
	b = binary.BigEndian.AppendUint32(b, r.chunkSize)
	b = append(b, r.salt...)
	b = append(b, r.commit...)
	b = append(b, byte(len(r.id)))
	b = append(b, r.id...)
	b = append(b, byte(len(r.region)))
	b = append(b, r.region...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.arn)))
	b = append(b, r.arn...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.wrapped)))
	b = append(b, r.wrapped...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.ctxKeys)))
	for i, k := range r.ctxKeys {
		b = binary.BigEndian.AppendUint16(b, uint16(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.ctxVals[i])))
		b = append(b, r.ctxVals[i]...)
	}
	b = append(b, r.extra...)
	binary.BigEndian.PutUint32(b[9:13], uint32(len(b)+r.lenDelta))
	return b
}

// splitEnvelope returns the header bytes and the sealed chunks.
func splitEnvelope(t testing.TB, file []byte) ([]byte, [][]byte, *envelope.Header) {
	t.Helper()
	h, n, err := envelope.ParseHeader(file)
	require.NoError(t, err)
	var chunks [][]byte
	enc := h.ChunkSize + envelope.TagSize
	for rest := file[n:]; len(rest) > 0; {
		c := min(enc, len(rest))
		chunks = append(chunks, rest[:c:c])
		rest = rest[c:]
	}
	return file[:n:n], chunks, h
}

func join(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// staticUnwrapper returns a fixed DEK whatever the wrap: vectors test the format, not KMS.
type staticUnwrapper struct{ dek []byte }

func (s staticUnwrapper) Unwrap(_ context.Context, _ []byte, _ string, _ envelope.Context) ([]byte, error) {
	return bytes.Clone(s.dek), nil
}

// requireBytes compares byte slices treating nil and empty alike, without dumping megabytes.
func requireBytes(t testing.TB, want, got []byte) {
	t.Helper()
	if !bytes.Equal(want, got) {
		require.Failf(t, "bytes differ", "want %d bytes (sha256 %x), got %d bytes (sha256 %x)",
			len(want), sha256.Sum256(want), len(got), sha256.Sum256(got))
	}
}
