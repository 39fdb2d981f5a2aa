package envelope_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/envelope/envelopetest"
)

func TestSealOpenSizes(t *testing.T) {
	t.Parallel()
	kms := envelopetest.NewFakeKMS(testRegion, testARN, "sizes", nil)
	for _, cs := range []int{envelope.MinChunkSize, 1000, envelope.DefaultChunkSize} {
		for _, n := range []int{0, 1, cs - 1, cs, cs + 1, 2 * cs, 3*cs + 7} {
			t.Run(fmt.Sprintf("chunk=%d/size=%d", cs, n), func(t *testing.T) {
				t.Parallel()
				pt := payload(n)
				var sealed bytes.Buffer
				hdr, err := envelope.Seal(context.Background(), &sealed, bytes.NewReader(pt), kms,
					envelope.SealOptions{ChunkSize: cs, Context: map[string]string{"k": "v"}})
				require.NoError(t, err)
				chunks := max(1, (n+cs-1)/cs)
				hl, err := hdr.MarshalBinary()
				require.NoError(t, err)
				require.Equal(t, len(hl)+n+chunks*envelope.TagSize, sealed.Len(), "ciphertext size")
				require.Len(t, hdr.ID, 32, "random IDs are 32 hex digits")
				require.Equal(t, testRegion, hdr.HomeRegion, "home region comes from the data key")

				var out bytes.Buffer
				got, err := envelope.Open(context.Background(), &out, bytes.NewReader(sealed.Bytes()), kms,
					envelope.OpenOptions{Context: map[string]string{"k": "v"}})
				require.NoError(t, err)
				require.Equal(t, hdr, got)
				requireBytes(t, pt, out.Bytes())
			})
		}
	}
}

// TestWriterPaths: Write in odd pieces, ReadFrom and Seal produce identical bytes for the
// same header and salt, and Reader.Read with tiny buffers agrees with WriteTo.
func TestWriterPaths(t *testing.T) {
	t.Parallel()
	dek := testDEK(3)
	const cs = 100
	pt := payload(1234)
	hdr := &envelope.Header{ID: "paths", ChunkSize: cs, Salt: testSalt("paths"), KeyARN: testARN, WrappedDEK: []byte("w"),
		Context: mustContext(t, "paths", nil)}
	want := sealWith(t, dek, hdr, pt)

	for _, piece := range []int{1, 7, cs - 1, cs, cs + 1, 1000} {
		var buf bytes.Buffer
		w, err := envelope.NewWriterFixedSalt(&buf, dek, hdr)
		require.NoError(t, err)
		for rest := pt; len(rest) > 0; {
			k := min(piece, len(rest))
			n, err := w.Write(rest[:k])
			require.NoError(t, err)
			require.Equal(t, k, n)
			rest = rest[k:]
		}
		require.NoError(t, w.Close())
		require.NoError(t, w.Close(), "Close twice is harmless")
		_, err = w.Write([]byte{1})
		require.Error(t, err, "write after Close")
		requireBytes(t, want, buf.Bytes())
	}
	// ReadFrom with readers that return short reads and data together with EOF.
	for name, src := range map[string]io.Reader{
		"one byte": iotest.OneByteReader(bytes.NewReader(pt)),
		"half":     iotest.HalfReader(bytes.NewReader(pt)),
		"data+EOF": iotest.DataErrReader(bytes.NewReader(pt)),
	} {
		var buf bytes.Buffer
		w, err := envelope.NewWriterFixedSalt(&buf, dek, hdr)
		require.NoError(t, err)
		n, err := w.ReadFrom(src)
		require.NoError(t, err, name)
		require.EqualValues(t, len(pt), n)
		require.NoError(t, w.Close())
		requireBytes(t, want, buf.Bytes())
	}
	// Reading back: tiny Read buffers and a one-byte source.
	r, err := envelope.NewReader(iotest.OneByteReader(bytes.NewReader(want)), dek)
	require.NoError(t, err)
	var out bytes.Buffer
	p := make([]byte, 3)
	for {
		n, err := r.Read(p)
		out.Write(p[:n])
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
	}
	requireBytes(t, pt, out.Bytes())
	require.NoError(t, iotest.TestReader(mustReader(t, want, dek), pt))
}

