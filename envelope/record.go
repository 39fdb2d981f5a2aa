package envelope

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// Record limits.
const (
	RecordFormat    = 1 // "format" in the JSON encoding
	MaxRecordSize   = 1 << 20
	MaxRegions      = 32
	MaxLastErrorLen = 1024
)

// Record is the multi-wrapped record of one DEK (one envelope, or one cache entry's worth of
// envelopes): the DEK wrapped under each region's key, so every region can open on its own.
// The replicator keeps it in a DynamoDB global table; this package defines the type, its
// merge rule and a canonical JSON codec (tests, fuzzing, export), not the DynamoDB mapping.
type Record struct {
	ID           string  // equals Context's envdr:id
	Version      int64   // optimistic-concurrency counter, only ever increases
	Context      Context // the context every wrap is bound to
	Commitment   []byte  // key commitment of the DEK, CommitmentSize bytes
	SourceRegion string
	SourceKeyARN string
	CreatedAt    time.Time
	// DataURI is where the envelope's data lives (the creating event's data_uri: s3://bucket/key
	// for an object of the S3 data path), "" when unknown. Informational, not part of the
	// record's identity (Merge keeps the first one known): the drill's data check finds objects
	// by it that only the lost region's bucket holds.
	DataURI string
	Regions map[string]*RegionWrap // by region name
}

// RegionWrap is one region's state in a record.
type RegionWrap struct {
	KeyARN     string
	Wrapped    []byte    // the DEK wrapped under KeyARN; empty until the region is wrapped
	WrappedAt  time.Time // when Wrapped was made
	VerifiedAt time.Time // when Wrapped was last unwrapped in this region alone and checked
	// LastError is the last failure for this region ("" once it succeeded again), recorded at
	// LastErrorAt; writers set both so merges keep the newest.
	LastError   string
	LastErrorAt time.Time
	// Version is the record store's counter of this region's own item, for conditional writes
	// (0: the store holds no item for the region yet). It is not part of the record's encoding,
	// and merges do not carry it: a store takes it from what it read.
	Version int64
}

// HasWrap reports whether the region holds a wrapped DEK.
func (w *RegionWrap) HasWrap() bool { return w != nil && len(w.Wrapped) > 0 }

// Verified reports whether the current wrap has been verified.
func (w *RegionWrap) Verified() bool { return w.HasWrap() && !w.VerifiedAt.IsZero() }

// Wrap returns region's wrap, or nil when the record holds none for it.
func (r *Record) Wrap(region string) *Wrap {
	w := r.Regions[region]
	if !w.HasWrap() {
		return nil
	}
	return &Wrap{Region: region, KeyARN: w.KeyARN, Wrapped: w.Wrapped}
}

// Clone returns a deep copy.
func (r *Record) Clone() *Record {
	c := *r
	c.Commitment = bytes.Clone(r.Commitment)
	c.Regions = make(map[string]*RegionWrap, len(r.Regions))
	for k, w := range r.Regions {
		cw := *w
		cw.Wrapped = bytes.Clone(w.Wrapped)
		c.Regions[k] = &cw
	}
	return &c
}

