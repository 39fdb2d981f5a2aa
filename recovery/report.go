package recovery

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"os"
	"path/filepath"
	"strings"
	texttemplate "text/template"
	"time"
)

//go:embed templates/drill.md.tmpl
var drillMarkdown string

//go:embed templates/drill.html.tmpl
var drillHTML string

var funcs = map[string]any{
	"pct": func(f float64) string { return fmt.Sprintf("%.2f%%", f) },
	"secs": func(f float64) string {
		return (time.Duration(f * float64(time.Second))).Round(time.Millisecond).String()
	},
	"rate": func(f float64) string { return fmt.Sprintf("%.0f", f) },
	"num":  func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"maxrpo": func(p *float64) string {
		if p == nil {
			return "none"
		}
		return fmt.Sprintf("%.0f s", *p)
	},
	"ms":    func(f float64) string { return fmt.Sprintf("%.1f ms", f) },
	"when":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"join":  strings.Join,
	"mdesc": mdEscape,
	"queued": func(p *int64) string {
		if p == nil {
			return "unknown"
		}
		return fmt.Sprint(*p)
	},
	"verdict": func(pass bool) string {
		if pass {
			return "PASSED"
		}
		return "FAILED"
	},
	"charts": drillCharts,
	"files": func(fs []FileResult) (ok int) {
		for _, f := range fs {
			if f.OK {
				ok++
			}
		}
		return ok
	},
}

var (
	mdTmpl   = texttemplate.Must(texttemplate.New("md").Funcs(funcs).Parse(drillMarkdown))
	htmlTmpl = htmltemplate.Must(htmltemplate.New("html").Funcs(funcs).Parse(drillHTML))
)

// mdEscape keeps a value from breaking a Markdown table row.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "\r", " ").Replace(s)
}

// WriteMarkdown writes the drill report as Markdown.
func (r *DrillReport) WriteMarkdown(w io.Writer) error { return mdTmpl.Execute(w, r) }

// WriteHTML writes the drill report as one self-contained HTML page (no external assets), fit to
// hand to an auditor or print.
func (r *DrillReport) WriteHTML(w io.Writer) error { return htmlTmpl.Execute(w, r) }

