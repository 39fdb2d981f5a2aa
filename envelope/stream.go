package envelope

import (
	"bytes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
)

// HKDF labels. Distinct labels make the commitment and the chunk key independent functions of
// the DEK; the version in the label keeps future formats from colliding with this one.
const (
	labelPayload    = "envdr v1 payload key"
	labelCommitment = "envdr v1 key commitment"
)

const nonceSize = 12

// Commitment returns the key commitment of a DEK: HKDF-SHA256(DEK, no salt, labelCommitment),
// 32 bytes. It depends only on the DEK, so a record or event can carry it without the header
// and the replicator can check any region's unwrapped DEK against it.
func Commitment(dek []byte) ([]byte, error) {
	if len(dek) != DEKSize {
		return nil, fmt.Errorf("%w: DEK is %d bytes, want %d", ErrBadKey, len(dek), DEKSize)
	}
	return hkdf.Key(sha256.New, dek, nil, labelCommitment, CommitmentSize)
}

// CheckCommitment compares the commitment of dek with want in constant time and returns nil
// or an error matching ErrCommitmentMismatch.
func CheckCommitment(dek, want []byte) error {
	got, err := Commitment(dek)
	if err != nil {
		return err
	}
	if len(want) != CommitmentSize || subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrCommitmentMismatch
	}
	return nil
}

// VerifyCommitment checks that dek is the key hdr was sealed with; Open calls it before any
// chunk is decrypted.
func VerifyCommitment(dek []byte, hdr *Header) error {
	return CheckCommitment(dek, hdr.Commitment)
}

// Wipe zeroes b. Go cannot promise that no other copy of a key exists: the garbage collector
// may have moved it, the AES key schedule inside crypto/cipher cannot be reached, and the
// compiler may keep copies in registers or on the stack. Wiping still shortens the time the
// plaintext DEK sits in the heap and keeps it out of core dumps taken later.
func Wipe(b []byte) {
	clear(b)
	runtime.KeepAlive(b)
}

// setNonce writes the STREAM nonce: 3 zero bytes and a 64-bit big-endian chunk counter (together
// the 88 bits before the flag; the counter never uses the top 24), then the final flag.
func setNonce(n *[nonceSize]byte, counter uint64, final bool) {
	n[0], n[1], n[2] = 0, 0, 0
	for i := 0; i < 8; i++ {
		n[3+i] = byte(counter >> (56 - 8*i))
	}
	if final {
		n[11] = 1
	} else {
		n[11] = 0
	}
}

// Writer seals a payload chunk by chunk. It holds one chunk in memory: a full chunk is sealed
// only once more data arrives, because the last chunk must carry the final flag and the
// length of a stream is not known in advance. Close seals the final chunk; without Close the
// envelope is truncated and will not open.
type Writer struct {
	dst       io.Writer
	aead      cipher.AEAD
	aad       [32]byte
	nonce     [nonceSize]byte
	buf       []byte // chunkSize plaintext + room for the tag: sealed in place
	n         int    // plaintext bytes pending in buf
	chunkSize int
	counter   uint64
	written   int64
	hdr       *Header
	err       error
	closed    bool

	aeads []cipher.AEAD // one per worker when ReadFrom runs in parallel (jobs > 1)
	hooks parallelHooks // tests only
}

// NewWriter writes the header to dst and returns a Writer sealing with dek, which is not kept
// (the caller wipes it). hdr supplies ID, Context, HomeRegion, KeyARN, WrappedDEK and
// optionally ChunkSize (0: DefaultChunkSize) and Commitment (nil: computed; if set it must match
// dek). hdr.Salt is ignored: every Writer draws a fresh random salt, so two writers never share a
// chunk key (and so a keystream) even when given the same header and DEK. hdr is not modified;
// Header returns the final one, with the salt used. Seal is the high-level API; NewWriter is for
// callers that hold a raw DEK (tests, benchmarks).
func NewWriter(dst io.Writer, dek []byte, hdr *Header) (*Writer, error) {
	return newWriter(dst, dek, hdr, nil, 1)
}

