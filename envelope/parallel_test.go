package envelope_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/envelope/envelopetest"
)

// The parallel path (NewWriterJobs, NewReaderJobs, Seal/Open with Jobs > 1) must write exactly
// the bytes of the sequential path, in order, and release nothing the sequential path would not.

func parallelHeader(t testing.TB, cs int) *envelope.Header {
	return &envelope.Header{ID: "par", ChunkSize: cs, Salt: testSalt("par"), KeyARN: testARN, WrappedDEK: []byte("w"),
		Context: mustContext(t, "par", nil)}
}

// sealParallel seals pt from src with jobs workers and the header's fixed salt, after writing
// pre bytes with Write (so ReadFrom starts with a pending chunk).
func sealParallel(t testing.TB, dek []byte, hdr *envelope.Header, pt []byte, pre int, src func([]byte) io.Reader, jobs int, h envelope.ParallelHooks) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := envelope.NewWriterFixedSaltJobs(&buf, dek, hdr, jobs, h)
	require.NoError(t, err)
	_, err = w.Write(pt[:pre])
	require.NoError(t, err)
	n, err := w.ReadFrom(src(pt[pre:]))
	require.NoError(t, err)
	require.EqualValues(t, len(pt)-pre, n)
	require.EqualValues(t, len(pt), w.Written())
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// openParallel opens file with jobs workers; it returns what was released and the error.
func openParallel(t testing.TB, dek, file []byte, src func([]byte) io.Reader, jobs int, h envelope.ParallelHooks) ([]byte, error) {
	t.Helper()
	r, err := envelope.NewReaderJobsHooks(src(file), dek, jobs, h)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	n, err := r.WriteTo(&out)
	require.EqualValues(t, out.Len(), n)
	return out.Bytes(), err
}

var parallelSources = map[string]func([]byte) io.Reader{
	"bytes":    func(b []byte) io.Reader { return bytes.NewReader(b) },
	"one byte": func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) },
	"half":     func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
	"data+EOF": func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) },
}

// TestParallelMatchesSequential: every size around chunk and segment boundaries, every kind of
// source, several worker counts and segment sizes: the same envelope, the same plaintext back.
func TestParallelMatchesSequential(t *testing.T) {
	t.Parallel()
	dek := testDEK(11)
	for _, cs := range []int{envelope.MinChunkSize, 100} {
		for _, k := range []int{1, 3} {
			hdr := parallelHeader(t, cs)
			seg := k * cs
			for _, n := range []int{0, 1, cs - 1, cs, cs + 1, seg - 1, seg, seg + 1, 2*seg + cs, 7*seg + 13} {
				pt := payload(n)
				want := sealWith(t, dek, hdr, pt)
				for name, src := range parallelSources {
					for _, jobs := range []int{2, 5} {
						for _, pre := range []int{0, min(n, cs/2), min(n, cs)} {
							t.Run(fmt.Sprintf("cs=%d/k=%d/n=%d/%s/jobs=%d/pre=%d", cs, k, n, name, jobs, pre), func(t *testing.T) {
								h := envelope.ParallelHooks{SegChunks: k}
								requireBytes(t, want, sealParallel(t, dek, hdr, pt, pre, src, jobs, h))
								got, err := openParallel(t, dek, want, src, jobs, h)
								require.NoError(t, err)
								requireBytes(t, pt, got)
							})
						}
					}
				}
			}
		}
	}
	t.Run("default segments", func(t *testing.T) {
		hdr := parallelHeader(t, 4096)
		pt := payload(3<<20 + 5)
		want := sealWith(t, dek, hdr, pt)
		requireBytes(t, want, sealParallel(t, dek, hdr, pt, 0, parallelSources["half"], 3, envelope.ParallelHooks{}))
		got, err := openParallel(t, dek, want, parallelSources["half"], 3, envelope.ParallelHooks{})
		require.NoError(t, err)
		requireBytes(t, pt, got)
	})
	t.Run("Read then WriteTo", func(t *testing.T) {
		hdr := parallelHeader(t, 64)
		pt := payload(64*20 + 9)
		file := sealWith(t, dek, hdr, pt)
		for _, first := range []int{1, 63, 64, 65, 200} {
			r, err := envelope.NewReaderJobsHooks(bytes.NewReader(file), dek, 3, envelope.ParallelHooks{SegChunks: 2})
			require.NoError(t, err)
			head := make([]byte, first)
			_, err = io.ReadFull(r, head)
			require.NoError(t, err)
			var rest bytes.Buffer
			_, err = r.WriteTo(&rest)
			require.NoError(t, err)
			requireBytes(t, pt, append(head, rest.Bytes()...))
		}
	})
}

