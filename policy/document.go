// Package policy holds the rules that say who may do what with envdr's keys and records.
//
// It has two roles in the architecture:
//   - the replication policy: which regions must hold a (verified) wrap of a data key before an
//     event is acknowledged (required regions, quorum, verification mode);
//   - the AWS access policies: Render generates, from the envdr config, the KMS key policy of
//     every region's key and least-privilege IAM policies for the three envdr roles (daemon,
//     producer, operator); Lint reads key and IAM policies and reports the setups that make
//     envelope encryption fail in practice (a wildcard principal, no encryption-context
//     condition, key deletion open to non-admins, replicas whose policy drifted). `envdr policy`
//     and `envdr doctor` use both; terraform/modules/iam builds the same statements and
//     `make validate` checks they are equal.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// Version is the IAM policy language version every generated document uses.
const Version = "2012-10-17"

// ContextKey is the encryption-context key envdr binds on every KMS call (the envelope ID).
const ContextKey = "envdr:id"

// Document is an IAM identity policy or a KMS key policy.
type Document struct {
	Version   string      `json:"Version"`
	ID        string      `json:"Id,omitempty"`
	Statement []Statement `json:"Statement"`
}

// Statement is one policy statement. Action, Resource and the principal lists always marshal as
// arrays so that documents compare byte for byte after a round trip.
type Statement struct {
	Sid          string     `json:"Sid,omitempty"`
	Effect       string     `json:"Effect"`
	Principal    *Principal `json:"Principal,omitempty"`
	NotPrincipal *Principal `json:"NotPrincipal,omitempty"`
	Action       Strings    `json:"Action,omitempty"`
	NotAction    Strings    `json:"NotAction,omitempty"`
	Resource     Strings    `json:"Resource,omitempty"`
	NotResource  Strings    `json:"NotResource,omitempty"`
	Condition    Conditions `json:"Condition,omitempty"`
}

// Conditions maps an operator (StringEquals, ForAnyValue:StringEquals, ...) to condition keys
// and their values.
type Conditions map[string]map[string]Strings

// Strings is a policy value that AWS accepts as one string or a list of strings.
type Strings []string

// UnmarshalJSON accepts "a" and ["a", "b"]; numbers and booleans (legal in conditions) are kept
// as their JSON text.
func (s *Strings) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return err
		}
		out := make(Strings, 0, len(raw))
		for _, r := range raw {
			v, err := scalar(r)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		*s = out
		return nil
	}
	v, err := scalar(b)
	if err != nil {
		return err
	}
	*s = Strings{v}
	return nil
}

func scalar(b json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return "", err
	}
	switch t := v.(type) {
	case string:
		return t, nil
	case float64, bool:
		return string(bytes.TrimSpace(b)), nil
	}
	return "", fmt.Errorf("want a string or a list of strings, got %s", b)
}

// Principal is a statement's principal: "*" or a map such as {"AWS": [...], "Service": [...]}.
type Principal struct {
	// Any is true for the bare "*" form.
	Any bool
	// ByType maps AWS, Service, Federated and CanonicalUser to their values.
	ByType map[string]Strings
}

// AWS returns a principal of IAM ARNs.
func AWS(arns ...string) *Principal {
	return &Principal{ByType: map[string]Strings{"AWS": arns}}
}

// MarshalJSON writes "*" or the map form.
func (p Principal) MarshalJSON() ([]byte, error) {
	if p.Any {
		return []byte(`"*"`), nil
	}
	return json.Marshal(p.ByType)
}

// UnmarshalJSON reads "*" or the map form.
func (p *Principal) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != "*" {
			return fmt.Errorf("principal %q: want \"*\" or an object such as {\"AWS\": ...}", s)
		}
		p.Any = true
		return nil
	}
	return json.Unmarshal(b, &p.ByType)
}

// values lists every principal value (AWS ARNs, service names, ...), "*" for the bare form.
func (p *Principal) values() []string {
	if p == nil {
		return nil
	}
	if p.Any {
		return []string{"*"}
	}
	var out []string
	keys := make([]string, 0, len(p.ByType))
	for k := range p.ByType {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, p.ByType[k]...)
	}
	return out
}

// Parse decodes a policy document. Unknown top-level or statement fields are errors, so a typo
// such as "Condtion" cannot silently drop a restriction.
func Parse(b []byte) (*Document, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d Document
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("policy document: %w", err)
	}
	if dec.More() {
		return nil, errors.New("policy document: trailing data after the JSON object")
	}
	if len(d.Statement) == 0 {
		return nil, errors.New("policy document: no Statement")
	}
	for i, s := range d.Statement {
		if s.Effect != "Allow" && s.Effect != "Deny" {
			return nil, fmt.Errorf("policy document: statement %d: Effect %q, want Allow or Deny", i, s.Effect)
		}
	}
	return &d, nil
}

// UnmarshalJSON accepts Statement as one object or a list, as AWS does.
func (d *Document) UnmarshalJSON(b []byte) error {
	var raw struct {
		Version   string          `json:"Version"`
		ID        string          `json:"Id"`
		Statement json.RawMessage `json:"Statement"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	d.Version, d.ID = raw.Version, raw.ID
	st := bytes.TrimSpace(raw.Statement)
	if len(st) == 0 {
		return nil
	}
	if st[0] != '[' {
		st = append(append([]byte{'['}, st...), ']')
	}
	sdec := json.NewDecoder(bytes.NewReader(st))
	sdec.DisallowUnknownFields()
	return sdec.Decode(&d.Statement)
}

// JSON renders the document with two-space indentation and a final newline.
func (d *Document) JSON() []byte {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		// Only strings, maps and slices: marshalling cannot fail.
		panic(err)
	}
	return append(b, '\n')
}

// Canonical returns the document decoded and re-encoded, so that two documents that differ only
// in JSON layout, key order or "a" versus ["a"] compare equal.
func Canonical(b []byte) ([]byte, error) {
	d, err := Parse(b)
	if err != nil {
		return nil, err
	}
	return d.JSON(), nil
}