// Validate checks every field; errors are *RecordError.
func (r *Record) Validate() error {
	if err := ValidateID(r.ID); err != nil {
		return &RecordError{Field: "id", Detail: err.Error()}
	}
	if r.Version < 0 {
		return &RecordError{Field: "version", Detail: "negative"}
	}
	if err := r.Context.validate(); err != nil {
		return &RecordError{Field: "context", Err: err}
	}
	if r.Context.ID() != r.ID {
		return &RecordError{Field: "context", Detail: KeyID + " differs from id", Err: ErrBadContext}
	}
	if len(r.Commitment) != CommitmentSize {
		return &RecordError{Field: "commitment", Detail: fmt.Sprintf("%d bytes, want %d", len(r.Commitment), CommitmentSize)}
	}
	if err := validateRegion(r.SourceRegion, false); err != nil {
		return &RecordError{Field: "source_region", Detail: err.Error()}
	}
	if err := validateKeyARN(r.SourceKeyARN, false); err != nil {
		return &RecordError{Field: "source_key_arn", Detail: err.Error()}
	}
	if !validTime(r.CreatedAt, false) {
		return &RecordError{Field: "created_at", Detail: "missing or out of range"}
	}
	if err := validateDataURI(r.DataURI); err != nil {
		return &RecordError{Field: "data_uri", Detail: err.Error()}
	}
	if len(r.Regions) > MaxRegions {
		return &RecordError{Field: "regions", Detail: fmt.Sprintf("%d regions, at most %d allowed", len(r.Regions), MaxRegions)}
	}
	for name, w := range r.Regions {
		f := "regions." + name
		if err := validateRegion(name, false); err != nil {
			return &RecordError{Field: "regions", Detail: err.Error()}
		}
		if w == nil {
			return &RecordError{Field: f, Detail: "empty"}
		}
		if err := validateKeyARN(w.KeyARN, !w.HasWrap()); err != nil {
			return &RecordError{Field: f + ".key_arn", Detail: err.Error()}
		}
		if len(w.Wrapped) > MaxWrappedDEKLen {
			return &RecordError{Field: f + ".wrapped_dek", Detail: fmt.Sprintf("%d bytes, at most %d allowed", len(w.Wrapped), MaxWrappedDEKLen)}
		}
		if w.HasWrap() != !w.WrappedAt.IsZero() || !validTime(w.WrappedAt, true) {
			return &RecordError{Field: f + ".wrapped_at", Detail: "required with wrapped_dek and only then"}
		}
		if !validTime(w.VerifiedAt, true) || !w.VerifiedAt.IsZero() && !w.HasWrap() {
			return &RecordError{Field: f + ".verified_at", Detail: "out of range or set without a wrap"}
		}
		if len(w.LastError) > MaxLastErrorLen || validateDataURI(w.LastError) != nil {
			return &RecordError{Field: f + ".last_error", Detail: fmt.Sprintf("at most %d bytes without control characters", MaxLastErrorLen)}
		}
		if !validTime(w.LastErrorAt, true) || w.LastError != "" && w.LastErrorAt.IsZero() {
			return &RecordError{Field: f + ".last_error_at", Detail: "required with last_error"}
		}
		if !w.HasWrap() && w.KeyARN == "" && w.LastErrorAt.IsZero() {
			return &RecordError{Field: f, Detail: "empty"}
		}
	}
	return nil
}

func validTime(t time.Time, zeroOK bool) bool {
	if t.IsZero() {
		return zeroOK
	}
	return t.Year() >= 1970 && t.Year() <= 9999
}

// Merge folds other (another writer's view of the same record) into r, so concurrent workers
// and redeliveries never lose a wrap or regress a verification. Immutable fields (ID, context,
// commitment, source) must agree, else ErrRecordConflict and r is unchanged. The rule, per
// field, is deterministic and commutative up to the choice of receiver:
//   - Version: the larger; CreatedAt: the earlier.
//   - Per region, when both hold the same wrap (key ARN and bytes): the earlier WrappedAt, the
//     later VerifiedAt.
//   - Per region, different wraps (two workers each wrapped; ReEncrypt is not deterministic):
//     a verified wrap beats an unverified one, then the earlier WrappedAt, then the smaller
//     key ARN, then the smaller bytes. Keeping the first verified wrap means a late duplicate
//     never displaces one that has been checked, so VerifiedAt never goes backwards.
//   - A region with a wrap always beats one without.
//   - LastError/LastErrorAt travel together; the later LastErrorAt wins (ties: the larger
//     string), so a success that clears the error with a newer time sticks.
//
// Deliberately replacing a region's wrap (rewrap to a new key) is not a merge: assign
// r.Regions[region] instead.
func (r *Record) Merge(other *Record) error {
	if err := r.sameRecord(other); err != nil {
		return err
	}
	r.Version = max(r.Version, other.Version)
	if r.CreatedAt.IsZero() || !other.CreatedAt.IsZero() && other.CreatedAt.Before(r.CreatedAt) {
		r.CreatedAt = other.CreatedAt
	}
	if r.DataURI == "" {
		r.DataURI = other.DataURI
	}
	if r.Regions == nil {
		r.Regions = map[string]*RegionWrap{}
	}
	for name, ow := range other.Regions {
		if ow == nil {
			continue
		}
		r.Regions[name] = mergeRegion(r.Regions[name], ow)
	}
	return nil
}

