package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
)

// Parallel streaming. Writer.ReadFrom and Reader.WriteTo can seal and open chunks on several
// cores: the calling goroutine reads ahead into segments (runs of consecutive chunks), a bounded
// pool of workers seals or authenticates each segment, and one writer goroutine emits segments
// strictly in order. The bytes written are exactly those of the sequential path:
//
//   - a chunk's ciphertext (seal) or plaintext (open) is written only after every chunk before it
//     was written;
//   - open releases a chunk's plaintext only after that chunk and every chunk before it
//     authenticated; when chunk i fails, chunks < i are released (as the sequential Reader does)
//     and nothing at or after i is, even if later segments already authenticated;
//   - a chunk is final, or not, by the same one-byte look-ahead as the sequential path, so the
//     truncation and appended-data checks (authChunk) are unchanged;
//   - memory is bounded: at most 2·jobs+1 segments exist, each of segmentChunks(chunk size)
//     chunks (about segmentTarget bytes, at least one chunk), with an input and an output buffer.
//
// Each worker has its own AES-GCM instance. Buffers holding plaintext are overwritten on reuse,
// as the sequential path's one chunk buffer is, and wiped when the run ends, on every path; a
// buffer a HoldingWriter still refers to is neither reused nor wiped before it was consumed.
// With the default segments (512 KiB of 64 KiB chunks) a run holds at most (2·jobs+1) × ~1 MiB.

// segmentTarget is the plaintext bytes per segment: big enough that handing a segment between
// goroutines costs nothing next to its crypto, small enough to keep memory low.
const segmentTarget = 512 << 10

// MaxJobs bounds the workers of one Writer or Reader.
const MaxJobs = 256

func segmentChunks(chunkSize int) int { return max(1, segmentTarget/chunkSize) }

// segDepth is how many segments may exist at once for jobs workers: one being read, one per
// worker, and as many again queued for the ordered writer, so a slow worker does not stall the
// others.
func segDepth(jobs int) int { return 2*jobs + 1 }

