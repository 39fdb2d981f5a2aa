package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Format constants (docs/FORMAT.md).
const (
	// FormatVersion is the only header version this build reads and writes.
	FormatVersion = 1

	DefaultChunkSize = 64 << 10 // plaintext bytes per chunk
	MinChunkSize     = 64       // small chunks only cost speed; tiny ones keep vectors short
	MaxChunkSize     = 4 << 20  // bounds Open's memory for hostile headers

	SaltSize       = 32
	CommitmentSize = 32
	DEKSize        = 32 // AES-256
	TagSize        = 16 // AES-GCM tag per chunk

	MaxRegionLen     = 64
	MaxKeyARNLen     = 2048 // KMS's limit on a KeyId
	MaxWrappedDEKLen = 6144 // KMS's limit on a CiphertextBlob
	MaxHeaderSize    = 32 << 10

	prefixLen = 13 // magic, version, header length
)

// Magic starts every envelope. Like PNG's, the high byte and the CR LF catch 7-bit and
// line-ending mangling in transit.
var Magic = [8]byte{0x89, 'E', 'N', 'V', 'D', 'R', '\r', '\n'}

// Header flags.
const (
	flagSharedKey = 1 << 0
	knownFlags    = flagSharedKey
)

// Header is an envelope's header. Its canonical encoding is hashed with SHA-256 and the hash is
// the associated data of every chunk, so any change to any field makes every chunk fail
// authentication. It is authenticated only that way, so only once the DEK is known: a parsed
// Header on its own (ReadHeader, envdr inspect) is untrusted input.
type Header struct {
	Version int    `json:"version"`
	ID      string `json:"id"` // envelope ID
	// SharedKey: the DEK came from CachingKeyGenerator and may seal other envelopes too; then
	// Context's envdr:id is the cache entry's (record) ID rather than ID.
	SharedKey  bool   `json:"shared_key,omitempty"`
	ChunkSize  int    `json:"chunk_size"`
	Salt       []byte `json:"salt"`       // per-envelope HKDF salt, SaltSize bytes
	Commitment []byte `json:"commitment"` // key commitment, CommitmentSize bytes
	HomeRegion string `json:"home_region"`
	KeyARN     string `json:"key_arn"`
	WrappedDEK []byte `json:"wrapped_dek"` // the home region's wrap (ciphertext, not secret)
	// Context is the encryption context the wrapped DEK is bound to.
	Context Context `json:"context"`
}

// RecordID is the ID of the record holding this DEK's wraps (Context's envdr:id): the envelope
// ID, or the cache entry's ID for a SharedKey envelope.
func (h *Header) RecordID() string { return h.Context.ID() }

// Wrap returns the header's own wrap.
func (h *Header) Wrap() *Wrap {
	return &Wrap{Region: h.HomeRegion, KeyARN: h.KeyARN, Wrapped: h.WrappedDEK}
}

// Validate checks every field against the format's rules.
func (h *Header) Validate() error {
	_, err := h.MarshalBinary()
	return err
}

// MarshalBinary returns the canonical encoding, or a *FormatError naming the bad field.
func (h *Header) MarshalBinary() ([]byte, error) {
	if h.Version != FormatVersion {
		return nil, &FormatError{Field: "version", Offset: 8, Detail: fmt.Sprintf("version %d", h.Version), Err: ErrUnknownVersion}
	}
	if err := h.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, h.size())
	b = append(b, Magic[:]...)
	b = append(b, byte(h.Version))
	b = binary.BigEndian.AppendUint32(b, uint32(h.size()))
	var flags byte
	if h.SharedKey {
		flags |= flagSharedKey
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(h.ChunkSize))
	b = append(b, h.Salt...)
	b = append(b, h.Commitment...)
	b = append(b, byte(len(h.ID)))
	b = append(b, h.ID...)
	b = append(b, byte(len(h.HomeRegion)))
	b = append(b, h.HomeRegion...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.KeyARN)))
	b = append(b, h.KeyARN...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.WrappedDEK)))
	b = append(b, h.WrappedDEK...)
	b = h.Context.AppendBinary(b)
	return b, nil
}