func mustReader(t *testing.T, file, dek []byte) *envelope.Reader {
	t.Helper()
	r, err := envelope.NewReader(bytes.NewReader(file), dek)
	require.NoError(t, err)
	return r
}

func TestNewWriterRejects(t *testing.T) {
	t.Parallel()
	good := func() *envelope.Header {
		return &envelope.Header{ID: "x1", Context: mustContext(t, "x1", nil), KeyARN: testARN, WrappedDEK: []byte("w")}
	}
	for name, c := range map[string]struct {
		dek  []byte
		edit func(h *envelope.Header)
		want error
	}{
		"short DEK":          {dek: make([]byte, 16), want: envelope.ErrBadKey},
		"wrong commitment":   {dek: testDEK(1), edit: func(h *envelope.Header) { h.Commitment = make([]byte, 32) }, want: envelope.ErrCommitmentMismatch},
		"chunk too small":    {dek: testDEK(1), edit: func(h *envelope.Header) { h.ChunkSize = 10 }, want: envelope.ErrBadHeader},
		"chunk too big":      {dek: testDEK(1), edit: func(h *envelope.Header) { h.ChunkSize = envelope.MaxChunkSize + 1 }, want: envelope.ErrBadHeader},
		"id not in context":  {dek: testDEK(1), edit: func(h *envelope.Header) { h.ID = "x2" }, want: envelope.ErrBadContext},
		"no context":         {dek: testDEK(1), edit: func(h *envelope.Header) { h.Context = envelope.Context{} }, want: envelope.ErrBadContext},
		"bad region":         {dek: testDEK(1), edit: func(h *envelope.Header) { h.HomeRegion = "US_EAST" }, want: envelope.ErrBadHeader},
		"oversize wrap":      {dek: testDEK(1), edit: func(h *envelope.Header) { h.WrappedDEK = make([]byte, envelope.MaxWrappedDEKLen+1) }, want: envelope.ErrBadHeader},
		"control char key":   {dek: testDEK(1), edit: func(h *envelope.Header) { h.KeyARN = "arn\n" }, want: envelope.ErrBadHeader},
		"unsupported format": {dek: testDEK(1), edit: func(h *envelope.Header) { h.Version = 2 }, want: envelope.ErrUnknownVersion},
	} {
		h := good()
		if c.edit != nil {
			c.edit(h)
		}
		var buf bytes.Buffer
		_, err := envelope.NewWriter(&buf, c.dek, h)
		require.ErrorIs(t, err, c.want, name)
		require.Zero(t, buf.Len(), "%s: nothing written", name)
	}
}

// failingWriter fails after n bytes, to check that Writer errors stick.
type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, errors.New("disk full")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriterErrorsStick(t *testing.T) {
	t.Parallel()
	hdr := &envelope.Header{ID: "sticky", ChunkSize: 64, Context: mustContext(t, "sticky", nil)}
	w, err := envelope.NewWriter(&failingWriter{n: 1000}, testDEK(1), hdr)
	require.NoError(t, err)
	_, err = w.Write(payload(5000))
	require.ErrorContains(t, err, "disk full")
	_, err = w.Write([]byte{1})
	require.ErrorContains(t, err, "disk full")
	require.ErrorContains(t, w.Close(), "disk full")
}