// TestParallelSealOpen: Seal and Open with Jobs round-trip, and agree with the sequential path.
func TestParallelSealOpen(t *testing.T) {
	t.Parallel()
	kms := envelopetest.NewFakeKMS(testRegion, testARN, "par", nil)
	pt := payload(2<<20 + 77)
	var sealed bytes.Buffer
	_, err := envelope.Seal(context.Background(), &sealed, iotest.HalfReader(bytes.NewReader(pt)), kms,
		envelope.SealOptions{ChunkSize: 1024, Jobs: 4})
	require.NoError(t, err)
	for _, jobs := range []int{0, 1, 4} {
		var out bytes.Buffer
		_, err := envelope.Open(context.Background(), &out, iotest.HalfReader(bytes.NewReader(sealed.Bytes())), kms, envelope.OpenOptions{Jobs: jobs})
		require.NoError(t, err)
		requireBytes(t, pt, out.Bytes())
	}
	_, err = envelope.Seal(context.Background(), io.Discard, bytes.NewReader(pt), kms, envelope.SealOptions{Jobs: envelope.MaxJobs + 1})
	require.ErrorContains(t, err, "jobs")
	_, err = envelope.NewWriterJobs(io.Discard, testDEK(1), parallelHeader(t, 64), 0)
	require.ErrorContains(t, err, "jobs")
}

// randomDelays returns a Delay hook sleeping 0..max at random before each segment.
func randomDelays(seed uint64, maxDelay time.Duration) func(uint64) {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed))
	return func(uint64) {
		mu.Lock()
		d := time.Duration(rng.Int64N(int64(maxDelay)))
		mu.Unlock()
		time.Sleep(d)
	}
}

// orderWriter checks that every Write continues exactly where the last one ended: in order,
// nothing skipped or repeated.
type orderWriter struct {
	want []byte
	off  int
	t    testing.TB
}

func (o *orderWriter) Write(p []byte) (int, error) {
	o.t.Helper()
	require.LessOrEqual(o.t, o.off+len(p), len(o.want), "wrote past the end")
	require.True(o.t, bytes.Equal(o.want[o.off:o.off+len(p)], p), "write at offset %d out of order", o.off)
	o.off += len(p)
	return len(p), nil
}

// TestParallelOrderUnderRandomDelays: workers finish in random order; output stays in order.
func TestParallelOrderUnderRandomDelays(t *testing.T) {
	t.Parallel()
	dek := testDEK(12)
	hdr := parallelHeader(t, 64)
	pt := payload(64*300 + 17)
	want := sealWith(t, dek, hdr, pt)
	for seed := uint64(1); seed <= 3; seed++ {
		h := envelope.ParallelHooks{SegChunks: 2, Delay: randomDelays(seed, 300*time.Microsecond)}
		ow := &orderWriter{want: want, t: t}
		w, err := envelope.NewWriterFixedSaltJobs(ow, dek, hdr, 6, h)
		require.NoError(t, err)
		_, err = w.ReadFrom(iotest.HalfReader(bytes.NewReader(pt)))
		require.NoError(t, err)
		require.NoError(t, w.Close())
		require.Equal(t, len(want), ow.off)

		r, err := envelope.NewReaderJobsHooks(iotest.HalfReader(bytes.NewReader(want)), dek, 6, h)
		require.NoError(t, err)
		po := &orderWriter{want: pt, t: t}
		_, err = r.WriteTo(po)
		require.NoError(t, err)
		require.Equal(t, len(pt), po.off)
	}
}