// newChunkAEADs derives the per-envelope chunk key HKDF-SHA256(DEK, salt, labelPayload) once
// and returns n AES-256-GCM instances under it (one per worker: cipher.AEAD does not promise
// to be safe for concurrent use). The derived key is wiped; its expanded schedules live on in
// the AEADs until they are garbage collected (see Wipe).
func newChunkAEADs(dek, salt []byte, n int) ([]cipher.AEAD, error) {
	if len(dek) != DEKSize {
		return nil, fmt.Errorf("%w: DEK is %d bytes, want %d", ErrBadKey, len(dek), DEKSize)
	}
	key, err := hkdf.Key(sha256.New, dek, salt, labelPayload, DEKSize)
	if err != nil {
		return nil, err
	}
	defer Wipe(key)
	out := make([]cipher.AEAD, n)
	for i := range out {
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		if out[i], err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func checkJobs(jobs int) (int, error) {
	if jobs < 1 || jobs > MaxJobs {
		return 0, fmt.Errorf("envelope: jobs %d not in [1, %d]", jobs, MaxJobs)
	}
	return jobs, nil
}

// parallelHooks are for tests only (export_test.go): zero in every Writer and Reader built
// outside the package's tests.
type parallelHooks struct {
	segChunks    int                // chunks per segment; 0: segmentChunks
	onDispatched func(live int)     // after each dispatch: the segments in existence
	delay        func(first uint64) // a worker calls it before processing the segment at first
}

func (h *parallelHooks) chunks(chunkSize int) int {
	if h.segChunks > 0 {
		return h.segChunks
	}
	return segmentChunks(chunkSize)
}

func (h *parallelHooks) beforeProc(first uint64) {
	if h.delay != nil {
		h.delay(first)
	}
}

// segment is a run of consecutive chunks handled by one worker.
type segment struct {
	in     []byte // plaintext (seal) or ciphertext (open)
	view   []byte // seal from memory: the plaintext, in the caller's buffer (not copied to in)
	out    []byte // ciphertext (seal) or plaintext (open)
	n      int    // bytes in in
	first  uint64 // counter of the first chunk
	chunks int    // chunks in in
	final  bool   // open: the last chunk is the envelope's final chunk
	outN   int    // bytes of out to emit: every chunk before err
	err    error  // open: the first chunk that failed
	done   chan struct{}
	// heldEnd >= 0: out was written to a HoldingWriter that still refers to it, up to this
	// offset of its stream; the segment is not reused until the writer has consumed it.
	heldEnd int64
}

// pipeline runs fill (the caller's goroutine), proc (jobs workers) and emit (one goroutine, in
// order). fill returns dispatch=false for a segment with nothing to process and more=false after
// the last segment. A failed emit stops the reading; segments already read are recycled
// unemitted. The first emit error wins over a fill error (it concerns an earlier position).
type pipeline struct {
	jobs         int
	inCap        int
	outCap       int
	wipeIn       bool
	wipeOut      bool
	fill         func(s *segment) (dispatch, more bool, err error)
	proc         func(worker int, s *segment)
	emit         func(s *segment) error
	consumed     func(end int64, wait bool) (bool, error) // with a HoldingWriter: HoldingWriter.Consumed
	onDispatched func(live int)                           // tests: segments in existence after a dispatch
}

func (p *pipeline) run() error {
	depth := segDepth(p.jobs)
	var all []*segment
	free := make(chan *segment, depth)
	work := make(chan *segment, depth)
	order := make(chan *segment, depth)
	stop := make(chan struct{})
	var workers sync.WaitGroup
	for i := range p.jobs {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for s := range work {
				p.proc(i, s)
				s.done <- struct{}{}
			}
		}()
	}
	emitted := make(chan error, 1)
	go func() {
		var err error
		fail := func(e error) {
			if err == nil {
				err = e
				close(stop)
			}
		}
		// held: emitted segments a HoldingWriter still refers to, oldest first. They go back to
		// the free list once consumed; with wait, this waits for the oldest.
		var held []*segment
		release := func(wait bool) {
			for len(held) > 0 {
				ok, cerr := p.consumed(held[0].heldEnd, wait)
				if cerr != nil {
					ok = true // nobody will read them: the buffers are ours again
					fail(cerr)
				}
				if !ok {
					return
				}
				s := held[0]
				held = held[1:]
				p.recycle(s)
				free <- s
				wait = false
			}
		}
		for {
			var s *segment
			ok := true
			if len(held) > 0 {
				select {
				case s, ok = <-order:
				default:
					// Nothing to emit yet: the reader may be waiting for a held segment.
					release(true)
					continue
				}
			} else {
				s, ok = <-order
			}
			if !ok {
				break
			}
			<-s.done
			if err == nil {
				if e := p.emit(s); e != nil {
					fail(e)
				}
			}
			if s.heldEnd >= 0 {
				held = append(held, s)
				release(false)
			} else {
				p.recycle(s)
				free <- s
			}
		}
		for len(held) > 0 {
			release(true) // bytes handed over are never wiped or reused before they are read
		}
		emitted <- err
	}()

	var fillErr error
	for {
		var s *segment
		select {
		case <-stop:
		default:
			select {
			case s = <-free:
			default:
				if len(all) < depth {
					s = &segment{in: getBuf(p.inCap), out: getBuf(p.outCap), done: make(chan struct{}, 1), heldEnd: -1}
					all = append(all, s)
				} else {
					select {
					case s = <-free:
					case <-stop:
					}
				}
			}
		}
		if s == nil {
			break // emit failed: read no further
		}
		dispatch, more, err := p.fill(s)
		if err != nil || !dispatch {
			p.recycle(s)
			free <- s
			fillErr = err
			break
		}
		work <- s
		order <- s
		if p.onDispatched != nil {
			p.onDispatched(len(all))
		}
		if !more {
			break
		}
	}
	close(work)
	close(order)
	workers.Wait()
	emitErr := <-emitted
	for _, s := range all {
		putBuf(s.in, p.wipeIn)
		putBuf(s.out, p.wipeOut)
		s.in, s.out = nil, nil
	}
	if emitErr != nil {
		return emitErr
	}
	return fillErr
}

// recycle resets a segment for reuse. Its buffers are overwritten by the next use, as the
// sequential path overwrites its one chunk buffer; plaintext is wiped when the run ends.
func (p *pipeline) recycle(s *segment) {
	s.n, s.chunks, s.outN, s.err, s.final, s.heldEnd, s.view = 0, 0, 0, nil, false, -1, nil
}

// HoldingWriter is a destination that may keep referring to the bytes of a write after the
// write returns, as vmsplice(2) into a pipe does (envdr's stdout when it is a pipe), saving the
// copy. The parallel path hands it whole segments and neither reuses nor wipes a buffer until
// Consumed says its bytes have been read.
type HoldingWriter interface {
	io.Writer
	// WriteHeld writes all of p, in order with Write, and returns the offset in the writer's
	// stream where p ends, or -1 when p was copied (not held).
	WriteHeld(p []byte) (end int64, err error)
	// Consumed reports whether every byte of the stream before end has been consumed; with
	// wait, it waits until it has. An error means they never will be (the reader is gone).
	Consumed(end int64, wait bool) (bool, error)
}

// holderOf returns dst as a HoldingWriter (looking through ctxWriter, which keeps checking the
// context on every write), or nil.
func holderOf(dst io.Writer) HoldingWriter {
	if c, ok := dst.(ctxWriter); ok {
		if h, ok := c.w.(HoldingWriter); ok {
			return ctxHolder{c, h}
		}
		return nil
	}
	h, _ := dst.(HoldingWriter)
	return h
}

type ctxHolder struct {
	ctxWriter
	h HoldingWriter
}

func (c ctxHolder) WriteHeld(p []byte) (int64, error) {
	if err := c.ctx.Err(); err != nil {
		return -1, fmt.Errorf("envelope: interrupted: %w", err)
	}
	return c.h.WriteHeld(p)
}

// Consumed does not give up on cancellation: bytes already handed over must stay intact until
// they are read, as they would inside a pipe after write(2).
func (c ctxHolder) Consumed(end int64, wait bool) (bool, error) { return c.h.Consumed(end, wait) }

// lookahead reads segments one byte beyond their end: a segment followed by more input surely
// does not hold the last chunk (which must carry the final flag), and the byte beyond it is
// carried into the next segment.
type lookahead struct {
	src io.Reader
	b   byte // the carried byte, when has
	has bool
}

// fill reads into in[start:] from src, after the carried byte if there is one, and returns n, the
// bytes now in in that belong to this segment, m, the bytes read from src, and io.ReadFull's
// error. On a nil error in was filled: its last byte, in[n], is carried into the next fill.
func (l *lookahead) fill(in []byte, start int) (n, m int, err error) {
	if l.has {
		in[start] = l.b
		start++
		l.has = false
	}
	m, err = io.ReadFull(l.src, in[start:])
	n = start + m
	if err == nil {
		n--
		l.b, l.has = in[n], true
	}
	return n, m, err
}

// readFromParallel is Writer.ReadFrom on w.jobs workers. Every chunk that is known not to be
// the last is sealed; the rest of the input (up to one chunk, possibly empty) stays pending in
// w.buf for Write or Close, exactly as the sequential path leaves it.
func (w *Writer) readFromParallel(src io.Reader) (int64, error) {
	cs := w.chunkSize
	enc := cs + TagSize
	k := w.hooks.chunks(cs)
	var total int64
	la := lookahead{src: src}
	pending := w.n // plaintext already in w.buf from earlier Writes, at most one chunk
	p := &pipeline{
		jobs: len(w.aeads), inCap: k*cs + 1, outCap: k * enc, wipeIn: true,
		onDispatched: w.hooks.onDispatched,
	}
	p.fill = func(s *segment) (bool, bool, error) {
		start := 0
		if pending > 0 { // only before the first segment, so nothing is carried yet
			start = copy(s.in, w.buf[:pending])
			clear(w.buf[:pending])
			pending, w.n = 0, 0
		}
		n, m, err := la.fill(s.in[:k*cs+1], start)
		total += int64(m)
		w.written += int64(m)
		s.n = n
		switch err {
		case nil:
			// A byte beyond the segment arrived: all k chunks are followed by more data.
			s.in[k*cs] = 0 // the carried plaintext byte
			s.chunks = k
		case io.EOF, io.ErrUnexpectedEOF:
			// The input ends here: keep the last piece (1..cs bytes, or none) pending.
			last := 0
			if n > 0 {
				last = (n-1)%cs + 1
			}
			s.n = n - last
			s.chunks = s.n / cs
			copy(w.buf, s.in[s.n:n])
			clear(s.in[s.n:n])
			w.n = last
		default:
			return false, false, err // an I/O error of src
		}
		if s.chunks == 0 {
			return false, false, nil
		}
		if w.counter > math.MaxUint64-uint64(s.chunks) {
			return false, false, errors.New("envelope: chunk counter exhausted")
		}
		s.first = w.counter
		w.counter += uint64(s.chunks)
		return true, err == nil, nil
	}
	p.proc = func(worker int, s *segment) {
		w.hooks.beforeProc(s.first)
		w.sealSegment(worker, s)
	}
	w.setEmit(p)
	err := p.run()
	if err != nil {
		// Chunks may be missing from the output; the Writer cannot go on.
		w.err = err
		clear(w.buf)
		w.n = 0
	}
	return total, err
}

// sealSegment seals the segment's chunks (all known not to be the last) into its out buffer.
func (w *Writer) sealSegment(worker int, s *segment) {
	cs, enc := w.chunkSize, w.chunkSize+TagSize
	in := s.in
	if s.view != nil {
		in = s.view
	}
	aead := w.aeads[worker]
	var nonce [nonceSize]byte
	for i := range s.chunks {
		setNonce(&nonce, s.first+uint64(i), false)
		aead.Seal(s.out[i*enc:i*enc], nonce[:], in[i*cs:(i+1)*cs], w.aad[:])
	}
	s.outN = s.chunks * enc
}

// setEmit makes p write sealed segments to w.dst, held when it is a HoldingWriter.
func (w *Writer) setEmit(p *pipeline) {
	if h := holderOf(w.dst); h != nil {
		p.consumed = h.Consumed
		p.emit = func(s *segment) error {
			if s.err != nil {
				return s.err
			}
			var err error
			s.heldEnd, err = h.WriteHeld(s.out[:s.outN])
			return err
		}
		return
	}
	p.emit = func(s *segment) error {
		if s.err != nil {
			return s.err
		}
		_, err := w.dst.Write(s.out[:s.outN])
		return err
	}
}

// memParallel receives an in-memory source's bytes in one Write (bytes.Reader and
// bytes.Buffer's WriteTo) and seals them in parallel straight from that memory.
type memParallel struct {
	w     *Writer
	calls int
}

func (m *memParallel) Write(p []byte) (int, error) {
	m.calls++
	if m.calls > 1 || m.w.n != 0 {
		return m.w.Write(p) // not the one-slice hand-over this is for: the general path
	}
	return m.w.sealMemParallel(p)
}

// sealMemParallel seals every chunk of p known not to be the last, on w's workers, reading the
// plaintext where it is (no copy); the last piece (1..chunk size bytes) stays pending in w.buf,
// as after the general path. p is the caller's memory: it is neither modified nor wiped.
func (w *Writer) sealMemParallel(p []byte) (int, error) {
	cs := w.chunkSize
	k := w.hooks.chunks(cs)
	last := 0
	if len(p) > 0 {
		last = (len(p)-1)%cs + 1
	}
	body := len(p) - last
	off := 0
	pl := &pipeline{jobs: len(w.aeads), outCap: k * (cs + TagSize), onDispatched: w.hooks.onDispatched}
	pl.fill = func(s *segment) (bool, bool, error) {
		if off >= body {
			return false, false, nil
		}
		end := min(off+k*cs, body)
		s.view = p[off:end]
		s.chunks = (end - off) / cs
		if w.counter > math.MaxUint64-uint64(s.chunks) {
			return false, false, errors.New("envelope: chunk counter exhausted")
		}
		s.first = w.counter
		w.counter += uint64(s.chunks)
		w.written += int64(end - off)
		off = end
		return true, off < body, nil
	}
	pl.proc = func(worker int, s *segment) {
		w.hooks.beforeProc(s.first)
		w.sealSegment(worker, s)
	}
	w.setEmit(pl)
	if err := pl.run(); err != nil {
		w.err = err
		return off, err
	}
	w.n = copy(w.buf, p[body:])
	w.written += int64(last)
	return len(p), nil
}

// writeToParallel is Reader.WriteTo on r.jobs workers.
func (r *Reader) writeToParallel(dst io.Writer) (int64, error) {
	cs := r.chunkSize
	enc := cs + TagSize
	k := r.hooks.chunks(cs)
	var total int64
	la := lookahead{src: r.src}
	if r.carry { // after Read calls: cbuf[enc] holds the next chunk's first byte
		la.b, la.has = r.cbuf[enc], true
	}
	counter := r.counter
	p := &pipeline{
		jobs: len(r.aeads), inCap: k*enc + 1, outCap: k * cs, wipeOut: true,
		onDispatched: r.hooks.onDispatched,
	}
	p.fill = func(s *segment) (bool, bool, error) {
		n, _, err := la.fill(s.in[:k*enc+1], 0)
		s.first = counter
		switch err {
		case nil:
			s.n, s.chunks = n, k
		case io.EOF, io.ErrUnexpectedEOF:
			// The input ends in this segment: every chunk followed by at least one more byte is
			// not final; what is left (0..enc bytes) is the final chunk.
			s.n, s.final = n, true
			s.chunks = 1
			if n > 0 {
				s.chunks = (n-1)/enc + 1
			}
		default:
			return false, false, err
		}
		counter += uint64(s.chunks)
		return true, err == nil, nil
	}
	p.proc = func(worker int, s *segment) {
		r.hooks.beforeProc(s.first)
		c := chunkOpener{aead: r.aeads[worker], aad: &r.aad, chunkSize: cs}
		var nonce [nonceSize]byte
		for i := range s.chunks {
			final := s.final && i == s.chunks-1
			ct := s.in[i*enc : min((i+1)*enc, s.n)]
			pt, err := c.authChunk(s.out[i*cs:i*cs], &nonce, s.first+uint64(i), ct, final)
			if err != nil {
				s.err = err
				return // later chunks of this segment are never released: no need to open them
			}
			s.outN += len(pt)
		}
	}
	h := holderOf(dst)
	if h != nil {
		p.consumed = h.Consumed
	}
	p.emit = func(s *segment) error {
		if s.outN > 0 {
			if h != nil {
				end, err := h.WriteHeld(s.out[:s.outN])
				s.heldEnd = end
				if err != nil {
					return err
				}
				total += int64(s.outN)
			} else {
				n, err := dst.Write(s.out[:s.outN])
				total += int64(n)
				if err != nil {
					return err
				}
			}
		}
		return s.err
	}
	err := p.run()
	r.counter = counter
	r.carry = false
	if err != nil {
		r.err = err
	} else {
		r.done = true
	}
	r.release()
	return total, err
}