// NewWriterJobs is NewWriter whose ReadFrom seals on jobs workers (1..MaxJobs; 1 is NewWriter):
// it reads ahead, seals segments of consecutive chunks concurrently and writes them strictly in
// order, in memory bounded by the jobs and the chunk size (see parallel.go). The envelope is
// byte for byte what NewWriter would write with the same salt. Write stays sequential.
func NewWriterJobs(dst io.Writer, dek []byte, hdr *Header, jobs int) (*Writer, error) {
	jobs, err := checkJobs(jobs)
	if err != nil {
		return nil, err
	}
	return newWriter(dst, dek, hdr, nil, jobs)
}

// newWriter is NewWriter with, when fixedSalt is not nil, that salt instead of a fresh one: only
// for deterministic test vectors (export_test.go), never reachable from outside the package.
func newWriter(dst io.Writer, dek []byte, hdr *Header, fixedSalt []byte, jobs int) (*Writer, error) {
	h := *hdr
	if h.Version == 0 {
		h.Version = FormatVersion
	}
	if h.ChunkSize == 0 {
		h.ChunkSize = DefaultChunkSize
	}
	if fixedSalt != nil {
		h.Salt = bytes.Clone(fixedSalt)
	} else {
		h.Salt = make([]byte, SaltSize)
		if _, err := rand.Read(h.Salt); err != nil {
			return nil, err
		}
	}
	com, err := Commitment(dek)
	if err != nil {
		return nil, err
	}
	if h.Commitment == nil {
		h.Commitment = com
	} else if subtle.ConstantTimeCompare(h.Commitment, com) != 1 {
		return nil, ErrCommitmentMismatch
	}
	raw, err := h.MarshalBinary()
	if err != nil {
		return nil, err
	}
	aeads, err := newChunkAEADs(dek, h.Salt, jobs)
	if err != nil {
		return nil, err
	}
	if _, err := dst.Write(raw); err != nil {
		return nil, err
	}
	w := &Writer{
		dst:       dst,
		aead:      aeads[0],
		aad:       headerHash(raw),
		buf:       getBuf(h.ChunkSize + TagSize + 1),
		chunkSize: h.ChunkSize,
		hdr:       &h,
	}
	if jobs > 1 {
		w.aeads = aeads
	}
	return w, nil
}

// Header returns the header that was written.
func (w *Writer) Header() *Header { return w.hdr }

// Written is the number of plaintext bytes accepted so far.
func (w *Writer) Written() int64 { return w.written }

// Write buffers p and seals every chunk that is known not to be the last.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("envelope: write after Close")
	}
	total := 0
	for len(p) > 0 {
		if w.n == w.chunkSize {
			// More data follows, so the buffered chunk is not the last.
			if err := w.seal(false); err != nil {
				return total, err
			}
		}
		if w.n == 0 && len(p) > w.chunkSize {
			// A whole chunk with more after it: seal straight from p, saving a copy. Large
			// writes (bytes.Reader.WriteTo, io.Copy from memory) take this path.
			if err := w.sealFrom(p[:w.chunkSize]); err != nil {
				return total, err
			}
			p = p[w.chunkSize:]
			total += w.chunkSize
			w.written += int64(w.chunkSize)
			continue
		}
		c := copy(w.buf[w.n:w.chunkSize], p)
		w.n += c
		p = p[c:]
		total += c
		w.written += int64(c)
	}
	return total, nil
}

