package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is every problem found in a config, each naming the field and the fix, without Go type
// names. Error() puts one problem on each line; the CLI prints each as its own error line.
type Error struct {
	// File is the config file's path; empty when the config was parsed from bytes.
	File string
	// Problems are the single-line messages, e.g. `line 7: worker.grace: "30" is not a duration; use e.g. 30s or 2m`.
	Problems []string
}

func (e *Error) Error() string {
	prefix := "config: "
	if e.File != "" {
		prefix = "config " + e.File + ": "
	}
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = prefix + p
	}
	return strings.Join(lines, "\n")
}

// problems lists the messages of err (one per joined error, one per line).
func problems(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, c := range j.Unwrap() {
				walk(c)
			}
			return
		}
		for _, l := range strings.Split(e.Error(), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
	}
	walk(err)
	return out
}

var (
	reCannot  = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")
	reUnknown = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)$`)
)

// decodeError turns a YAML decode error into Problems naming the field (from the document's
// node tree) and what the field takes, instead of yaml's Go type names.
func decodeError(doc *yaml.Node, err error) *Error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		// A syntax error: yaml's message already gives the line.
		return &Error{Problems: []string{"not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	paths := fieldPaths(doc)
	e := &Error{}
	for _, msg := range te.Errors {
		if m := reCannot.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			field := paths.at(line, m[3], false)
			got := "a " + yamlKind(m[2])
			if m[3] != "" {
				got = strconv.Quote(m[3])
			}
			e.Problems = append(e.Problems, fmt.Sprintf("line %d: %s: %s is not %s", line, field, got, goTypeWords(m[4])))
			continue
		}
		if m := reUnknown.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			field := paths.at(line, m[2], true)
			p := fmt.Sprintf("line %d: %s: unknown field", line, field)
			if known := knownFields[m[3]]; len(known) > 0 {
				p += "; the fields here are " + strings.Join(known, ", ")
			}
			e.Problems = append(e.Problems, p)
			continue
		}
		e.Problems = append(e.Problems, msg)
	}
	return e
}

// yamlKind names a YAML tag (!!str, !!seq...) in words.
func yamlKind(tag string) string {
	switch tag {
	case "seq":
		return "list"
	case "map":
		return "mapping"
	case "str":
		return "string"
	case "int":
		return "whole number"
	case "float":
		return "number"
	case "bool":
		return "true/false value"
	}
	return tag
}

// goTypeWords says what a field of the Go type yaml names takes.
func goTypeWords(typ string) string {
	switch {
	case typ == "time.Duration":
		return "a duration; use a number with a unit, e.g. 30s, 2m or 1h30m"
	case typ == "string":
		return "text; write a single value (quote it if needed)"
	case typ == "bool":
		return "true or false"
	case strings.HasPrefix(typ, "int") || strings.HasPrefix(typ, "uint"):
		return "a whole number, e.g. 16"
	case strings.HasPrefix(typ, "float"):
		return "a number, e.g. 200 or 0.5"
	case strings.HasPrefix(typ, "[]"):
		return "a list; write [a, b] or one \"- item\" per line"
	case strings.HasPrefix(typ, "map[") || strings.HasPrefix(typ, "config.") || strings.HasPrefix(typ, "*config."):
		return "a mapping of fields; write \"key: value\" lines indented below it"
	}
	return "the right kind of value"
}

// knownFields maps a config type's Go name (as yaml reports it) to its YAML field names.
var knownFields = func() map[string][]string {
	out := map[string][]string{}
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t == reflect.TypeOf(time.Time{}) {
			return
		}
		name := t.String()
		if _, done := out[name]; done {
			return
		}
		var fields []string
		out[name] = nil
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields = append(fields, tag)
			add(f.Type)
		}
		sort.Strings(fields)
		out[name] = fields
	}
	add(reflect.TypeOf(Config{}))
	return out
}()

// nodePaths knows the field path of the YAML nodes on each line.
type nodePaths []nodePath

type nodePath struct {
	line  int
	value string
	key   bool // a mapping key (unknown-field errors point at keys)
	path  string
}

// fieldPaths walks a decoded document and records each node's field path (regions[1].kms_rate).
func fieldPaths(doc *yaml.Node) nodePaths {
	var out nodePaths
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				out = append(out, nodePath{line: k.Line, value: k.Value, key: true, path: p})
				walk(v, p)
			}
		case yaml.SequenceNode:
			out = append(out, nodePath{line: n.Line, path: path})
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		default:
			out = append(out, nodePath{line: n.Line, value: n.Value, path: path})
		}
	}
	if doc != nil {
		walk(doc, "")
	}
	return out
}

// at returns the path of the node on line with this value (a key, for unknown fields), or of
// the first such node on the line, or "the top level".
func (ps nodePaths) at(line int, value string, key bool) string {
	first := ""
	for _, p := range ps {
		if p.line != line || p.key != key {
			continue
		}
		if p.value == value && p.path != "" {
			return p.path
		}
		if first == "" {
			first = p.path
		}
	}
	if first == "" {
		return "(top level)"
	}
	return first
}