// TestParallelTamperMiddleChunk: a bad chunk in the middle of the stream, in the middle of a
// segment whose worker is the slowest: every later segment authenticates first, yet nothing at
// or after the bad chunk is released, and every chunk before it is, in order.
func TestParallelTamperMiddleChunk(t *testing.T) {
	t.Parallel()
	dek := testDEK(13)
	const cs = 64
	hdr := parallelHeader(t, cs)
	pt := payload(40*cs + 5)
	file := sealWith(t, dek, hdr, pt)
	hl := len(file) - (len(pt) + 41*envelope.TagSize)
	enc := cs + envelope.TagSize
	const bad = 17 // segments of 3 chunks: 15, 16, 17
	for name, tamper := range map[string]func([]byte) []byte{
		"flip body": func(f []byte) []byte { f[hl+bad*enc+10] ^= 1; return f },
		"flip tag":  func(f []byte) []byte { f[hl+bad*enc+enc-1] ^= 1; return f },
		"swap with next": func(f []byte) []byte {
			a, b := bytes.Clone(f[hl+bad*enc:hl+(bad+1)*enc]), f[hl+(bad+1)*enc:hl+(bad+2)*enc]
			copy(f[hl+bad*enc:], b)
			copy(f[hl+(bad+1)*enc:], a)
			return f
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := tamper(bytes.Clone(file))
			var after atomic.Int32
			h := envelope.ParallelHooks{SegChunks: 3, Delay: func(first uint64) {
				if first == 15 {
					time.Sleep(30 * time.Millisecond) // let the later segments finish first
				} else if first > 15 {
					after.Add(1)
				}
			}}
			got, err := openParallel(t, dek, c, parallelSources["bytes"], 4, h)
			var ce *envelope.ChunkError
			require.ErrorAs(t, err, &ce)
			require.ErrorIs(t, err, envelope.ErrAuth)
			require.EqualValues(t, bad, ce.Index)
			requireBytes(t, pt[:bad*cs], got)
			require.Positive(t, after.Load(), "later segments were in flight while the bad one was checked")

			seq, serr := io.ReadAll(mustReader(t, c, dek))
			require.Equal(t, serr.Error(), err.Error(), "same error as the sequential path")
			requireBytes(t, seq, got)
		})
	}
}

// TestParallelTamperMatchesSequential: every corruption of TestTamperMatrix's envelope gives the
// parallel Reader exactly the sequential Reader's error and released bytes.
func TestParallelTamperMatchesSequential(t *testing.T) {
	t.Parallel()
	s := setupTamper(t, "tamper-par")
	dek, err := s.kms.Unwrap(context.Background(), s.hdr.WrappedDEK, s.hdr.KeyARN, s.hdr.Context)
	require.NoError(t, err)
	hl := len(s.hdrBytes)
	enc := s.chunkSize + envelope.TagSize
	ch := s.chunks
	files := map[string][]byte{
		"intact":            s.file,
		"after header":      s.file[:hl],
		"in chunk 0 tag":    s.file[:hl+10],
		"boundary 1":        s.file[:hl+enc],
		"boundary 3":        s.file[:hl+3*enc],
		"boundary 5":        s.file[:hl+5*enc],
		"mid chunk 3":       s.file[:hl+3*enc+500],
		"last byte":         s.file[:len(s.file)-1],
		"append byte":       join(s.file, []byte{0}),
		"append final":      join(s.file, ch[5]),
		"append full":       join(s.file, ch[1]),
		"swap 1 2":          join(s.hdrBytes, ch[0], ch[2], ch[1], ch[3], ch[4], ch[5]),
		"duplicate 3":       join(s.hdrBytes, ch[0], ch[1], ch[2], ch[3], ch[3], ch[4], ch[5]),
		"drop 4":            join(s.hdrBytes, ch[0], ch[1], ch[2], ch[3], ch[5]),
		"drop final":        join(s.hdrBytes, ch[0], ch[1], ch[2], ch[3], ch[4]),
		"final twice early": join(s.hdrBytes, ch[0], ch[5], ch[5]),
	}
	for i := hl; i < len(s.file); i += 97 {
		c := bytes.Clone(s.file)
		c[i] ^= 0x10
		files[fmt.Sprintf("flip %d", i)] = c
	}
	for name, file := range files {
		seq, serr := io.ReadAll(mustReader(t, file, dek))
		for _, k := range []int{1, 2, 4} {
			for _, jobs := range []int{2, 3} {
				got, err := openParallel(t, dek, file, parallelSources["half"], jobs, envelope.ParallelHooks{SegChunks: k})
				if serr == nil {
					require.NoError(t, err, name)
				} else {
					require.Error(t, err, name)
					require.Equal(t, serr.Error(), err.Error(), "%s k=%d jobs=%d", name, k, jobs)
				}
				requireBytes(t, seq, got)
			}
		}
	}
}

