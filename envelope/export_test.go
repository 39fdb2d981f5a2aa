package envelope

import "io"

// NewWriterFixedSalt is NewWriter sealing with hdr.Salt instead of a fresh salt: deterministic
// output for known-answer vectors and path-equivalence tests. Test builds only.
func NewWriterFixedSalt(dst io.Writer, dek []byte, hdr *Header) (*Writer, error) {
	if hdr.Salt == nil {
		return NewWriter(dst, dek, hdr)
	}
	return newWriter(dst, dek, hdr, hdr.Salt, 1)
}

// ParallelHooks instruments the parallel path of a Writer or Reader (test builds only).
type ParallelHooks struct {
	SegChunks    int                // chunks per segment (0: the default for the chunk size)
	OnDispatched func(live int)     // after each dispatched segment: segments in existence
	Delay        func(first uint64) // called by a worker before it processes the segment starting at chunk first
}

// NewWriterFixedSaltJobs is NewWriterJobs with hdr.Salt (if set) and hooks.
func NewWriterFixedSaltJobs(dst io.Writer, dek []byte, hdr *Header, jobs int, h ParallelHooks) (*Writer, error) {
	w, err := newWriter(dst, dek, hdr, hdr.Salt, jobs)
	if err != nil {
		return nil, err
	}
	w.hooks = parallelHooks{segChunks: h.SegChunks, onDispatched: h.OnDispatched, delay: h.Delay}
	return w, nil
}

// NewReaderJobsHooks is NewReaderJobs with hooks.
func NewReaderJobsHooks(src io.Reader, dek []byte, jobs int, h ParallelHooks) (*Reader, error) {
	r, err := NewReaderJobs(src, dek, jobs)
	if err != nil {
		return nil, err
	}
	r.hooks = parallelHooks{segChunks: h.SegChunks, onDispatched: h.OnDispatched, delay: h.Delay}
	return r, nil
}

// SegDepth is the most segments that exist at once for jobs workers.
func SegDepth(jobs int) int { return segDepth(jobs) }
