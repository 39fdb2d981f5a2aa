package envelope

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// Strict JSON helpers shared by the record and event codecs. encoding/json alone is too lenient
// for input that crosses a trust boundary: it keeps the last of duplicate keys, matches field
// names case-insensitively and replaces invalid UTF-8 silently. These helpers reject all three.

const maxJSONDepth = 16

// checkJSON verifies that data is one valid JSON value in valid UTF-8, with no duplicate
// object keys at any depth and bounded nesting.
func checkJSON(data []byte) (dupKey string, err error) {
	if !utf8.Valid(data) {
		return "", errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		obj       bool
		expectKey bool
		keys      map[string]struct{}
	}
	var stack []*frame
	valueDone := func() {
		if len(stack) > 0 && stack[len(stack)-1].obj {
			stack[len(stack)-1].expectKey = true
		}
	}
	seen := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if !seen || len(stack) != 0 {
				return "", errors.New("unexpected end of input")
			}
			return "", nil
		}
		if err != nil {
			return "", err
		}
		if seen && len(stack) == 0 {
			return "", errors.New("data after the JSON value")
		}
		top := (*frame)(nil)
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.obj && top.expectKey {
			k, ok := tok.(string)
			if !ok {
				if d, ok := tok.(json.Delim); ok && d == '}' {
					stack = stack[:len(stack)-1]
					valueDone()
					seen = true
					continue
				}
				return "", errors.New("object key is not a string")
			}
			if _, dup := top.keys[k]; dup {
				return k, fmt.Errorf("duplicate key %q", k)
			}
			top.keys[k] = struct{}{}
			top.expectKey = false
			continue
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if len(stack) >= maxJSONDepth {
					return "", fmt.Errorf("nesting deeper than %d", maxJSONDepth)
				}
				stack = append(stack, &frame{obj: t == '{', expectKey: t == '{', keys: map[string]struct{}{}})
			case '}', ']':
				stack = stack[:len(stack)-1]
				valueDone()
			}
		default:
			valueDone()
		}
		seen = true
	}
}

// decodeObject splits a JSON object into its members by exact key.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}

// decodeStringMap decodes a JSON object whose values are all strings.
func decodeStringMap(data []byte) (map[string]string, error) {
	if dup, err := checkJSON(data); err != nil {
		if dup != "" {
			return nil, fmt.Errorf("duplicate key %q", dup)
		}
		return nil, err
	}
	raw, err := decodeObject(data)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("value of %q is not a string", k)
		}
		m[k] = s
	}
	return m, nil
}

func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

func jsonInt(raw json.RawMessage) (int64, bool) {
	var n int64
	if len(raw) == 0 || raw[0] == '"' {
		return 0, false
	}
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, false
	}
	return n, true
}

// b64 is standard base64 with padding, strict so that every byte string has one encoding.
var b64 = base64.StdEncoding.Strict()

func decodeB64(s string) ([]byte, error) { return b64.DecodeString(s) }

func encodeB64(b []byte) string { return b64.EncodeToString(b) }

// Times are RFC 3339 with nanoseconds in UTC on output; any RFC 3339 offset is accepted.
func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	if t.Year() < 1970 || t.Year() > 9999 {
		return time.Time{}, fmt.Errorf("year %d out of range", t.Year())
	}
	return t.UTC(), nil
}