// WriteJSON writes the drill report as indented JSON carrying its own SHA-256 digest (see
// JSON); it sets r.SHA256.
func (r *DrillReport) WriteJSON(w io.Writer) error {
	b, err := r.JSON()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// digestKey precedes the digest in the JSON: the last member of the report object.
var digestKey = []byte(`"sha256": "`)

// JSON returns the report as indented JSON whose last member, "sha256", is the hex SHA-256 of
// those very bytes with the digest left empty (`"sha256": ""`), and sets r.SHA256. Any edited
// byte, the digest's included, makes VerifyDrillReport fail.
func (r *DrillReport) JSON() ([]byte, error) {
	r.SHA256 = ""
	return digestedJSON(r, &r.SHA256)
}

// digestedJSON encodes v (a report whose last JSON member is "sha256", held in *digest and empty
// now) as indented JSON, then puts the hex SHA-256 of those bytes into that member and *digest.
func digestedJSON(v any, digest *string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	i := bytes.LastIndex(b, append(append([]byte(nil), digestKey...), '"'))
	if i < 0 {
		return nil, errors.New("report: no sha256 member in the JSON")
	}
	sum := sha256.Sum256(b)
	*digest = hex.EncodeToString(sum[:])
	at := i + len(digestKey)
	out := make([]byte, 0, len(b)+len(*digest))
	out = append(append(append(out, b[:at]...), *digest...), b[at:]...)
	return out, nil
}

// ErrReportDigest: a report's JSON does not match the digest it carries.
var ErrReportDigest = errors.New("report digest mismatch")

// checkDigest checks a report's JSON against the digest its last "sha256" member carries and
// returns that digest.
func checkDigest(b []byte) (string, error) {
	i := bytes.LastIndex(b, digestKey)
	at := i + len(digestKey)
	if i < 0 || len(b) < at+sha256.Size*2+1 || b[at+sha256.Size*2] != '"' {
		return "", fmt.Errorf("%w: no \"sha256\" digest member (a report of envdr before schema %d, or not an envdr report)", ErrReportDigest, ReportSchemaVersion)
	}
	want := string(b[at : at+sha256.Size*2])
	body := append(append([]byte(nil), b[:at]...), b[at+sha256.Size*2:]...)
	sum := sha256.Sum256(body)
	if got := hex.EncodeToString(sum[:]); got != want {
		return "", fmt.Errorf("%w: the file hashes to %s but carries %s: it was changed after envdr wrote it", ErrReportDigest, got, want)
	}
	return want, nil
}

// decodeStrict decodes a report's JSON, refusing unknown members.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// VerifyDrillReport checks a drill report's JSON (as WriteJSON wrote it) against the SHA-256 digest
// it carries and returns the report. A report edited in any byte, or without a digest, fails.
func VerifyDrillReport(b []byte) (*DrillReport, error) {
	want, err := checkDigest(b)
	if err != nil {
		return nil, err
	}
	var r DrillReport
	if err := decodeStrict(b, &r); err != nil {
		return nil, fmt.Errorf("drill report: %w", err)
	}
	if r.SHA256 != want {
		return nil, fmt.Errorf("%w: the digest member is not the report's own", ErrReportDigest)
	}
	if r.SchemaVersion != ReportSchemaVersion {
		return nil, fmt.Errorf("drill report: schema_version %d; this envdr reads %d", r.SchemaVersion, ReportSchemaVersion)
	}
	return &r, nil
}

// ReportKind tells a report file's kind from its JSON: "verify" for verify reports (their
// "kind" member), else "drill".
func ReportKind(b []byte) string {
	var k struct {
		Kind string `json:"kind"`
	}
	_ = json.Unmarshal(b, &k)
	if k.Kind == "" {
		return "drill"
	}
	return k.Kind
}

// VerifyVerifyReport checks a verify report's JSON (VerifyResult.JSON) against its digest and
// returns it.
func VerifyVerifyReport(b []byte) (*VerifyResult, error) {
	want, err := checkDigest(b)
	if err != nil {
		return nil, err
	}
	r := &VerifyResult{VerifyReport: &VerifyReport{}}
	if err := decodeStrict(b, r); err != nil {
		return nil, fmt.Errorf("verify report: %w", err)
	}
	if r.SHA256 != want || r.Kind != "verify" {
		return nil, fmt.Errorf("%w: the digest member is not the report's own", ErrReportDigest)
	}
	if r.SchemaVersion != ReportSchemaVersion {
		return nil, fmt.Errorf("verify report: schema_version %d; this envdr reads %d", r.SchemaVersion, ReportSchemaVersion)
	}
	return r, nil
}

// WriteVerifyReport writes a verify report's digested JSON (VerifyResult.JSON) to PATH.json
// (ReportPaths) and returns that path.
func WriteVerifyReport(path string, js []byte) (string, error) {
	_, _, p := ReportPaths(path)
	if dir := filepath.Dir(p); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("report: %w", err)
		}
	}
	if err := writeFile(p, func(w io.Writer) error { _, err := w.Write(js); return err }); err != nil {
		return "", fmt.Errorf("report %s: %w", p, err)
	}
	return p, nil
}

// ReportPaths returns the three files a --report PATH produces: PATH.md, PATH.html and
// PATH.json (a .md, .html or .json extension on PATH is dropped first).
func ReportPaths(path string) (md, html, js string) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".md", ".html", ".htm", ".json":
		path = strings.TrimSuffix(path, filepath.Ext(path))
	}
	return path + ".md", path + ".html", path + ".json"
}

// WriteFiles writes the report in all three formats next to path; see ReportPaths. The JSON
// goes first, so the Markdown and HTML show its digest.
func (r *DrillReport) WriteFiles(path string) ([]string, error) {
	return writeReportFiles(path, r.WriteMarkdown, r.WriteHTML, r.WriteJSON)
}

// writeReportFiles writes PATH.md, PATH.html and PATH.json with the three writers.
func writeReportFiles(path string, writeMD, writeHTML, writeJSON func(io.Writer) error) ([]string, error) {
	md, html, js := ReportPaths(path)
	if dir := filepath.Dir(md); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
	}
	for _, f := range []struct {
		path  string
		write func(io.Writer) error
	}{{js, writeJSON}, {md, writeMD}, {html, writeHTML}} { // JSON first: it sets the digest the others show
		if err := writeFile(f.path, f.write); err != nil {
			return nil, fmt.Errorf("report %s: %w", f.path, err)
		}
	}
	return []string{md, html, js}, nil
}

// writeFile writes through a temporary file renamed into place, so a reader never sees half a
// report.
func writeFile(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	if err := write(tmp); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