// ReadFrom reads src to EOF straight into the chunk buffer (no intermediate copy), or, when
// src is a *bytes.Reader or *bytes.Buffer, seals straight from its memory. It does not Close
// the Writer.
func (w *Writer) ReadFrom(src io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("envelope: write after Close")
	}
	switch src.(type) {
	case *bytes.Reader, *bytes.Buffer:
		// Their WriteTo hands over the data in one slice, sealed without copying. Not every
		// WriterTo: os.File's goes through a 32 KiB io.Copy buffer (an extra copy) and
		// strings.Reader's converts the whole rest to a new []byte (not constant memory).
		if w.aeads == nil {
			return src.(io.WriterTo).WriteTo(writerOnly{w})
		}
		if w.n == 0 {
			return src.(io.WriterTo).WriteTo(&memParallel{w: w})
		}
	}
	if w.aeads != nil {
		return w.readFromParallel(src)
	}
	var total int64
	for {
		// Read one byte past the chunk (into the tag's room) to learn whether more follows.
		m, err := io.ReadFull(src, w.buf[w.n:w.chunkSize+1])
		w.n += m
		total += int64(m)
		w.written += int64(m)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil // the pending chunk is the last one; Close seals it
		}
		if err != nil {
			w.n = min(w.n, w.chunkSize) // the over-read byte is never sealed after an error
			return total, err
		}
		extra := w.buf[w.chunkSize]
		w.n = w.chunkSize
		if err := w.seal(false); err != nil {
			return total, err
		}
		w.buf[0] = extra
		w.n = 1
	}
}

// Close seals the final chunk. It does not close dst.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err == nil {
		w.err = w.seal(true)
	}
	// Chunks are sealed in place, but after an error the buffer may still hold plaintext.
	putBuf(w.buf, true)
	w.buf = nil
	return w.err
}

// discard ends the Writer after a failure without sealing a final chunk, wiping the chunk
// buffer, which may hold plaintext.
func (w *Writer) discard() {
	if w.closed {
		return
	}
	w.closed = true
	if w.err == nil {
		w.err = errors.New("envelope: writer discarded after an error")
	}
	putBuf(w.buf, true)
	w.buf = nil
}

// writerOnly hides ReadFrom so that a source's WriteTo cannot call back into it.
type writerOnly struct{ w *Writer }

func (o writerOnly) Write(p []byte) (int, error) { return o.w.Write(p) }

// sealFrom seals a full, non-final chunk from p (not modified) into the chunk buffer.
func (w *Writer) sealFrom(p []byte) error {
	if w.counter == math.MaxUint64 {
		w.err = errors.New("envelope: chunk counter exhausted")
		return w.err
	}
	setNonce(&w.nonce, w.counter, false)
	out := w.aead.Seal(w.buf[:0], w.nonce[:], p, w.aad[:])
	w.counter++
	if _, err := w.dst.Write(out); err != nil {
		w.err = err
		return err
	}
	return nil
}

func (w *Writer) seal(final bool) error {
	if w.counter == math.MaxUint64 {
		w.err = errors.New("envelope: chunk counter exhausted")
		return w.err
	}
	setNonce(&w.nonce, w.counter, final)
	out := w.aead.Seal(w.buf[:0], w.nonce[:], w.buf[:w.n], w.aad[:])
	w.counter++
	w.n = 0
	if _, err := w.dst.Write(out); err != nil {
		w.err = err
		return err
	}
	return nil
}

// Reader opens a payload chunk by chunk. A chunk's plaintext is released only after the chunk
// authenticates; a failure later in the stream still leaves earlier, authentic chunks with the
// consumer, so callers that need all-or-nothing output write to a temporary file and rename it
// on success (as envdr open does).
type Reader struct {
	src       io.Reader
	aead      cipher.AEAD
	aad       [32]byte
	nonce     [nonceSize]byte
	cbuf      []byte // one sealed chunk plus one byte of look-ahead
	pbuf      []byte // decrypted chunk; out of place so a failed chunk can be re-checked
	plain     []byte // authenticated plaintext not yet returned
	carry     bool   // cbuf[enc] holds the first byte of the next chunk
	chunkSize int
	counter   uint64
	done      bool
	err       error
	hdr       *Header

	aeads []cipher.AEAD // one per worker when WriteTo runs in parallel (jobs > 1)
	hooks parallelHooks // tests only
}

