package recovery_test

import (
	"encoding/xml"
	"errors"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/recovery"
)

// htmlVoid are the HTML elements that take no end tag.
var htmlVoid = []string{"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

// requireReportPage checks a report page is well-formed and self-contained: every element
// opened is closed in order (void elements aside), each inline <svg> is well-formed XML, and
// nothing is loaded from elsewhere (no script, stylesheet link, frame or image, no http(s) URL in
// an attribute or in the CSS). It returns the number of charts.
func requireReportPage(t *testing.T, page string) int {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(page))
	d.Strict = false // HTML: attributes without values, the doctype
	d.Entity = xml.HTMLEntity
	var stack []string
	for {
		tok, err := d.RawToken()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		switch el := tok.(type) {
		case xml.StartElement:
			name := strings.ToLower(el.Name.Local)
			require.NotContains(t, []string{"script", "link", "iframe", "img", "object", "embed", "frame"}, name, "a page must load nothing")
			for _, a := range el.Attr {
				v := strings.ToLower(strings.TrimSpace(a.Value))
				require.Falsef(t, strings.HasPrefix(v, "http:") || strings.HasPrefix(v, "https:") || strings.HasPrefix(v, "//"),
					"<%s %s=%q>: a URL to load", name, a.Name.Local, a.Value)
				require.NotEqual(t, "src", strings.ToLower(a.Name.Local), "<%s src>", name)
			}
			if !slices.Contains(htmlVoid, name) {
				stack = append(stack, name)
			}
		case xml.EndElement:
			name := strings.ToLower(el.Name.Local)
			require.NotEmpty(t, stack, "</%s> closes nothing", name)
			require.Equal(t, stack[len(stack)-1], name, "</%s> closes <%s>", name, stack[len(stack)-1])
			stack = stack[:len(stack)-1]
		}
	}
	require.Empty(t, stack, "elements left open")
	lower := strings.ToLower(page)
	require.NotContains(t, lower, "url(", "CSS must load nothing")
	require.NotContains(t, lower, "@import")
	svgs := regexp.MustCompile(`(?s)<svg .*?</svg>`).FindAllString(page, -1)
	require.Equal(t, strings.Count(page, "<svg "), len(svgs))
	for _, svg := range svgs {
		sd := xml.NewDecoder(strings.NewReader(svg))
		sd.Strict = true
		for {
			_, err := sd.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, "inline SVG is not well-formed XML:\n%s", svg[:min(len(svg), 400)])
		}
	}
	return len(svgs)
}

// The game day page draws its four charts from the report alone, well-formed and
// self-contained, also for a report that measured nothing and one whose region never
// returned; a hostile string in the report is escaped everywhere, the charts included.
func TestGamedayPageCharts(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	full := &recovery.GamedayReport{Kind: recovery.GamedayReportKind, SchemaVersion: recovery.ReportSchemaVersion,
		Lost: `us-east-1"><script>alert(1)</script>`, Surviving: []string{"eu-west-1", "ap-southeast-2"},
		StartedAt: t0, LostAt: t0.Add(10 * time.Second), RestoredAt: t0.Add(40 * time.Second), EndedAt: t0.Add(55 * time.Second),
		Controlled: true, Sealed: 3, RTOSeconds: 1.2, CatchUpSeconds: 6.5,
		Matrix: []recovery.GamedayRegion{{Region: "us-east-1", Lost: true, Opened: 3, Of: 3}, {Region: "eu-west-1", Opened: 3, Of: 3}},
		Timeline: []recovery.GamedaySample{{AtSeconds: 1, Sealed: 1, Unprotected: 1}, {AtSeconds: 20, Sealed: 2, Unprotected: 1, UnprotectedSurviving: 1},
			{AtSeconds: 50, Sealed: 3}},
		Protection: recovery.GamedayProtection{
			RequiredRegions: recovery.Percentiles{Envelopes: 3, P50: 0.8, P99: 30, P999: 30, P9999: 30, Max: 30},
			Histogram:       []recovery.HistogramBucket{{LE: 0.25}, {LE: 1, Required: 1, Surviving: 3}, {LE: 30, Required: 2}, {LE: 0}},
			BinSeconds:      1, BySealTime: []recovery.GamedaySeal{{AtSeconds: 1, Sealed: 1, MaxRequired: 0.8, MaxSurviving: 0.7}, {AtSeconds: 20, Sealed: 1, MaxRequired: -1, MaxSurviving: 0.9}},
		}}
	empty := &recovery.GamedayReport{Kind: recovery.GamedayReportKind, Lost: "eu-west-1", StartedAt: t0, LostAt: t0, EndedAt: t0, RTOSeconds: -1, CatchUpSeconds: -1}
	for name, rep := range map[string]*recovery.GamedayReport{"full": full, "empty": empty} {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			require.NoError(t, rep.WriteHTML(&b))
			require.Equal(t, 4, requireReportPage(t, b.String()))
			require.NotContains(t, b.String(), "<script>")
		})
	}
}

// The drill page's three charts are well-formed and self-contained.
func TestDrillPageCharts(t *testing.T) {
	rep := &recovery.DrillReport{Lost: "eu-west-1", Surviving: []string{"us-east-1"}, Records: 10, Recoverable: 10, RTOSeconds: 0.4, DurationSeconds: 0.6,
		Timings: recovery.Timings{ScanSeconds: 0.3, OpenSeconds: 0.1, RecordsPerSec: 33},
		Matrix: []recovery.MatrixRow{{RegionTally: recovery.RegionTally{Region: "us-east-1", OK: 8, Skipped: 1, Failed: 1, Calls: 10, MeanMillis: 2.5, MaxMillis: 9}},
			{RegionTally: recovery.RegionTally{Region: "eu-west-1"}, Lost: true, WrapsHeld: 10}}}
	var b strings.Builder
	require.NoError(t, rep.WriteHTML(&b))
	require.Equal(t, 3, requireReportPage(t, b.String()))
}
