package policy

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Load reads the policy documents in b, named name. It accepts the shapes users have at hand:
//   - a bare policy document ({"Version": ..., "Statement": ...});
//   - `aws kms get-key-policy` output ({"Policy": "<JSON string>", ...});
//   - `aws iam get-role-policy` output ({"PolicyDocument": <object or URL-encoded string>, ...});
//   - `envdr policy render` standard output (an object of file name to document), named
//     name#FILE.
func Load(name string, b []byte) ([]Named, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object: %w", name, err)
	}
	if _, ok := top["Statement"]; ok {
		d, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return []Named{{Name: name, Doc: d}}, nil
	}
	for _, field := range []string{"Policy", "PolicyDocument"} {
		raw, ok := top[field]
		if !ok {
			continue
		}
		inner := []byte(raw)
		var s string
		if json.Unmarshal(raw, &s) == nil {
			// IAM returns PolicyDocument URL-encoded; KMS returns Policy as plain JSON text.
			if u, err := url.QueryUnescape(s); err == nil && strings.HasPrefix(strings.TrimSpace(s), "%7B") {
				s = u
			}
			inner = []byte(s)
		}
		d, err := Parse(inner)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", name, field, err)
		}
		return []Named{{Name: name, Doc: d}}, nil
	}
	keys := slices.Sorted(maps.Keys(top))
	var out []Named
	for _, k := range keys {
		d, err := Parse(top[k])
		if err != nil {
			return nil, fmt.Errorf("%s#%s: %w", name, k, err)
		}
		out = append(out, Named{Name: name + "#" + k, Doc: d})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no policy documents", name)
	}
	return out, nil
}

// LoadPath reads a file, or every *.json file of a directory (as `envdr policy render --out`
// writes them).
func LoadPath(path string) ([]Named, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if st.IsDir() {
		files, err = filepath.Glob(filepath.Join(path, "*.json"))
		if err != nil {
			return nil, err
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("%s: no *.json files", path)
		}
	}
	var out []Named
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		ns, err := Load(f, b)
		if err != nil {
			return nil, err
		}
		out = append(out, ns...)
	}
	return out, nil
}