// NewReader reads and validates the header from src, checks dek against its commitment and
// returns a Reader of the plaintext. dek is not kept (the caller wipes it). Open is the
// high-level API; NewReader is for callers that hold a raw DEK (tests, benchmarks).
func NewReader(src io.Reader, dek []byte) (*Reader, error) {
	hdr, raw, err := readHeader(src)
	if err != nil {
		return nil, err
	}
	if err := VerifyCommitment(dek, hdr); err != nil {
		return nil, err
	}
	return newReader(src, hdr, raw, dek, 1)
}

// NewReaderJobs is NewReader whose WriteTo authenticates on jobs workers (1..MaxJobs; 1 is
// NewReader). Release rules are those of the sequential Reader: plaintext goes to the writer in
// order, and only once its chunk and every chunk before it authenticated (see parallel.go).
// Read stays sequential.
func NewReaderJobs(src io.Reader, dek []byte, jobs int) (*Reader, error) {
	jobs, err := checkJobs(jobs)
	if err != nil {
		return nil, err
	}
	hdr, raw, err := readHeader(src)
	if err != nil {
		return nil, err
	}
	if err := VerifyCommitment(dek, hdr); err != nil {
		return nil, err
	}
	return newReader(src, hdr, raw, dek, jobs)
}

func newReader(src io.Reader, hdr *Header, raw, dek []byte, jobs int) (*Reader, error) {
	aeads, err := newChunkAEADs(dek, hdr.Salt, jobs)
	if err != nil {
		return nil, err
	}
	r := &Reader{
		src:       src,
		aead:      aeads[0],
		aad:       headerHash(raw),
		cbuf:      getBuf(hdr.ChunkSize + TagSize + 1),
		pbuf:      getBuf(hdr.ChunkSize + TagSize + 1)[:hdr.ChunkSize],
		chunkSize: hdr.ChunkSize,
		hdr:       hdr,
	}
	if jobs > 1 {
		r.aeads = aeads
	}
	return r, nil
}

// Header returns the envelope's header.
func (r *Reader) Header() *Header { return r.hdr }

// Read returns authenticated plaintext; it returns io.EOF only after the final chunk
// authenticated and nothing followed it.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.err != nil {
			r.release()
			return 0, r.err
		}
		if r.done {
			r.release()
			return 0, io.EOF
		}
		r.err = r.next()
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// flushPlain writes what is left of the current chunk's plaintext to w. When the consumer
// fails nothing more will be released, so the plaintext is wiped now instead of staying in the
// chunk buffer until the garbage collector runs.
func (r *Reader) flushPlain(w io.Writer) (int64, error) {
	n, err := w.Write(r.plain)
	r.plain = r.plain[n:]
	if err != nil {
		r.err = err
		r.release()
	}
	return int64(n), err
}

// WriteTo writes every authenticated chunk to w as soon as it authenticates. When the source
// is an in-memory *bytes.Reader or *bytes.Buffer, chunks are authenticated straight from its
// memory instead of being copied into the chunk buffer first.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	if r.aeads != nil && r.err == nil && !r.done {
		var total int64
		if len(r.plain) > 0 { // left over from Read calls
			n, err := r.flushPlain(w)
			total += n
			if err != nil {
				return total, err
			}
		}
		n, err := r.writeToParallel(w)
		return total + n, err
	}
	if r.counter == 0 && !r.carry && len(r.plain) == 0 && !r.done && r.err == nil {
		switch r.src.(type) {
		case *bytes.Reader, *bytes.Buffer: // their WriteTo hands over the rest in one slice
			return r.push(w)
		}
	}
	var total int64
	for {
		if len(r.plain) > 0 {
			n, err := r.flushPlain(w)
			total += n
			if err != nil {
				return total, err
			}
		}
		if r.err != nil {
			r.release()
			return total, r.err
		}
		if r.done {
			r.release()
			return total, nil
		}
		r.err = r.next()
	}
}

