package envelope

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/envdr/envdr/internal/filesize"
)

// DataKey is a fresh DEK and its wrap under one region's key.
type DataKey struct {
	Plaintext []byte // the DEK, DEKSize bytes; Seal wipes it when done
	Wrapped   []byte // the DEK encrypted under KeyARN, bound to the context it was made for
	KeyARN    string
	Region    string
}

// KeyGenerator makes a fresh DEK wrapped under a region's key, bound to ec (KMS
// GenerateDataKey in the home region).
type KeyGenerator interface {
	GenerateDataKey(ctx context.Context, ec Context) (*DataKey, error)
}

// Unwrapper recovers a DEK from a wrap made under keyARN and bound to ec (KMS Decrypt). It must
// return a fresh slice: the caller owns it and wipes it.
type Unwrapper interface {
	Unwrap(ctx context.Context, wrapped []byte, keyARN string, ec Context) ([]byte, error)
}

// Wrap is one region's wrapped DEK.
type Wrap struct {
	Region  string
	KeyARN  string
	Wrapped []byte
	// Source says where the wrap came from, for messages: e.g. "record" (the region's item in
	// its table) or "header" (the envelope's own wrap). Empty when it does not matter.
	Source string
}

// SealOptions configures Seal.
type SealOptions struct {
	// ID is the envelope ID (ValidateID rules); empty means a random one.
	ID string
	// Context holds the user's encryption-context pairs; envdr:id is added, other "envdr:"
	// keys are refused.
	Context map[string]string
	// ChunkSize is the plaintext bytes per chunk; 0 means DefaultChunkSize. Bigger chunks are a
	// little faster and cost that much more memory on both sides.
	ChunkSize int
	// HomeRegion is recorded in the header; empty means the DataKey's Region. If both are set
	// they must agree.
	HomeRegion string
	// Jobs is the number of workers sealing chunks concurrently (NewWriterJobs); 0 or 1: one, on
	// the calling goroutine.
	Jobs int
}

// OpenOptions configures Open.
type OpenOptions struct {
	// Context, when not nil, is the context the caller expects (user keys; envdr:id may be
	// given too). A mismatch fails before any KMS call with a *ContextMismatchError.
	Context map[string]string
	// Wrap, when not nil, is used instead of the header's own wrap, e.g. a region's wrap from
	// the record when opening through that region only.
	Wrap *Wrap
	// Jobs is the number of workers authenticating chunks concurrently (NewReaderJobs); 0 or 1:
	// one, on the calling goroutine. Release rules are the same either way.
	Jobs int
	// Fallbacks are tried in order, after Wrap (or the header's wrap), when a wrap does not
	// unwrap or opens to a DEK that fails the key commitment: a region's record may hold a bad
	// wrap while the header's multi-Region wrap still opens there. No plaintext is written
	// before a wrap passes the commitment, so a failed try leaves dst untouched.
	Fallbacks []*Wrap
	// Used, when not nil, is told the wrap that opened and the errors of those tried before it.
	Used func(w *Wrap, failed []error)
}

