package envelope

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinels callers branch on with errors.Is. Typed errors below wrap them.
var (
	// ErrBadHeader: the envelope header is malformed or not canonical (always with *FormatError).
	ErrBadHeader = errors.New("envelope: bad header")
	// ErrUnknownVersion: a header, record or event carries a format version this build does not
	// know. Distinct from ErrBadHeader's other causes so callers can say "upgrade envdr".
	ErrUnknownVersion = errors.New("envelope: unknown format version")
	// ErrTruncated: the input ended early (inside the header, inside a chunk, or at a chunk
	// boundary before the final chunk).
	ErrTruncated = errors.New("envelope: truncated")
	// ErrAuth: a chunk failed AES-GCM authentication: tampered, reordered, duplicated, from
	// another envelope, or under another key.
	ErrAuth = errors.New("envelope: chunk authentication failed")
	// ErrTrailingData: data follows the final chunk.
	ErrTrailingData = errors.New("envelope: data after the final chunk")
	// ErrContextMismatch: the encryption context is not the one expected (always with
	// *ContextMismatchError, which names the keys that differ).
	ErrContextMismatch = errors.New("envelope: encryption context mismatch")
	// ErrCommitmentMismatch: the unwrapped DEK is not the key the envelope was sealed with.
	ErrCommitmentMismatch = errors.New("envelope: key commitment mismatch")
	// ErrBadContext: an encryption context violates the rules (reserved keys, UTF-8, limits).
	ErrBadContext = errors.New("envelope: invalid encryption context")
	// ErrBadKey: a DEK of the wrong length, or a wrap that cannot be used.
	ErrBadKey = errors.New("envelope: invalid data key")
	// ErrBadRecord: a record is malformed (always with *RecordError).
	ErrBadRecord = errors.New("envelope: bad record")
	// ErrBadEvent: an event is malformed (always with *EventError).
	ErrBadEvent = errors.New("envelope: bad event")
	// ErrRecordConflict: two records with the same ID disagree on immutable fields.
	ErrRecordConflict = errors.New("envelope: conflicting records")
)

// ErrTagMismatch is ErrAuth under the name AEAD libraries use.
var ErrTagMismatch = ErrAuth

// FormatError reports a malformed header. It matches ErrBadHeader and, when set, Err
// (ErrTruncated, ErrUnknownVersion, ErrBadContext).
type FormatError struct {
	Field  string // header field, e.g. "magic", "key_arn", "context"
	Offset int    // byte offset of the field in the header
	Detail string // what is wrong, never secret
	Err    error  // cause sentinel, may be nil
}

func (e *FormatError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "envelope: bad header: field %s at offset %d", e.Field, e.Offset)
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap makes errors.Is match ErrBadHeader and the cause.
func (e *FormatError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrBadHeader}
	}
	return []error{ErrBadHeader, e.Err}
}

// ChunkError reports a payload failure at a chunk. Err is ErrAuth, ErrTruncated or
// ErrTrailingData.
type ChunkError struct {
	Index  uint64 // chunk counter, from 0
	Detail string
	Err    error
}

func (e *ChunkError) Error() string {
	s := fmt.Sprintf("%v at chunk %d", e.Err, e.Index)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

func (e *ChunkError) Unwrap() error { return e.Err }

// ContextMismatchError names the keys whose presence or value differ between the context that
// was expected and the one found. Values are not printed: they are not secret, but they can be
// long and keys are what an operator fixes.
type ContextMismatchError struct {
	Missing   []string // expected, absent
	Extra     []string // present, not expected
	Different []string // present with another value
}

func (e *ContextMismatchError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, "missing keys "+quoteList(e.Missing))
	}
	if len(e.Extra) > 0 {
		parts = append(parts, "unexpected keys "+quoteList(e.Extra))
	}
	if len(e.Different) > 0 {
		parts = append(parts, "different values for keys "+quoteList(e.Different))
	}
	return ErrContextMismatch.Error() + ": " + strings.Join(parts, "; ")
}

func (e *ContextMismatchError) Unwrap() error { return ErrContextMismatch }

func quoteList(ks []string) string {
	q := make([]string, len(ks))
	for i, k := range ks {
		q[i] = fmt.Sprintf("%q", k)
	}
	return strings.Join(q, ", ")
}

// KeyError reports a failure of a KeyGenerator or Unwrapper, naming the envelope, region and
// key so the operator knows which wrap failed.
type KeyError struct {
	Op     string // "generate" or "unwrap"
	ID     string // envelope or record ID
	Region string
	KeyARN string
	Err    error
}

func (e *KeyError) Error() string {
	s := "envelope: " + e.Op + " data key"
	if e.ID != "" {
		s += " for " + e.ID
	}
	if e.Region != "" {
		s += " in region " + e.Region
	}
	if e.KeyARN != "" {
		s += " with key " + e.KeyARN
	}
	return s + ": " + e.Err.Error()
}

func (e *KeyError) Unwrap() error { return e.Err }

// RecordError reports a malformed record. It matches ErrBadRecord and Err when set.
type RecordError struct {
	Field  string
	Detail string
	Err    error
}

func (e *RecordError) Error() string {
	s := "envelope: bad record"
	if e.Field != "" {
		s += ": field " + e.Field
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *RecordError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrBadRecord}
	}
	return []error{ErrBadRecord, e.Err}
}

// Event rejection reasons, short codes for the DLQ reason attribute and metrics labels.
const (
	ReasonBadJSON        = "bad_json"        // not valid JSON or not valid UTF-8
	ReasonOversize       = "oversize"        // larger than MaxEventSize
	ReasonUnknownVersion = "unknown_version" // version is not 1
	ReasonMissingField   = "missing_field"   // a required field is absent
	ReasonUnknownField   = "unknown_field"   // a field this version does not define
	ReasonDuplicateField = "duplicate_field" // a field appears twice
	ReasonBadField       = "bad_field"       // wrong type or invalid value (ID, region, time, ...)
	ReasonBadBase64      = "bad_base64"      // wrapped_dek or commitment not standard base64
	ReasonBadContext     = "bad_context"     // context invalid, without envdr:id or not == id
)

// EventError reports a rejected event. Reason() is a short code (Reason* constants); Field names
// the offending field when there is one. It matches ErrBadEvent and Err when set.
type EventError struct {
	Code   string
	Field  string
	Detail string
	Err    error
}

// Reason is the short code to put in a DLQ reason attribute.
func (e *EventError) Reason() string { return e.Code }

func (e *EventError) Error() string {
	s := "envelope: bad event (" + e.Code + ")"
	if e.Field != "" {
		s += ": field " + e.Field
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *EventError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrBadEvent}
	}
	return []error{ErrBadEvent, e.Err}
}