func (r *Record) sameRecord(o *Record) error {
	conflict := func(field string) error {
		return &RecordError{Field: field, Detail: "differs between records " + r.ID + " and " + o.ID, Err: ErrRecordConflict}
	}
	switch {
	case r.ID != o.ID:
		return conflict("id")
	case !r.Context.Equal(o.Context):
		return conflict("context")
	case !bytes.Equal(r.Commitment, o.Commitment):
		return conflict("commitment")
	case r.SourceRegion != o.SourceRegion:
		return conflict("source_region")
	case r.SourceKeyARN != o.SourceKeyARN:
		return conflict("source_key_arn")
	}
	return nil
}

// mergeRegion returns a new RegionWrap; inputs are not modified.
func mergeRegion(a, b *RegionWrap) *RegionWrap {
	if a == nil {
		c := *b
		c.Wrapped = bytes.Clone(b.Wrapped)
		return &c
	}
	var out RegionWrap
	switch {
	case a.HasWrap() && b.HasWrap() && a.KeyARN == b.KeyARN && bytes.Equal(a.Wrapped, b.Wrapped):
		out.KeyARN, out.Wrapped = a.KeyARN, bytes.Clone(a.Wrapped)
		out.WrappedAt = earliest(a.WrappedAt, b.WrappedAt)
		out.VerifiedAt = latest(a.VerifiedAt, b.VerifiedAt)
	default:
		w := a
		if wrapBeats(b, a) {
			w = b
		}
		out.KeyARN, out.Wrapped = w.KeyARN, bytes.Clone(w.Wrapped)
		out.WrappedAt, out.VerifiedAt = w.WrappedAt, w.VerifiedAt
	}
	e := a
	if b.LastErrorAt.After(a.LastErrorAt) || b.LastErrorAt.Equal(a.LastErrorAt) && b.LastError > a.LastError {
		e = b
	}
	out.LastError, out.LastErrorAt = e.LastError, e.LastErrorAt
	return &out
}

// wrapBeats orders different wraps of one region; see Merge.
func wrapBeats(x, y *RegionWrap) bool {
	if x.HasWrap() != y.HasWrap() {
		return x.HasWrap()
	}
	if x.Verified() != y.Verified() {
		return x.Verified()
	}
	if !x.WrappedAt.Equal(y.WrappedAt) {
		return x.WrappedAt.Before(y.WrappedAt)
	}
	if x.KeyARN != y.KeyARN {
		return x.KeyARN < y.KeyARN
	}
	if c := bytes.Compare(x.Wrapped, y.Wrapped); c != 0 {
		return c < 0
	}
	// Same wrap bytes, different key ARN spelling handled above; identical otherwise: prefer
	// the later verification.
	return x.VerifiedAt.After(y.VerifiedAt)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Record JSON wire form; field order is the canonical order.
type recordWire struct {
	Format       int                        `json:"format"`
	ID           string                     `json:"id"`
	Version      int64                      `json:"version"`
	Context      json.RawMessage            `json:"context"`
	Commitment   string                     `json:"commitment"`
	SourceRegion string                     `json:"source_region"`
	SourceKeyARN string                     `json:"source_key_arn"`
	CreatedAt    string                     `json:"created_at"`
	DataURI      string                     `json:"data_uri,omitempty"`
	Regions      map[string]regionWireEntry `json:"regions"`
}

type regionWireEntry struct {
	KeyARN      string `json:"key_arn,omitempty"`
	Wrapped     string `json:"wrapped_dek,omitempty"`
	WrappedAt   string `json:"wrapped_at,omitempty"`
	VerifiedAt  string `json:"verified_at,omitempty"`
	LastError   string `json:"last_error,omitempty"`
	LastErrorAt string `json:"last_error_at,omitempty"`
}

func optTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return formatTime(t)
}