// TestParallelMemoryBound: however long the stream, at most SegDepth(jobs) segments exist, and
// the heap allocated does not grow with the payload.
func TestParallelMemoryBound(t *testing.T) {
	dek := testDEK(14)
	const jobs = 3
	size := int64(64 << 20)
	if testing.Short() {
		size = 16 << 20
	}
	roundTrip := func(n int64) (alloc uint64, live int) {
		var peak atomic.Int32
		h := envelope.ParallelHooks{OnDispatched: func(l int) {
			if int32(l) > peak.Load() {
				peak.Store(int32(l))
			}
		}}
		alloc = pipeRoundTripAlloc(t, "bound", n, func(dst io.Writer, hdr *envelope.Header) (*envelope.Writer, error) {
			return envelope.NewWriterFixedSaltJobs(dst, dek, hdr, jobs, h)
		}, func(src io.Reader) (*envelope.Reader, error) { return envelope.NewReaderJobsHooks(src, dek, jobs, h) })
		return alloc, int(peak.Load())
	}
	// Both sizes fill every segment slot on both sides; buffers come from a sync.Pool, so either
	// run may have to allocate all of them afresh.
	mid, _ := roundTrip(size / 4)
	large, live := roundTrip(size)
	seg := uint64(512<<10 + 528<<10 + 1) // default segment of 64 KiB chunks: plaintext + ciphertext
	bound := 2 * uint64(envelope.SegDepth(jobs)) * seg
	t.Logf("heap allocated: %d bytes for %d MiB, %d bytes for %d MiB; at most %d segments live (bound %d); segment buffers at most %d bytes",
		mid, size>>22, large, size>>20, live, envelope.SegDepth(jobs), bound)
	require.LessOrEqual(t, live, envelope.SegDepth(jobs), "segments in existence")
	require.Less(t, large, mid+512<<10, "allocation grows with payload size")
	require.Less(t, large, bound+1<<20, "allocation beyond the segment buffers")
}

// TestParallelErrorPathsWipePlaintext: the parallel path wipes its plaintext buffers when the
// source or the sink fails, as the sequential one does.
func TestParallelErrorPathsWipePlaintext(t *testing.T) {
	t.Parallel()
	requireErrorPathsWipe(t, "wipe-par", 3, "segment", map[string]func([]byte) io.Reader{
		"stream": func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
	})
}

// TestParallelContextCancel: Seal and Open with Jobs stop within a segment of the cancel.
func TestParallelContextCancel(t *testing.T) {
	t.Parallel()
	requireCancelStops(t, "cancel-par", 2, "segment", 64<<20, 8<<20, func(b []byte) io.Reader { return bytes.NewReader(b) })
}