func (h *Header) size() int {
	n := prefixLen + 1 + 4 + SaltSize + CommitmentSize + 1 + len(h.ID) + 1 + len(h.HomeRegion) +
		2 + len(h.KeyARN) + 2 + len(h.WrappedDEK) + 2
	for i, k := range h.Context.keys {
		n += 4 + len(k) + len(h.Context.vals[i])
	}
	return n
}

// check validates the fields that MarshalBinary and parseHeader both enforce; offsets are
// approximate for marshalling (it has no input bytes) and exact for parsing.
func (h *Header) check() error {
	switch {
	case h.ChunkSize < MinChunkSize || h.ChunkSize > MaxChunkSize:
		return &FormatError{Field: "chunk_size", Offset: 14, Detail: fmt.Sprintf("%d not in [%d, %d]", h.ChunkSize, MinChunkSize, MaxChunkSize)}
	case len(h.Salt) != SaltSize:
		return &FormatError{Field: "salt", Offset: 18, Detail: fmt.Sprintf("%d bytes, want %d", len(h.Salt), SaltSize)}
	case len(h.Commitment) != CommitmentSize:
		return &FormatError{Field: "commitment", Offset: 50, Detail: fmt.Sprintf("%d bytes, want %d", len(h.Commitment), CommitmentSize)}
	}
	if err := ValidateID(h.ID); err != nil {
		return &FormatError{Field: "id", Offset: 82, Detail: err.Error()}
	}
	if err := validateRegion(h.HomeRegion, true); err != nil {
		return &FormatError{Field: "home_region", Detail: err.Error()}
	}
	if err := validateKeyARN(h.KeyARN, true); err != nil {
		return &FormatError{Field: "key_arn", Detail: err.Error()}
	}
	if len(h.WrappedDEK) > MaxWrappedDEKLen {
		return &FormatError{Field: "wrapped_dek", Detail: fmt.Sprintf("%d bytes, at most %d allowed", len(h.WrappedDEK), MaxWrappedDEKLen)}
	}
	if err := h.Context.validate(); err != nil {
		return &FormatError{Field: "context", Detail: err.Error(), Err: ErrBadContext}
	}
	if !h.SharedKey && h.Context.ID() != h.ID {
		return &FormatError{Field: "context", Detail: KeyID + " differs from the envelope ID", Err: ErrBadContext}
	}
	if h.size() > MaxHeaderSize {
		return &FormatError{Field: "header_len", Offset: 9, Detail: fmt.Sprintf("%d bytes, at most %d allowed", h.size(), MaxHeaderSize)}
	}
	return nil
}

// validateRegion accepts AWS region names (lower-case letters, digits, dashes).
func validateRegion(r string, emptyOK bool) error {
	if r == "" {
		if emptyOK {
			return nil
		}
		return errors.New("region is empty")
	}
	if len(r) > MaxRegionLen {
		return fmt.Errorf("region is %d bytes, at most %d allowed", len(r), MaxRegionLen)
	}
	for i := 0; i < len(r); i++ {
		ch := r[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
			return fmt.Errorf("region contains %q; allowed: a-z 0-9 -", ch)
		}
	}
	return nil
}

// validateKeyARN accepts printable ASCII up to MaxKeyARNLen: key ARNs, alias ARNs, key IDs.
func validateKeyARN(a string, emptyOK bool) error {
	if a == "" {
		if emptyOK {
			return nil
		}
		return errors.New("key ARN is empty")
	}
	if len(a) > MaxKeyARNLen {
		return fmt.Errorf("key ARN is %d bytes, at most %d allowed", len(a), MaxKeyARNLen)
	}
	for i := 0; i < len(a); i++ {
		if a[i] <= 0x20 || a[i] >= 0x7f {
			return fmt.Errorf("key ARN contains byte 0x%02x; only printable ASCII allowed", a[i])
		}
	}
	return nil
}

// ReadHeader reads exactly one header from r (no read-ahead: the payload follows in r) and
// validates it strictly. Errors are *FormatError.
func ReadHeader(r io.Reader) (*Header, error) {
	h, _, err := readHeader(r)
	return h, err
}