// EncodeRecord returns the canonical JSON encoding of a valid record.
func EncodeRecord(r *Record) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	ctx, _ := r.Context.MarshalJSON()
	w := recordWire{
		Format:       RecordFormat,
		ID:           r.ID,
		Version:      r.Version,
		Context:      ctx,
		Commitment:   encodeB64(r.Commitment),
		SourceRegion: r.SourceRegion,
		SourceKeyARN: r.SourceKeyARN,
		CreatedAt:    formatTime(r.CreatedAt),
		DataURI:      r.DataURI,
		Regions:      make(map[string]regionWireEntry, len(r.Regions)),
	}
	for name, rw := range r.Regions {
		e := regionWireEntry{
			KeyARN:      rw.KeyARN,
			WrappedAt:   optTime(rw.WrappedAt),
			VerifiedAt:  optTime(rw.VerifiedAt),
			LastError:   rw.LastError,
			LastErrorAt: optTime(rw.LastErrorAt),
		}
		if rw.HasWrap() {
			e.Wrapped = encodeB64(rw.Wrapped)
		}
		w.Regions[name] = e
	}
	return json.Marshal(w)
}

// DecodeRecord parses a record strictly (no duplicate or unknown fields, exact types, strict
// base64, RFC 3339 times, valid context and fields). Errors are *RecordError; it never panics.
func DecodeRecord(data []byte) (*Record, error) {
	if len(data) > MaxRecordSize {
		return nil, &RecordError{Detail: fmt.Sprintf("%d bytes, at most %d allowed", len(data), MaxRecordSize)}
	}
	if dup, err := checkJSON(data); err != nil {
		if dup != "" {
			return nil, &RecordError{Field: printableKey(dup), Detail: "appears more than once"}
		}
		return nil, &RecordError{Detail: "bad JSON: " + err.Error()}
	}
	m, err := decodeObject(data)
	if err != nil {
		return nil, &RecordError{Detail: "not a JSON object"}
	}
	f, ok := m["format"]
	if !ok {
		return nil, &RecordError{Field: "format", Detail: "missing"}
	}
	if n, ok := jsonInt(f); !ok || n != RecordFormat {
		return nil, &RecordError{Field: "format", Detail: "unknown record format", Err: ErrUnknownVersion}
	}
	if err := onlyFields(m, "format", "id", "version", "context", "commitment", "source_region", "source_key_arn", "created_at", "data_uri", "regions"); err != nil {
		return nil, err
	}
	r := &Record{}
	str := func(m map[string]json.RawMessage, prefix, name string, required bool) (string, error) {
		raw, ok := m[name]
		if !ok {
			if required {
				return "", &RecordError{Field: prefix + name, Detail: "missing"}
			}
			return "", nil
		}
		s, ok := jsonString(raw)
		if !ok {
			return "", &RecordError{Field: prefix + name, Detail: "not a string"}
		}
		if !required && s == "" {
			// Canonical form omits empty optional fields.
			return "", &RecordError{Field: prefix + name, Detail: "empty (omit the field instead)"}
		}
		return s, nil
	}
	tm := func(m map[string]json.RawMessage, prefix, name string, required bool) (time.Time, error) {
		s, err := str(m, prefix, name, required)
		if err != nil || s == "" {
			return time.Time{}, err
		}
		t, err := parseTime(s)
		if err != nil {
			return time.Time{}, &RecordError{Field: prefix + name, Detail: "not an RFC 3339 time"}
		}
		return t, nil
	}
	if r.ID, err = str(m, "", "id", true); err != nil {
		return nil, err
	}
	v, ok := m["version"]
	if !ok {
		return nil, &RecordError{Field: "version", Detail: "missing"}
	}
	if r.Version, ok = jsonInt(v); !ok {
		return nil, &RecordError{Field: "version", Detail: "not an integer"}
	}
	c, ok := m["context"]
	if !ok {
		return nil, &RecordError{Field: "context", Detail: "missing"}
	}
	cm, err := decodeStringMap(c)
	if err != nil {
		return nil, &RecordError{Field: "context", Detail: err.Error(), Err: ErrBadContext}
	}
	if r.Context, err = ParseContext(cm); err != nil {
		return nil, &RecordError{Field: "context", Err: err}
	}
	com, err := str(m, "", "commitment", true)
	if err != nil {
		return nil, err
	}
	if r.Commitment, err = decodeB64(com); err != nil {
		return nil, &RecordError{Field: "commitment", Detail: "not standard base64"}
	}
	if r.SourceRegion, err = str(m, "", "source_region", true); err != nil {
		return nil, err
	}
	if r.SourceKeyARN, err = str(m, "", "source_key_arn", true); err != nil {
		return nil, err
	}
	if r.CreatedAt, err = tm(m, "", "created_at", true); err != nil {
		return nil, err
	}
	if r.DataURI, err = str(m, "", "data_uri", false); err != nil {
		return nil, err
	}
	rr, ok := m["regions"]
	if !ok {
		return nil, &RecordError{Field: "regions", Detail: "missing"}
	}
	regions, err := decodeObject(rr)
	if err != nil {
		return nil, &RecordError{Field: "regions", Detail: "not an object"}
	}
	if len(regions) > MaxRegions {
		return nil, &RecordError{Field: "regions", Detail: fmt.Sprintf("%d regions, at most %d allowed", len(regions), MaxRegions)}
	}
	r.Regions = make(map[string]*RegionWrap, len(regions))
	names := make([]string, 0, len(regions))
	for name := range regions {
		names = append(names, name)
	}
	sort.Strings(names) // deterministic first error
	for _, name := range names {
		if err := validateRegion(name, false); err != nil {
			return nil, &RecordError{Field: "regions", Detail: err.Error()}
		}
		p := "regions." + name + "."
		em, err := decodeObject(regions[name])
		if err != nil {
			return nil, &RecordError{Field: "regions." + name, Detail: "not an object"}
		}
		if err := onlyFields(em, "key_arn", "wrapped_dek", "wrapped_at", "verified_at", "last_error", "last_error_at"); err != nil {
			err.(*RecordError).Field = p + err.(*RecordError).Field
			return nil, err
		}
		w := &RegionWrap{}
		if w.KeyARN, err = str(em, p, "key_arn", false); err != nil {
			return nil, err
		}
		wrapped, err := str(em, p, "wrapped_dek", false)
		if err != nil {
			return nil, err
		}
		if w.Wrapped, err = decodeB64(wrapped); err != nil {
			return nil, &RecordError{Field: p + "wrapped_dek", Detail: "not standard base64"}
		}
		if len(w.Wrapped) == 0 {
			w.Wrapped = nil
		}
		if w.WrappedAt, err = tm(em, p, "wrapped_at", false); err != nil {
			return nil, err
		}
		if w.VerifiedAt, err = tm(em, p, "verified_at", false); err != nil {
			return nil, err
		}
		if w.LastError, err = str(em, p, "last_error", false); err != nil {
			return nil, err
		}
		if w.LastErrorAt, err = tm(em, p, "last_error_at", false); err != nil {
			return nil, err
		}
		r.Regions[name] = w
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r, nil
}

func onlyFields(m map[string]json.RawMessage, names ...string) error {
	for k := range m {
		found := false
		for _, n := range names {
			if k == n {
				found = true
				break
			}
		}
		if !found {
			return &RecordError{Field: printableKey(k), Detail: "unknown field"}
		}
	}
	return nil
}