func TestSealValidation(t *testing.T) {
	t.Parallel()
	kms := envelopetest.NewFakeKMS(testRegion, testARN, "validation", nil)
	ctx := context.Background()
	for name, c := range map[string]struct {
		opts envelope.SealOptions
		gen  envelope.KeyGenerator
		want error
	}{
		"reserved key":     {opts: envelope.SealOptions{Context: map[string]string{"envdr:id": "x"}}, want: envelope.ErrBadContext},
		"reserved prefix":  {opts: envelope.SealOptions{Context: map[string]string{"envdr:other": "x"}}, want: envelope.ErrBadContext},
		"bad id":           {opts: envelope.SealOptions{ID: "../etc"}, want: envelope.ErrBadContext},
		"bad chunk":        {opts: envelope.SealOptions{ChunkSize: 1}},
		"region mismatch":  {opts: envelope.SealOptions{HomeRegion: "eu-west-1"}, want: envelope.ErrBadKey},
		"short DEK":        {gen: badGen{plain: make([]byte, 8), wrapped: []byte("w")}, want: envelope.ErrBadKey},
		"no wrap":          {gen: badGen{plain: make([]byte, 32)}, want: envelope.ErrBadKey},
		"generator failed": {gen: badGen{err: errors.New("ThrottlingException")}},
	} {
		gen := c.gen
		if gen == nil {
			gen = kms
		}
		var buf bytes.Buffer
		_, err := envelope.Seal(ctx, &buf, bytes.NewReader(payload(10)), gen, c.opts)
		require.Error(t, err, name)
		if c.want != nil {
			require.ErrorIs(t, err, c.want, name)
		}
		require.Zero(t, buf.Len(), "%s: nothing written", name)
	}
}

type badGen struct {
	plain, wrapped []byte
	err            error
}

func (b badGen) GenerateDataKey(context.Context, envelope.Context) (*envelope.DataKey, error) {
	if b.err != nil {
		return nil, b.err
	}
	return &envelope.DataKey{Plaintext: b.plain, Wrapped: b.wrapped, KeyARN: testARN, Region: testRegion}, nil
}

// wipeCheckGen records the DataKey it handed out so the test can see Seal wiped it.
type wipeCheckGen struct {
	kms  *envelopetest.FakeKMS
	last *envelope.DataKey
}

func (g *wipeCheckGen) GenerateDataKey(ctx context.Context, ec envelope.Context) (*envelope.DataKey, error) {
	dk, err := g.kms.GenerateDataKey(ctx, ec)
	g.last = dk
	return dk, err
}

func TestSealWipesDEK(t *testing.T) {
	t.Parallel()
	g := &wipeCheckGen{kms: envelopetest.NewFakeKMS(testRegion, testARN, "wipe", nil)}
	_, err := envelope.Seal(context.Background(), io.Discard, bytes.NewReader(payload(100)), g, envelope.SealOptions{})
	require.NoError(t, err)
	require.Equal(t, make([]byte, envelope.DEKSize), g.last.Plaintext, "Seal must wipe the DEK it was given")
}

func TestCommitment(t *testing.T) {
	t.Parallel()
	c1, err := envelope.Commitment(testDEK(1))
	require.NoError(t, err)
	c2, err := envelope.Commitment(testDEK(2))
	require.NoError(t, err)
	require.Len(t, c1, envelope.CommitmentSize)
	require.NotEqual(t, c1, c2)
	require.NoError(t, envelope.CheckCommitment(testDEK(1), c1))
	require.ErrorIs(t, envelope.CheckCommitment(testDEK(2), c1), envelope.ErrCommitmentMismatch)
	require.ErrorIs(t, envelope.CheckCommitment(testDEK(1), c1[:31]), envelope.ErrCommitmentMismatch)
	require.ErrorIs(t, envelope.CheckCommitment(make([]byte, 5), c1), envelope.ErrBadKey)
	require.NoError(t, envelope.VerifyCommitment(testDEK(1), &envelope.Header{Commitment: c1}))
	// Known answer, computed independently (Python hmac/hashlib HKDF) from FORMAT.md's
	// definition: HKDF-SHA256(IKM=DEK, salt=none, info="envdr v1 key commitment").
	require.Equal(t, "b1fdf3d30fdc3714bf41642baa8cd38c2e4c3a1a87b9acb6d4cfe550f2f8f14c", fmt.Sprintf("%x", c1))
}

// patternReader yields n bytes of a cheap repeating pattern without holding them.
type patternReader struct{ n, off int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	k := min(int64(len(b)), p.n-p.off)
	for i := range b[:k] {
		b[i] = byte((p.off + int64(i)) * 7)
	}
	p.off += k
	return int(k), nil
}