// release returns the chunk buffers to the pool once nothing can reference them: the stream
// ended or failed and every released byte has been consumed. The plaintext buffer is wiped.
func (r *Reader) release() {
	if r.cbuf == nil {
		return
	}
	putBuf(r.cbuf, false)
	putBuf(r.pbuf, true)
	r.cbuf, r.pbuf, r.plain = nil, nil, nil
}

// push drives the source's WriteTo into a sink that authenticates chunks in place in the
// source's memory; only a chunk split across Write calls is copied into cbuf.
func (r *Reader) push(w io.Writer) (int64, error) {
	s := &pushSink{r: r, dst: w, left: -1}
	if l, ok := r.src.(interface{ Len() int }); ok {
		// bytes.Reader and bytes.Buffer know how much they will hand over, so the sink can
		// tell the final chunk by its position instead of copying it into cbuf to wait for
		// the end of the input.
		s.left = int64(l.Len())
	}
	defer r.release()
	_, err := r.src.(io.WriterTo).WriteTo(s)
	if err == nil && s.err == nil && !r.done {
		// Whatever is buffered is the final chunk.
		pt, ferr := r.authChunk(r.cbuf[:s.buffered], true)
		if ferr == nil {
			ferr = s.emit(pt)
		}
		s.err = ferr
		r.done = ferr == nil
	}
	if s.err != nil {
		err = s.err
	}
	if err != nil {
		r.err = err
	}
	return s.total, err
}

// pushSink receives ciphertext from an in-memory source. Invariant: cbuf[:buffered] holds the
// start of the next chunk; a chunk is opened only once a byte after it has been seen, which
// proves it is not the final one.
//
// When the source's length is known (left ≥ 0), a Write that starts on a chunk boundary and
// ends exactly at the end of the input holds the whole final chunk: it is opened as final
// straight from the source, as the look-ahead would have concluded once the input ended.
type pushSink struct {
	r        *Reader
	dst      io.Writer
	buffered int
	total    int64
	left     int64 // input bytes still to come, or -1 if unknown
	err      error
}

func (s *pushSink) emit(pt []byte) error {
	n, err := s.dst.Write(pt)
	s.total += int64(n)
	return err
}

func (s *pushSink) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	r := s.r
	enc := r.chunkSize + TagSize
	n := len(b)
	if s.left >= 0 {
		if int64(n) > s.left {
			// The source handed over more than it said it held; refuse rather than guess.
			s.err = errors.New("envelope: in-memory source grew while being read")
			return 0, s.err
		}
		s.left -= int64(n) // now: bytes still to come after b
	}
	for len(b) > 0 {
		var ct []byte
		final := false
		switch {
		case s.buffered == 0 && len(b) > enc:
			ct, b = b[:enc], b[enc:] // whole chunk with more after it, straight from the source
		case s.buffered == 0 && s.left == 0:
			ct, b, final = b, nil, true // the rest of the input, starting on a chunk boundary
		default:
			c := copy(r.cbuf[s.buffered:enc+1], b)
			s.buffered += c
			b = b[c:]
			if s.buffered <= enc {
				continue // need the byte after the chunk to know it is not the final one
			}
			ct = r.cbuf[:enc]
		}
		pt, err := r.authChunk(ct, final)
		if err == nil {
			err = s.emit(pt)
		}
		if err != nil {
			s.err = err
			return n - len(b), err
		}
		if final {
			r.done = true
		}
		if s.buffered > enc {
			r.cbuf[0] = r.cbuf[enc]
			s.buffered = 1
		}
	}
	return n, nil
}

func (r *Reader) opener() chunkOpener {
	return chunkOpener{aead: r.aead, aad: &r.aad, chunkSize: r.chunkSize}
}

// authChunk authenticates the next chunk (see chunkOpener.authChunk) into pbuf and advances the
// counter.
func (r *Reader) authChunk(ct []byte, final bool) ([]byte, error) {
	pt, err := r.opener().authChunk(r.pbuf[:0], &r.nonce, r.counter, ct, final)
	if err == nil {
		r.counter++
	}
	return pt, err
}

