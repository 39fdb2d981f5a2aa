package envelope

import (
	"encoding/json"
	"fmt"
	"time"
)

// Event limits.
const (
	EventVersion  = 1
	MaxEventSize  = 256 << 10 // SQS's message size limit
	MaxDataURILen = 2048
)

// Event is the replication event, the SQS message body that asks the replicator to wrap a new
// DEK in every region. Its canonical JSON encoding (EncodeEvent) is, in this order:
//
//	{"version":1,"id":…,"source_region":…,"key_arn":…,"wrapped_dek":"<base64>",
//	 "context":{…sorted…},"commitment":"<base64>","created_at":"<RFC 3339>","data_uri":…}
//
// data_uri is omitted when empty. See docs/FORMAT.md.
type Event struct {
	Version      int
	ID           string // record ID; equals Context's envdr:id
	SourceRegion string
	KeyARN       string
	WrappedDEK   []byte
	Context      Context
	Commitment   []byte
	CreatedAt    time.Time
	DataURI      string // optional: where the envelope's data lives
}

// NewEvent builds the event announcing a sealed envelope's DEK.
func NewEvent(hdr *Header, createdAt time.Time, dataURI string) (*Event, error) {
	e := &Event{
		Version:      EventVersion,
		ID:           hdr.RecordID(),
		SourceRegion: hdr.HomeRegion,
		KeyARN:       hdr.KeyARN,
		WrappedDEK:   hdr.WrappedDEK,
		Context:      hdr.Context,
		Commitment:   hdr.Commitment,
		CreatedAt:    createdAt.UTC(),
		DataURI:      dataURI,
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}

// Wrap is the source region's wrap carried by the event.
func (e *Event) Wrap() *Wrap {
	return &Wrap{Region: e.SourceRegion, KeyARN: e.KeyARN, Wrapped: e.WrappedDEK}
}

// Record returns a new record (version 0) holding the event's source wrap.
func (e *Event) Record() *Record {
	return &Record{
		ID:           e.ID,
		Context:      e.Context,
		Commitment:   append([]byte(nil), e.Commitment...),
		SourceRegion: e.SourceRegion,
		SourceKeyARN: e.KeyARN,
		CreatedAt:    e.CreatedAt,
		DataURI:      e.DataURI,
		Regions: map[string]*RegionWrap{e.SourceRegion: {
			KeyARN:    e.KeyARN,
			Wrapped:   append([]byte(nil), e.WrappedDEK...),
			WrappedAt: e.CreatedAt,
		}},
	}
}

// Validate checks every field; errors are *EventError.
func (e *Event) Validate() error {
	if e.Version != EventVersion {
		return &EventError{Code: ReasonUnknownVersion, Field: "version", Detail: fmt.Sprintf("version %d", e.Version), Err: ErrUnknownVersion}
	}
	if err := ValidateID(e.ID); err != nil {
		return &EventError{Code: ReasonBadField, Field: "id", Detail: err.Error()}
	}
	if err := validateRegion(e.SourceRegion, false); err != nil {
		return &EventError{Code: ReasonBadField, Field: "source_region", Detail: err.Error()}
	}
	if err := validateKeyARN(e.KeyARN, false); err != nil {
		return &EventError{Code: ReasonBadField, Field: "key_arn", Detail: err.Error()}
	}
	if len(e.WrappedDEK) == 0 || len(e.WrappedDEK) > MaxWrappedDEKLen {
		return &EventError{Code: ReasonBadField, Field: "wrapped_dek", Detail: fmt.Sprintf("%d bytes, want 1..%d", len(e.WrappedDEK), MaxWrappedDEKLen)}
	}
	if err := e.Context.validate(); err != nil {
		return &EventError{Code: ReasonBadContext, Field: "context", Err: err}
	}
	if e.Context.ID() != e.ID {
		return &EventError{Code: ReasonBadContext, Field: "context", Detail: KeyID + " differs from id", Err: ErrBadContext}
	}
	if len(e.Commitment) != CommitmentSize {
		return &EventError{Code: ReasonBadField, Field: "commitment", Detail: fmt.Sprintf("%d bytes, want %d", len(e.Commitment), CommitmentSize)}
	}
	if e.CreatedAt.IsZero() || e.CreatedAt.Year() < 1970 || e.CreatedAt.Year() > 9999 {
		return &EventError{Code: ReasonBadField, Field: "created_at", Detail: "missing or out of range"}
	}
	if err := validateDataURI(e.DataURI); err != nil {
		return &EventError{Code: ReasonBadField, Field: "data_uri", Detail: err.Error()}
	}
	return nil
}

func validateDataURI(s string) error {
	if len(s) > MaxDataURILen {
		return fmt.Errorf("%d bytes, at most %d allowed", len(s), MaxDataURILen)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return fmt.Errorf("contains a control or invalid character")
		}
	}
	return nil
}

// eventWire fixes the canonical field order.
type eventWire struct {
	Version      int             `json:"version"`
	ID           string          `json:"id"`
	SourceRegion string          `json:"source_region"`
	KeyARN       string          `json:"key_arn"`
	WrappedDEK   string          `json:"wrapped_dek"`
	Context      json.RawMessage `json:"context"`
	Commitment   string          `json:"commitment"`
	CreatedAt    string          `json:"created_at"`
	DataURI      string          `json:"data_uri,omitempty"`
}