// TestConstantMemory seals and opens a large stream through a pipe and checks that the heap
// allocated does not grow with the payload: a whole 256 MiB round trip allocates about as much
// as a 1 MiB one (the chunk buffers, the header, the AEAD).
func TestConstantMemory(t *testing.T) {
	size := int64(256 << 20)
	if testing.Short() {
		size = 32 << 20
	}
	dek := testDEK(4)
	roundTrip := func(n int64) (alloc uint64) {
		return pipeRoundTripAlloc(t, "big", n, func(dst io.Writer, hdr *envelope.Header) (*envelope.Writer, error) {
			return envelope.NewWriter(dst, dek, hdr)
		}, func(src io.Reader) (*envelope.Reader, error) { return envelope.NewReader(src, dek) })
	}
	small := roundTrip(1 << 20)
	large := roundTrip(size)
	t.Logf("heap allocated: %d bytes for 1 MiB, %d bytes for %d MiB", small, large, size>>20)
	require.Less(t, large, small+256<<10, "allocation grows with payload size")
	require.Less(t, large, uint64(1<<20), "a round trip should allocate well under 1 MiB")
}

// TestAllocsPerChunk: steady-state sealing and opening allocate nothing per chunk.
func TestAllocsPerChunk(t *testing.T) {
	dek := testDEK(5)
	hdr := &envelope.Header{ID: "allocs", ChunkSize: 4096, Context: mustContext(t, "allocs", nil)}
	w, err := envelope.NewWriter(io.Discard, dek, hdr)
	require.NoError(t, err)
	chunk := payload(4096)
	allocs := testing.AllocsPerRun(200, func() {
		_, _ = w.Write(chunk)
	})
	require.Zero(t, allocs, "Writer.Write allocates per chunk")

	sealed := sealWith(t, dek, hdr, payload(200*4096))
	r := mustReader(t, sealed, dek)
	buf := make([]byte, 4096)
	allocs = testing.AllocsPerRun(150, func() {
		_, _ = io.ReadFull(r, buf)
	})
	require.Zero(t, allocs, "Reader.Read allocates per chunk")
}

// TestNewWriterFreshSalt: the salt is always drawn inside the writer. Before issue 13, NewWriter
// took the caller's header salt, so two writers given the same header (and DEK) derived the same
// chunk key and reused every counter nonce: the same keystream for two payloads.
func TestNewWriterFreshSalt(t *testing.T) {
	t.Parallel()
	dek := testDEK(5)
	hdr := &envelope.Header{ID: "fresh", ChunkSize: 64, Salt: testSalt("fresh"), KeyARN: testARN, WrappedDEK: []byte("w"),
		Context: mustContext(t, "fresh", nil)}
	orig := bytes.Clone(hdr.Salt)
	seal := func() (*envelope.Header, []byte) {
		var buf bytes.Buffer
		w, err := envelope.NewWriter(&buf, dek, hdr)
		require.NoError(t, err)
		_, err = w.Write(make([]byte, 100))
		require.NoError(t, err)
		require.NoError(t, w.Close())
		return w.Header(), buf.Bytes()
	}
	h1, c1 := seal()
	h2, c2 := seal()
	require.NotEqual(t, h1.Salt, h2.Salt, "each writer draws its own salt")
	require.NotEqual(t, orig, h1.Salt, "the caller's salt is not used")
	require.Equal(t, orig, hdr.Salt, "the caller's header is not modified")
	n1, n2 := len(c1)-164, len(c2)-164 // the chunks: 64+16 and 36+16 bytes
	require.NotEqual(t, c1[n1:n1+64], c2[n2:n2+64], "different keystreams")
	for _, c := range [][]byte{c1, c2} {
		r, err := envelope.NewReader(bytes.NewReader(c), dek)
		require.NoError(t, err)
		got, err := io.ReadAll(r)
		require.NoError(t, err)
		require.Equal(t, make([]byte, 100), got)
	}
}

// keepingReader hands out secret once, keeping the caller's buffer (the Writer's chunk buffer),
// then fails.
type keepingReader struct {
	secret []byte
	kept   []byte
	reads  int
}

func (k *keepingReader) Read(p []byte) (int, error) {
	k.reads++
	if k.reads > 1 {
		return 0, errors.New("source failed")
	}
	k.kept = p
	return copy(p, k.secret), nil
}

// keepingWriter keeps the plaintext slice it is handed (the Reader's chunk buffer) and fails.
type keepingWriter struct{ kept []byte }