// NewID returns a random envelope ID: 32 lower-case hex digits (128 bits).
func NewID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// Seal reads src to EOF and writes the envelope to dst: it asks gen for a DEK bound to the
// canonical context, writes the header with the wrap and commitment, then the chunks. The DEK
// is wiped before Seal returns. On error, dst may hold a partial envelope that will not open.
func Seal(ctx context.Context, dst io.Writer, src io.Reader, gen KeyGenerator, opts SealOptions) (*Header, error) {
	id := opts.ID
	if id == "" {
		var err error
		if id, err = NewID(); err != nil {
			return nil, err
		}
	}
	if err := ValidateID(id); err != nil {
		return nil, &ContextError{Key: KeyID, Detail: err.Error()}
	}
	ec, err := NewContext(id, opts.Context)
	if err != nil {
		return nil, err
	}
	if opts.ChunkSize != 0 && (opts.ChunkSize < MinChunkSize || opts.ChunkSize > MaxChunkSize) {
		return nil, fmt.Errorf("envelope: chunk size %d not in [%d, %d]", opts.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	jobs, err := checkJobs(max(opts.Jobs, 1))
	if err != nil {
		return nil, err
	}

	var (
		dk     *DataKey
		shared bool
		done   func(int64)
	)
	var written int64
	if sg, ok := gen.(sharedKeyGenerator); ok {
		// A cached DEK is bound to its cache entry's context, not to this envelope's.
		dk, ec, done, err = sg.sharedDataKey(ctx, opts.Context, sourceSize(src))
		shared = true
	} else {
		dk, err = gen.GenerateDataKey(ctx, ec)
	}
	if err != nil {
		return nil, &KeyError{Op: "generate", ID: id, Region: opts.HomeRegion, Err: err}
	}
	if done != nil {
		defer func() { done(written) }() // on every path: the reservation is released
	}
	defer Wipe(dk.Plaintext)
	if err := checkDataKey(dk); err != nil {
		return nil, &KeyError{Op: "generate", ID: id, Region: dk.Region, KeyARN: dk.KeyARN, Err: err}
	}
	home := opts.HomeRegion
	if home == "" {
		home = dk.Region
	} else if dk.Region != "" && dk.Region != home {
		return nil, &KeyError{Op: "generate", ID: id, Region: dk.Region, KeyARN: dk.KeyARN,
			Err: fmt.Errorf("%w: data key comes from region %s, home region is %s", ErrBadKey, dk.Region, home)}
	}

	w, err := newWriter(ctxWriter{ctx, dst}, dk.Plaintext, &Header{
		ID:         id,
		SharedKey:  shared,
		ChunkSize:  opts.ChunkSize,
		HomeRegion: home,
		KeyARN:     dk.KeyARN,
		WrappedDEK: dk.Wrapped,
		Context:    ec,
	}, nil, jobs)
	Wipe(dk.Plaintext) // the Writer holds only the derived chunk key from here on
	if err != nil {
		return nil, err
	}
	_, err = w.ReadFrom(src)
	written = w.Written()
	if err != nil {
		w.discard() // the chunk buffer may hold plaintext: wipe it
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return w.Header(), nil
}

// ctxWriter fails writes once ctx is done, so Seal and Open stop between chunks when their
// context is cancelled (envdr's commands cancel it on SIGINT and SIGTERM). Each chunk is one
// Write, so the check costs one ctx.Err per chunk.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, fmt.Errorf("envelope: interrupted: %w", err)
	}
	return c.w.Write(p)
}

// sourceSize is the plaintext size src will yield when src can tell (in-memory readers, the rest
// of a regular file), else -1. The data-key cache reserves it when a seal starts.
func sourceSize(src io.Reader) int64 {
	switch s := src.(type) {
	case interface{ Len() int }: // *bytes.Reader, *bytes.Buffer, *strings.Reader
		return int64(s.Len())
	case *os.File:
		return filesize.Remaining(s)
	}
	return -1
}

func checkDataKey(dk *DataKey) error {
	switch {
	case len(dk.Plaintext) != DEKSize:
		return fmt.Errorf("%w: DEK is %d bytes, want %d", ErrBadKey, len(dk.Plaintext), DEKSize)
	case len(dk.Wrapped) == 0 || len(dk.Wrapped) > MaxWrappedDEKLen:
		return fmt.Errorf("%w: wrapped DEK is %d bytes, want 1..%d", ErrBadKey, len(dk.Wrapped), MaxWrappedDEKLen)
	}
	if err := validateKeyARN(dk.KeyARN, false); err != nil {
		return fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	if err := validateRegion(dk.Region, true); err != nil {
		return fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return nil
}

// unwrapChecked unwraps w and checks the DEK against the header's key commitment; the DEK is
// returned only when it matches (the caller wipes it).
func unwrapChecked(ctx context.Context, u Unwrapper, hdr *Header, w *Wrap) ([]byte, error) {
	if len(w.Wrapped) == 0 {
		return nil, &KeyError{Op: "unwrap", ID: hdr.RecordID(), Region: w.Region, KeyARN: w.KeyARN,
			Err: fmt.Errorf("%w: no wrapped DEK", ErrBadKey)}
	}
	dek, err := u.Unwrap(ctx, w.Wrapped, w.KeyARN, hdr.Context)
	if err != nil {
		return nil, &KeyError{Op: "unwrap", ID: hdr.RecordID(), Region: w.Region, KeyARN: w.KeyARN, Err: err}
	}
	if err := VerifyCommitment(dek, hdr); err != nil {
		Wipe(dek)
		return nil, &KeyError{Op: "unwrap", ID: hdr.RecordID(), Region: w.Region, KeyARN: w.KeyARN, Err: err}
	}
	return dek, nil
}

// Open reads an envelope from src and writes its plaintext to dst. In order, before any
// plaintext is written: the header is parsed strictly, the context is compared with
// opts.Context, the DEK is unwrapped (from opts.Wrap or the header, then each of opts.Fallbacks
// until one passes), and the key commitment is checked. Then each chunk is written as soon as it authenticates; see Reader for what a
// failure after the first chunk leaves in dst. The header is returned whenever it parsed, also
// with an error, so callers can name the envelope.
func Open(ctx context.Context, dst io.Writer, src io.Reader, u Unwrapper, opts OpenOptions) (*Header, error) {
	jobs, err := checkJobs(max(opts.Jobs, 1))
	if err != nil {
		return nil, err
	}
	hdr, raw, err := readHeader(src)
	if err != nil {
		return nil, err
	}
	if opts.Context != nil {
		if err := hdr.Context.Compare(opts.Context); err != nil {
			return hdr, err
		}
	}
	wrap := hdr.Wrap()
	if opts.Wrap != nil {
		wrap = opts.Wrap
	}
	var failed []error
	var dek []byte
	for _, w := range append([]*Wrap{wrap}, opts.Fallbacks...) {
		if w == nil {
			continue
		}
		if dek, err = unwrapChecked(ctx, u, hdr, w); err == nil {
			if opts.Used != nil {
				opts.Used(w, failed)
			}
			break
		}
		failed = append(failed, err)
	}
	if dek == nil {
		return hdr, failed[0]
	}
	defer Wipe(dek)
	r, err := newReader(src, hdr, raw, dek, jobs)
	if err != nil {
		return hdr, err
	}
	Wipe(dek)
	if _, err := r.WriteTo(ctxWriter{ctx, dst}); err != nil {
		return hdr, err
	}
	return hdr, nil
}