// readHeader also returns the raw bytes, whose hash binds the chunks.
func readHeader(r io.Reader) (*Header, []byte, error) {
	var prefix [prefixLen]byte
	n, err := io.ReadFull(r, prefix[:])
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// Check what we have so that non-envelopes say "magic", not "truncated".
			if !bytes.HasPrefix(Magic[:], prefix[:min(n, len(Magic))]) {
				return nil, nil, &FormatError{Field: "magic", Detail: "not an envdr envelope"}
			}
			return nil, nil, &FormatError{Field: "header", Offset: n, Detail: "input ends inside the header", Err: ErrTruncated}
		}
		return nil, nil, err // an I/O error of r, not a format problem
	}
	total, err := checkPrefix(prefix[:])
	if err != nil {
		return nil, nil, err
	}
	raw := make([]byte, total)
	copy(raw, prefix[:])
	if n, err := io.ReadFull(r, raw[prefixLen:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, &FormatError{Field: "header", Offset: prefixLen + n, Detail: "input ends inside the header", Err: ErrTruncated}
		}
		return nil, nil, err
	}
	h, err := parseHeader(raw)
	if err != nil {
		return nil, nil, err
	}
	return h, raw, nil
}

// ParseHeader parses the header at the start of b and returns it with its length in bytes.
func ParseHeader(b []byte) (*Header, int, error) {
	if len(b) < prefixLen {
		if !bytes.HasPrefix(Magic[:], b[:min(len(b), len(Magic))]) {
			return nil, 0, &FormatError{Field: "magic", Detail: "not an envdr envelope"}
		}
		return nil, 0, &FormatError{Field: "header", Offset: len(b), Detail: "input ends inside the header", Err: ErrTruncated}
	}
	total, err := checkPrefix(b[:prefixLen])
	if err != nil {
		return nil, 0, err
	}
	if len(b) < total {
		return nil, 0, &FormatError{Field: "header", Offset: len(b), Detail: "input ends inside the header", Err: ErrTruncated}
	}
	h, err := parseHeader(b[:total])
	if err != nil {
		return nil, 0, err
	}
	return h, total, nil
}

const minHeaderSize = prefixLen + 1 + 4 + SaltSize + CommitmentSize + 1 + 1 + 2 + 2 + 2

func checkPrefix(p []byte) (int, error) {
	if !bytes.Equal(p[:8], Magic[:]) {
		return 0, &FormatError{Field: "magic", Detail: "not an envdr envelope"}
	}
	if p[8] != FormatVersion {
		return 0, &FormatError{Field: "version", Offset: 8, Detail: fmt.Sprintf("version %d", p[8]), Err: ErrUnknownVersion}
	}
	total := int(binary.BigEndian.Uint32(p[9:13]))
	if total < minHeaderSize || total > MaxHeaderSize {
		return 0, &FormatError{Field: "header_len", Offset: 9, Detail: fmt.Sprintf("%d not in [%d, %d]", total, minHeaderSize, MaxHeaderSize)}
	}
	return total, nil
}

// headerParser walks the header bytes; every read is bounds-checked so hostile input can only
// produce a *FormatError.
type headerParser struct {
	b   []byte
	off int
}

func (p *headerParser) fail(field, detail string, err error) *FormatError {
	return &FormatError{Field: field, Offset: p.off, Detail: detail, Err: err}
}

func (p *headerParser) take(field string, n int) ([]byte, error) {
	if n > len(p.b)-p.off {
		return nil, p.fail(field, fmt.Sprintf("needs %d bytes, %d left before header_len", n, len(p.b)-p.off), nil)
	}
	v := p.b[p.off : p.off+n]
	p.off += n
	return v, nil
}

func (p *headerParser) u8(field string) (int, error) {
	v, err := p.take(field, 1)
	if err != nil {
		return 0, err
	}
	return int(v[0]), nil
}

func (p *headerParser) u16(field string) (int, error) {
	v, err := p.take(field, 2)
	if err != nil {
		return 0, err
	}
	return int(binary.BigEndian.Uint16(v)), nil
}

func (p *headerParser) u32(field string) (int, error) {
	v, err := p.take(field, 4)
	if err != nil {
		return 0, err
	}
	return int(binary.BigEndian.Uint32(v)), nil
}