// EncodeEvent returns the canonical JSON encoding of a valid event.
func EncodeEvent(e *Event) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	ctx, _ := e.Context.MarshalJSON()
	return json.Marshal(eventWire{
		Version:      e.Version,
		ID:           e.ID,
		SourceRegion: e.SourceRegion,
		KeyARN:       e.KeyARN,
		WrappedDEK:   encodeB64(e.WrappedDEK),
		Context:      ctx,
		Commitment:   encodeB64(e.Commitment),
		CreatedAt:    formatTime(e.CreatedAt),
		DataURI:      e.DataURI,
	})
}

// DecodeEvent parses an event strictly: one JSON object in valid UTF-8, at most MaxEventSize
// bytes, no duplicate or unknown fields, version 1, every required field present with the
// right type, strict base64, a valid context whose envdr:id equals id. Every error is an
// *EventError whose Reason() is one of the Reason* codes; it never panics.
func DecodeEvent(data []byte) (*Event, error) {
	if len(data) > MaxEventSize {
		return nil, &EventError{Code: ReasonOversize, Detail: fmt.Sprintf("%d bytes, at most %d allowed", len(data), MaxEventSize)}
	}
	if dup, err := checkJSON(data); err != nil {
		if dup != "" {
			return nil, &EventError{Code: ReasonDuplicateField, Field: dup, Detail: "appears more than once"}
		}
		return nil, &EventError{Code: ReasonBadJSON, Detail: err.Error()}
	}
	m, err := decodeObject(data)
	if err != nil {
		return nil, &EventError{Code: ReasonBadJSON, Detail: "not a JSON object"}
	}
	// The version decides which fields exist, so it is checked before anything else.
	rawVer, ok := m["version"]
	if !ok {
		return nil, &EventError{Code: ReasonMissingField, Field: "version"}
	}
	ver, ok := jsonInt(rawVer)
	if !ok {
		return nil, &EventError{Code: ReasonBadField, Field: "version", Detail: "not an integer"}
	}
	if ver != EventVersion {
		return nil, &EventError{Code: ReasonUnknownVersion, Field: "version", Detail: fmt.Sprintf("version %d", ver), Err: ErrUnknownVersion}
	}
	known := map[string]bool{"version": true, "id": true, "source_region": true, "key_arn": true,
		"wrapped_dek": true, "context": true, "commitment": true, "created_at": true, "data_uri": true}
	for k := range m {
		if !known[k] {
			return nil, &EventError{Code: ReasonUnknownField, Field: printableKey(k)}
		}
	}
	e := &Event{Version: EventVersion}
	str := func(name string, required bool) (string, error) {
		raw, ok := m[name]
		if !ok {
			if required {
				return "", &EventError{Code: ReasonMissingField, Field: name}
			}
			return "", nil
		}
		s, ok := jsonString(raw)
		if !ok {
			return "", &EventError{Code: ReasonBadField, Field: name, Detail: "not a string"}
		}
		return s, nil
	}
	// Fields in canonical order so the first problem reported is deterministic.
	if e.ID, err = str("id", true); err != nil {
		return nil, err
	}
	if e.SourceRegion, err = str("source_region", true); err != nil {
		return nil, err
	}
	if e.KeyARN, err = str("key_arn", true); err != nil {
		return nil, err
	}
	wrapped, err := str("wrapped_dek", true)
	if err != nil {
		return nil, err
	}
	if e.WrappedDEK, err = decodeB64(wrapped); err != nil {
		return nil, &EventError{Code: ReasonBadBase64, Field: "wrapped_dek"}
	}
	rawCtx, ok := m["context"]
	if !ok {
		return nil, &EventError{Code: ReasonMissingField, Field: "context"}
	}
	cm, err := decodeStringMap(rawCtx)
	if err != nil {
		return nil, &EventError{Code: ReasonBadContext, Field: "context", Detail: err.Error(), Err: ErrBadContext}
	}
	if e.Context, err = ParseContext(cm); err != nil {
		return nil, &EventError{Code: ReasonBadContext, Field: "context", Err: err}
	}
	com, err := str("commitment", true)
	if err != nil {
		return nil, err
	}
	if e.Commitment, err = decodeB64(com); err != nil {
		return nil, &EventError{Code: ReasonBadBase64, Field: "commitment"}
	}
	created, err := str("created_at", true)
	if err != nil {
		return nil, err
	}
	if e.CreatedAt, err = parseTime(created); err != nil {
		return nil, &EventError{Code: ReasonBadField, Field: "created_at", Detail: "not an RFC 3339 time"}
	}
	if e.DataURI, err = str("data_uri", false); err != nil {
		return nil, err
	}
	if _, ok := m["data_uri"]; ok && e.DataURI == "" {
		// Canonical form omits an empty data_uri; accepting "" would give two encodings.
		return nil, &EventError{Code: ReasonBadField, Field: "data_uri", Detail: "empty (omit the field instead)"}
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}