func (k *keepingWriter) Write(p []byte) (int, error) {
	k.kept = p
	return 0, errors.New("sink failed")
}

// Buffers that held plaintext are wiped on error paths too. Before issue 13, Seal returned on a
// source error without wiping the chunk buffer, and Reader.WriteTo returned on a sink error
// leaving the decrypted chunk in its buffer.
func TestErrorPathsWipePlaintext(t *testing.T) {
	t.Parallel()
	requireErrorPathsWipe(t, "wipe", 0, "chunk", map[string]func([]byte) io.Reader{
		"stream":    func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
		"in memory": func(b []byte) io.Reader { return bytes.NewReader(b) },
	})
}

// requireErrorPathsWipe requires that Seal with jobs wipes its buf ("chunk", "segment") buffer
// when the source fails, and that Open with jobs wipes the plaintext buf when the sink fails,
// reading the envelope through each of opens.
func requireErrorPathsWipe(t *testing.T, seed string, jobs int, buf string, opens map[string]func([]byte) io.Reader) {
	t.Helper()
	kms := envelopetest.NewFakeKMS(testRegion, testARN, seed, nil)
	secret := bytes.Repeat([]byte("SECRET!"), 20)
	src := &keepingReader{secret: secret}
	_, err := envelope.Seal(context.Background(), io.Discard, src, kms, envelope.SealOptions{ChunkSize: 1024, Jobs: jobs})
	require.ErrorContains(t, err, "source failed")
	require.NotNil(t, src.kept)
	require.Equal(t, make([]byte, len(src.kept)), src.kept, "Seal wiped its %s buffer", buf)

	var sealed bytes.Buffer
	_, err = envelope.Seal(context.Background(), &sealed, bytes.NewReader(bytes.Repeat(secret, 100)), kms, envelope.SealOptions{ChunkSize: 1024})
	require.NoError(t, err)
	for name, open := range opens {
		dst := &keepingWriter{}
		_, err := envelope.Open(context.Background(), dst, open(sealed.Bytes()), kms, envelope.OpenOptions{Jobs: jobs})
		require.ErrorContains(t, err, "sink failed", name)
		require.NotEmpty(t, dst.kept, name)
		require.Equal(t, make([]byte, len(dst.kept)), dst.kept, "%s: Open wiped the plaintext %s", name, buf)
	}
}

// Seal and Open stop between chunks once their context is cancelled.
func TestContextCancelStopsBetweenChunks(t *testing.T) {
	t.Parallel()
	requireCancelStops(t, "cancel", 0, "chunk", 1<<20, 1<<20, func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) })
}

// requireCancelStops requires that Seal with jobs of sealN zero bytes, and Open with jobs of an
// envelope of openN zero bytes read through open, stop within a unit ("chunk", "segment") of a
// cancel made at the sink's third write.
func requireCancelStops(t *testing.T, seed string, jobs int, unit string, sealN, openN int64, open func([]byte) io.Reader) {
	t.Helper()
	kms := envelopetest.NewFakeKMS(testRegion, testARN, seed, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cw := &cancelAfter{n: 3, cancel: cancel}
	_, err := envelope.Seal(ctx, cw, io.LimitReader(zeroReader{}, sealN), kms, envelope.SealOptions{ChunkSize: 1024, Jobs: jobs})
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, cw.writes, 6, "Seal stopped within a %s of the cancel", unit)

	var sealed bytes.Buffer
	_, err = envelope.Seal(context.Background(), &sealed, io.LimitReader(zeroReader{}, openN), kms, envelope.SealOptions{ChunkSize: 1024, Jobs: jobs})
	require.NoError(t, err)
	ctx, cancel = context.WithCancel(context.Background())
	cw = &cancelAfter{n: 3, cancel: cancel}
	_, err = envelope.Open(ctx, cw, open(sealed.Bytes()), kms, envelope.OpenOptions{Jobs: jobs})
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, cw.writes, 6, "Open stopped within a %s of the cancel", unit)
}

type cancelAfter struct {
	n, writes int
	cancel    func()
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.writes++
	if c.writes == c.n {
		c.cancel()
	}
	return len(p), nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }
