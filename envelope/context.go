package envelope

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Reserved context keys. Every key with the "envdr:" prefix is reserved for envdr; users may not
// set any of them, and the only one defined is KeyID.
const (
	ReservedPrefix = "envdr:"
	// KeyID carries the ID of the record that holds this DEK's wraps: the envelope ID, or, for
	// envelopes sealed with a cached DEK, the cache entry's ID (see docs/FORMAT.md, "Caching").
	KeyID = "envdr:id"
)

// Limits on an encryption context. They keep headers, records and events bounded and stay
// within KMS's own limits on encryption context size.
const (
	MaxContextEntries  = 64   // pairs, envdr:id included
	MaxContextKeyLen   = 256  // bytes per key
	MaxContextValueLen = 2048 // bytes per value
	MaxContextBytes    = 8192 // sum of all key and value bytes
	MaxIDLen           = 128  // bytes of an envelope or record ID
)

// ContextError reports an encryption context that breaks the rules. It matches ErrBadContext.
type ContextError struct {
	Key    string // offending key, when there is one
	Detail string
}

func (e *ContextError) Error() string {
	if e.Key != "" {
		return fmt.Sprintf("%v: key %q: %s", ErrBadContext, e.Key, e.Detail)
	}
	return fmt.Sprintf("%v: %s", ErrBadContext, e.Detail)
}

func (e *ContextError) Unwrap() error { return ErrBadContext }

// Context is a canonical encryption context: pairs sorted by key (bytewise), valid UTF-8, within
// the limits above, with envdr:id present and no other reserved key. It is immutable; the zero
// value is the empty (invalid) context. The same Context is bound on every KMS call for the DEK
// and, through the header hash, into every chunk.
type Context struct {
	keys []string
	vals []string
}

// NewContext builds the context for an envelope or record ID from user pairs, which must not use
// the reserved "envdr:" prefix.
func NewContext(id string, user map[string]string) (Context, error) {
	if err := ValidateID(id); err != nil {
		return Context{}, &ContextError{Key: KeyID, Detail: err.Error()}
	}
	for k := range user {
		if strings.HasPrefix(k, ReservedPrefix) {
			return Context{}, &ContextError{Key: k, Detail: "keys with the prefix " + ReservedPrefix + " are reserved"}
		}
	}
	m := make(map[string]string, len(user)+1)
	for k, v := range user {
		m[k] = v
	}
	m[KeyID] = id
	return ParseContext(m)
}

// ParseContext validates a full context, envdr:id included, e.g. from a record or an event.
func ParseContext(m map[string]string) (Context, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	c := Context{keys: keys, vals: make([]string, len(keys))}
	for i, k := range keys {
		c.vals[i] = m[k]
	}
	if err := c.validate(); err != nil {
		return Context{}, err
	}
	return c, nil
}

func (c Context) validate() error {
	if len(c.keys) == 0 {
		return &ContextError{Key: KeyID, Detail: "missing"}
	}
	if len(c.keys) > MaxContextEntries {
		return &ContextError{Detail: fmt.Sprintf("%d pairs, at most %d allowed", len(c.keys), MaxContextEntries)}
	}
	total := 0
	for i, k := range c.keys {
		v := c.vals[i]
		if i > 0 && c.keys[i-1] >= k {
			return &ContextError{Key: k, Detail: "keys not strictly sorted (duplicate or out of order)"}
		}
		if err := checkContextString(k, MaxContextKeyLen, true); err != nil {
			return &ContextError{Key: printableKey(k), Detail: "key " + err.Error()}
		}
		if err := checkContextString(v, MaxContextValueLen, false); err != nil {
			return &ContextError{Key: k, Detail: "value " + err.Error()}
		}
		if strings.HasPrefix(k, ReservedPrefix) && k != KeyID {
			return &ContextError{Key: k, Detail: "unknown reserved key (only " + KeyID + " is defined)"}
		}
		total += len(k) + len(v)
	}
	if total > MaxContextBytes {
		return &ContextError{Detail: fmt.Sprintf("%d bytes, at most %d allowed", total, MaxContextBytes)}
	}
	id, ok := c.Get(KeyID)
	if !ok {
		return &ContextError{Key: KeyID, Detail: "missing"}
	}
	if err := ValidateID(id); err != nil {
		return &ContextError{Key: KeyID, Detail: err.Error()}
	}
	return nil
}

// printableKey keeps invalid keys out of error text verbatim (they may be binary junk).
func printableKey(k string) string {
	if utf8.ValidString(k) && len(k) <= MaxContextKeyLen {
		return k
	}
	return fmt.Sprintf("%.32x…", k)
}

func checkContextString(s string, max int, key bool) error {
	if s == "" {
		return fmt.Errorf("is empty")
	}
	if len(s) > max {
		return fmt.Errorf("is %d bytes, at most %d allowed", len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("is not valid UTF-8")
	}
	if key {
		// Keys end up in error messages, logs and metric labels: no control characters.
		for _, r := range s {
			if r < 0x20 || r == 0x7f {
				return fmt.Errorf("contains a control character")
			}
		}
	}
	return nil
}

// ValidateID checks an envelope or record ID: 1..MaxIDLen bytes of [A-Za-z0-9._:-], starting
// with a letter or digit. IDs go into DynamoDB keys, file names, logs and KMS contexts, so the
// alphabet is deliberately small.
func ValidateID(id string) error {
	if id == "" {
		return fmt.Errorf("ID is empty")
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("ID is %d bytes, at most %d allowed", len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		alnum := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("ID must start with a letter or digit")
		}
		if !alnum && ch != '.' && ch != '_' && ch != ':' && ch != '-' {
			return fmt.Errorf("ID contains %q; allowed: letters, digits and . _ : -", ch)
		}
	}
	return nil
}

// ID is the value of envdr:id: the ID of the record that holds this DEK's wraps.
func (c Context) ID() string {
	v, _ := c.Get(KeyID)
	return v
}

// Get returns the value for key.
func (c Context) Get(key string) (string, bool) {
	i := sort.SearchStrings(c.keys, key)
	if i < len(c.keys) && c.keys[i] == key {
		return c.vals[i], true
	}
	return "", false
}

// Len is the number of pairs, envdr:id included.
func (c Context) Len() int { return len(c.keys) }

// IsZero reports whether c is the zero Context.
func (c Context) IsZero() bool { return len(c.keys) == 0 }

// Keys returns the keys in canonical order (a copy).
func (c Context) Keys() []string { return append([]string(nil), c.keys...) }

// Map returns the pairs as a new map, the form KMS calls take.
func (c Context) Map() map[string]string {
	m := make(map[string]string, len(c.keys))
	for i, k := range c.keys {
		m[k] = c.vals[i]
	}
	return m
}

// User returns the pairs without reserved keys, as a new map.
func (c Context) User() map[string]string {
	m := make(map[string]string, len(c.keys))
	for i, k := range c.keys {
		if !strings.HasPrefix(k, ReservedPrefix) {
			m[k] = c.vals[i]
		}
	}
	return m
}

// Equal reports whether both contexts hold the same pairs.
func (c Context) Equal(o Context) bool {
	if len(c.keys) != len(o.keys) {
		return false
	}
	for i := range c.keys {
		if c.keys[i] != o.keys[i] || c.vals[i] != o.vals[i] {
			return false
		}
	}
	return true
}

// Diff compares c (found) with want and returns nil or a *ContextMismatchError.
func (c Context) Diff(want Context) error {
	return diffContext(want.Map(), c, false)
}

// Compare checks c (found) against the pairs a caller expects. Reserved keys of c that expected
// does not mention are not compared (a caller rarely knows envdr:id); every other key must
// match exactly, in both directions. It returns nil or a *ContextMismatchError.
func (c Context) Compare(expected map[string]string) error {
	return diffContext(expected, c, true)
}

func diffContext(want map[string]string, got Context, skipReserved bool) error {
	e := &ContextMismatchError{}
	for k, v := range want {
		gv, ok := got.Get(k)
		switch {
		case !ok:
			e.Missing = append(e.Missing, k)
		case gv != v:
			e.Different = append(e.Different, k)
		}
	}
	for _, k := range got.keys {
		if _, ok := want[k]; ok {
			continue
		}
		if skipReserved && strings.HasPrefix(k, ReservedPrefix) {
			continue
		}
		e.Extra = append(e.Extra, k)
	}
	if len(e.Missing)+len(e.Extra)+len(e.Different) == 0 {
		return nil
	}
	sort.Strings(e.Missing)
	sort.Strings(e.Different)
	return e
}

// String renders the context canonically as k=v pairs joined by commas, for humans. Values
// are not secret (KMS logs them in CloudTrail).
func (c Context) String() string {
	var b strings.Builder
	for i, k := range c.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%s", k, c.vals[i])
	}
	return b.String()
}

// MarshalJSON writes a JSON object with keys in canonical order.
func (c Context) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range c.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		writeJSONString(&b, k)
		b.WriteByte(':')
		writeJSONString(&b, c.vals[i])
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads a JSON object of strings, rejecting duplicate keys and invalid contexts.
func (c *Context) UnmarshalJSON(data []byte) error {
	m, err := decodeStringMap(data)
	if err != nil {
		return &ContextError{Detail: err.Error()}
	}
	parsed, err := ParseContext(m)
	if err != nil {
		return err
	}
	*c = parsed
	return nil
}

// AppendBinary appends the canonical binary encoding (docs/FORMAT.md): a uint16 pair count,
// then per pair a uint16 key length, the key, a uint16 value length, the value.
func (c Context) AppendBinary(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.keys)))
	for i, k := range c.keys {
		b = binary.BigEndian.AppendUint16(b, uint16(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(c.vals[i])))
		b = append(b, c.vals[i]...)
	}
	return b
}

// writeJSONString writes s as a JSON string exactly as encoding/json does (HTML-safe escapes
// included), so canonical forms agree with json.Marshal.
func writeJSONString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // a string always marshals
	b.Write(q)
}