// chunkOpener opens chunks of one envelope; the sequential Reader and each parallel worker
// have their own.
type chunkOpener struct {
	aead      cipher.AEAD
	aad       *[32]byte
	chunkSize int
}

// open authenticates ct as chunk counter, appending the plaintext to dst (out of place).
func (c chunkOpener) open(dst []byte, nonce *[nonceSize]byte, counter uint64, ct []byte, final bool) ([]byte, error) {
	setNonce(nonce, counter, final)
	return c.aead.Open(dst, nonce[:], ct, c.aad[:])
}

// authChunk authenticates ct as chunk counter, which the caller knows is (final) or is not the
// last in the input, and names the failure: a full chunk that fails as final but opens as
// non-final proves truncation at a chunk boundary; one that fails as non-final but opens as
// final proves data appended after the end.
func (c chunkOpener) authChunk(dst []byte, nonce *[nonceSize]byte, counter uint64, ct []byte, final bool) ([]byte, error) {
	n := len(ct)
	if final {
		switch {
		case n == 0:
			return nil, &ChunkError{Index: counter, Detail: "no chunks after the header", Err: ErrTruncated}
		case n < TagSize:
			return nil, &ChunkError{Index: counter, Detail: fmt.Sprintf("last chunk is %d bytes, shorter than a tag", n), Err: ErrTruncated}
		case n == TagSize && counter > 0:
			// Writers never emit an empty final chunk after data; accepting one would give the
			// same payload two encodings.
			return nil, &ChunkError{Index: counter, Detail: "empty final chunk after data", Err: ErrAuth}
		}
	}
	pt, err := c.open(dst, nonce, counter, ct, final)
	if err == nil {
		return pt, nil
	}
	if !final {
		if _, err2 := c.open(dst, nonce, counter, ct, true); err2 == nil {
			return nil, &ChunkError{Index: counter, Detail: "final chunk followed by more data", Err: ErrTrailingData}
		}
		return nil, &ChunkError{Index: counter, Err: ErrAuth}
	}
	if n == c.chunkSize+TagSize {
		if _, err2 := c.open(dst, nonce, counter, ct, false); err2 == nil {
			return nil, &ChunkError{Index: counter, Detail: "input ends at a chunk boundary before the final chunk", Err: ErrTruncated}
		}
	}
	return nil, &ChunkError{Index: counter, Detail: "tampered, or truncated inside the last chunk", Err: ErrAuth}
}

// next reads and authenticates one chunk into r.plain.
func (r *Reader) next() error {
	enc := r.chunkSize + TagSize
	start := 0
	if r.carry {
		r.cbuf[0] = r.cbuf[enc]
		start = 1
	}
	m, err := io.ReadFull(r.src, r.cbuf[start:enc+1])
	n := start + m
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return err // an I/O error of src
	}
	if n == enc+1 {
		// More follows, so this chunk must not be the final one.
		pt, err := r.authChunk(r.cbuf[:enc], false)
		if err != nil {
			return err
		}
		r.plain, r.carry = pt, true
		return nil
	}
	// The input ends within this read: this is the final chunk.
	pt, err := r.authChunk(r.cbuf[:n], true)
	if err != nil {
		return err
	}
	r.plain, r.done = pt, true
	return nil
}

// Chunk buffers are pooled per size: sealing or opening many envelopes (the daemon, bulk
// sealing of small objects) would otherwise allocate and fault in fresh chunk-sized buffers
// every time. Buffers that held plaintext are wiped before they go back.
var bufPools sync.Map // capacity -> *sync.Pool of *[]byte

func getBuf(n int) []byte {
	if p, ok := bufPools.Load(n); ok {
		if b, ok := p.(*sync.Pool).Get().(*[]byte); ok {
			return (*b)[:n]
		}
	}
	return make([]byte, n)
}

func putBuf(b []byte, wipe bool) {
	b = b[:cap(b)]
	if wipe {
		clear(b)
	}
	p, _ := bufPools.LoadOrStore(cap(b), &sync.Pool{})
	p.(*sync.Pool).Put(&b)
}