// holdingSink is a HoldingWriter that, like a pipe fed by vmsplice, keeps referring to the
// slices it was given until a slow reader has read them, and checks at reading time that they
// still hold what was written: a buffer reused or wiped too early shows up as a mismatch.
type holdingSink struct {
	mu       sync.Mutex
	cond     *sync.Cond
	queue    []heldBytes
	put      int64
	consumed int64
	out      bytes.Buffer
	changed  int
	done     bool
	rng      *rand.Rand
}

type heldBytes struct {
	live, snap []byte
	end        int64
}

func newHoldingSink(seed uint64) *holdingSink {
	s := &holdingSink{rng: rand.New(rand.NewPCG(seed, seed))}
	s.cond = sync.NewCond(&s.mu)
	go s.read()
	return s
}

func (s *holdingSink) enqueue(live []byte, copied bool) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.put += int64(len(live))
	h := heldBytes{live: live, snap: bytes.Clone(live), end: s.put}
	if copied {
		h.live = h.snap
	}
	s.queue = append(s.queue, h)
	s.cond.Broadcast()
	return s.put
}

func (s *holdingSink) Write(p []byte) (int, error) { s.enqueue(p, true); return len(p), nil }

func (s *holdingSink) WriteHeld(p []byte) (int64, error) { return s.enqueue(p, false), nil }

func (s *holdingSink) Consumed(end int64, wait bool) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for wait && s.consumed < end {
		s.cond.Wait()
	}
	return s.consumed >= end, nil
}

// read consumes the queue slowly, in order.
func (s *holdingSink) read() {
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.done {
			s.cond.Wait()
		}
		if len(s.queue) == 0 {
			s.mu.Unlock()
			return
		}
		h := s.queue[0]
		d := time.Duration(s.rng.Int64N(int64(200 * time.Microsecond)))
		s.mu.Unlock()
		time.Sleep(d) // the reader is slow: meanwhile the writer must leave h.live alone
		s.mu.Lock()
		if !bytes.Equal(h.live, h.snap) {
			s.changed++
		}
		s.out.Write(h.snap)
		s.queue = s.queue[1:]
		s.consumed = h.end
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

func (s *holdingSink) finish() ([]byte, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) > 0 {
		s.cond.Wait()
	}
	s.done = true
	s.cond.Broadcast()
	return s.out.Bytes(), s.changed
}

// TestParallelHoldingWriter: with a destination that keeps referring to what it was given
// (vmsplice into a pipe), no segment buffer is reused or wiped before it has been read, on
// success and when a chunk fails.
func TestParallelHoldingWriter(t *testing.T) {
	t.Parallel()
	dek := testDEK(15)
	const cs = 64
	hdr := parallelHeader(t, cs)
	pt := payload(cs*300 + 11)
	want := sealWith(t, dek, hdr, pt)
	h := envelope.ParallelHooks{SegChunks: 2, Delay: randomDelays(3, 100*time.Microsecond)}

	sink := newHoldingSink(1)
	w, err := envelope.NewWriterFixedSaltJobs(sink, dek, hdr, 3, h)
	require.NoError(t, err)
	_, err = w.ReadFrom(iotest.HalfReader(bytes.NewReader(pt)))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	got, changed := sink.finish()
	require.Zero(t, changed, "a held buffer changed before it was read")
	requireBytes(t, want, got)

	for _, bad := range []int{-1, 150} {
		file := bytes.Clone(want)
		released := len(pt)
		if bad >= 0 {
			hl := len(want) - (len(pt) + 301*envelope.TagSize)
			file[hl+bad*(cs+envelope.TagSize)+3] ^= 1
			released = bad * cs
		}
		sink := newHoldingSink(2)
		r, err := envelope.NewReaderJobsHooks(bytes.NewReader(file), dek, 3, h)
		require.NoError(t, err)
		_, err = r.WriteTo(sink)
		if bad >= 0 {
			require.ErrorIs(t, err, envelope.ErrAuth)
		} else {
			require.NoError(t, err)
		}
		got, changed := sink.finish()
		require.Zero(t, changed, "a held plaintext buffer changed (reused or wiped) before it was read")
		requireBytes(t, pt[:released], got)
	}
}
