package recovery

import (
	_ "embed"
	"encoding/json"
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
	"rate":  func(f float64) string { return fmt.Sprintf("%.0f", f) },
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

// WriteJSON writes the drill report as indented JSON.
func (r *DrillReport) WriteJSON(w io.Writer) error { return writeIndentedJSON(w, r) }

func writeIndentedJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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

// WriteFiles writes the report in all three formats next to path; see ReportPaths.
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
	}{{md, writeMD}, {html, writeHTML}, {js, writeJSON}} {
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