// vbytes reads a length-prefixed field; the length is checked against max before the bytes.
func (p *headerParser) vbytes(field string, lenSize, max int) ([]byte, error) {
	start := p.off
	var n int
	var err error
	if lenSize == 1 {
		n, err = p.u8(field)
	} else {
		n, err = p.u16(field)
	}
	if err != nil {
		return nil, err
	}
	if n > max {
		p.off = start
		return nil, p.fail(field, fmt.Sprintf("length %d, at most %d allowed", n, max), nil)
	}
	return p.take(field, n)
}

func parseHeader(b []byte) (*Header, error) {
	p := &headerParser{b: b, off: prefixLen}
	h := &Header{Version: int(b[8])}
	flags, err := p.u8("flags")
	if err != nil {
		return nil, err
	}
	if flags&^knownFlags != 0 {
		p.off--
		return nil, p.fail("flags", fmt.Sprintf("unknown flag bits 0x%02x", flags&^knownFlags), nil)
	}
	h.SharedKey = flags&flagSharedKey != 0
	start := p.off
	if h.ChunkSize, err = p.u32("chunk_size"); err != nil {
		return nil, err
	}
	if h.ChunkSize < MinChunkSize || h.ChunkSize > MaxChunkSize {
		p.off = start
		return nil, p.fail("chunk_size", fmt.Sprintf("%d not in [%d, %d]", h.ChunkSize, MinChunkSize, MaxChunkSize), nil)
	}
	salt, err := p.take("salt", SaltSize)
	if err != nil {
		return nil, err
	}
	h.Salt = bytes.Clone(salt)
	com, err := p.take("commitment", CommitmentSize)
	if err != nil {
		return nil, err
	}
	h.Commitment = bytes.Clone(com)

	start = p.off
	id, err := p.vbytes("id", 1, MaxIDLen)
	if err != nil {
		return nil, err
	}
	if err := ValidateID(string(id)); err != nil {
		p.off = start
		return nil, p.fail("id", err.Error(), nil)
	}
	h.ID = string(id)

	start = p.off
	region, err := p.vbytes("home_region", 1, MaxRegionLen)
	if err != nil {
		return nil, err
	}
	if err := validateRegion(string(region), true); err != nil {
		p.off = start
		return nil, p.fail("home_region", err.Error(), nil)
	}
	h.HomeRegion = string(region)

	start = p.off
	arn, err := p.vbytes("key_arn", 2, MaxKeyARNLen)
	if err != nil {
		return nil, err
	}
	if err := validateKeyARN(string(arn), true); err != nil {
		p.off = start
		return nil, p.fail("key_arn", err.Error(), nil)
	}
	h.KeyARN = string(arn)

	wrapped, err := p.vbytes("wrapped_dek", 2, MaxWrappedDEKLen)
	if err != nil {
		return nil, err
	}
	h.WrappedDEK = bytes.Clone(wrapped)

	start = p.off
	count, err := p.u16("context")
	if err != nil {
		return nil, err
	}
	if count > MaxContextEntries {
		p.off = start
		return nil, p.fail("context", fmt.Sprintf("%d pairs, at most %d allowed", count, MaxContextEntries), ErrBadContext)
	}
	c := Context{keys: make([]string, 0, count), vals: make([]string, 0, count)}
	for i := 0; i < count; i++ {
		k, err := p.vbytes("context", 2, MaxContextKeyLen)
		if err != nil {
			return nil, err
		}
		v, err := p.vbytes("context", 2, MaxContextValueLen)
		if err != nil {
			return nil, err
		}
		c.keys = append(c.keys, string(k))
		c.vals = append(c.vals, string(v))
	}
	if err := c.validate(); err != nil {
		p.off = start
		return nil, p.fail("context", err.Error(), ErrBadContext)
	}
	h.Context = c
	if !h.SharedKey && c.ID() != h.ID {
		p.off = start
		return nil, p.fail("context", KeyID+" differs from the envelope ID", ErrBadContext)
	}
	if p.off != len(b) {
		return nil, p.fail("header_len", fmt.Sprintf("%d bytes after the last field", len(b)-p.off), nil)
	}
	return h, nil
}

// headerHash is the associated data of every chunk.
func headerHash(raw []byte) [32]byte { return sha256.Sum256(raw) }
