package recovery

import (
	"fmt"
	"html"
	htmltemplate "html/template"
	"math"
	"strconv"
	"strings"
)

// The report pages draw their charts as inline SVG built here: no script, no font or image from
// elsewhere, so a page still reads the same when printed or opened offline years later. No
// maintained Go SVG library is on the module proxy (github.com/ajstarks/svgo last changed in
// 2021 and does not escape text), and the few shapes needed fit in a page of code. Every text
// and attribute value is escaped here; the templates insert the result as trusted HTML.

// Chart colours, named for what they mean.
const (
	colOK      = "#1e8e3e"
	colBad     = "#c5221f"
	colWarn    = "#e37400"
	colBlue    = "#1a73e8"
	colMuted   = "#80868b"
	colGrid    = "#e3e6ea"
	colInk     = "#1f2328"
	colLostBg  = "#fce8e6"
	colPurple  = "#8430ce"
	chartWidth = 1000.0
)

// svgDoc accumulates one <svg> element.
type svgDoc struct {
	b    strings.Builder
	w, h float64
}

func newSVG(w, h float64, label string) *svgDoc {
	s := &svgDoc{w: w, h: h}
	fmt.Fprintf(&s.b, `<svg class="chart" viewBox="0 0 %s %s" width="100%%" role="img" aria-label="%s" font-family="sans-serif" font-size="12">`,
		num(w), num(h), attr(label))
	fmt.Fprintf(&s.b, `<title>%s</title>`, html.EscapeString(label))
	return s
}

// num prints a coordinate compactly.
func num(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "0"
	}
	return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64)
}

func attr(s string) string { return html.EscapeString(s) }

func (s *svgDoc) rect(x, y, w, h float64, fill, tip string) {
	if w < 0 {
		x, w = x+w, -w
	}
	fmt.Fprintf(&s.b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s">`, num(x), num(y), num(w), num(h), attr(fill))
	if tip != "" {
		fmt.Fprintf(&s.b, `<title>%s</title>`, html.EscapeString(tip))
	}
	s.b.WriteString(`</rect>`)
}

func (s *svgDoc) line(x1, y1, x2, y2 float64, stroke string, width float64, dash string) {
	fmt.Fprintf(&s.b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="%s"`, num(x1), num(y1), num(x2), num(y2), attr(stroke), num(width))
	if dash != "" {
		fmt.Fprintf(&s.b, ` stroke-dasharray="%s"`, attr(dash))
	}
	s.b.WriteString(`/>`)
}

// text writes a label; anchor is start, middle or end.
func (s *svgDoc) text(x, y float64, anchor, fill string, bold bool, t string) {
	weight := ""
	if bold {
		weight = ` font-weight="bold"`
	}
	fmt.Fprintf(&s.b, `<text x="%s" y="%s" text-anchor="%s" fill="%s"%s>%s</text>`, num(x), num(y), attr(anchor), attr(fill), weight, html.EscapeString(t))
}

func (s *svgDoc) circle(cx, cy, r float64, fill, tip string) {
	fmt.Fprintf(&s.b, `<circle cx="%s" cy="%s" r="%s" fill="%s" fill-opacity="0.8">`, num(cx), num(cy), num(r), attr(fill))
	if tip != "" {
		fmt.Fprintf(&s.b, `<title>%s</title>`, html.EscapeString(tip))
	}
	s.b.WriteString(`</circle>`)
}

// polyline draws a step-free line through the points.
func (s *svgDoc) polyline(xs, ys []float64, stroke string, width float64) {
	if len(xs) == 0 {
		return
	}
	var p strings.Builder
	for i := range xs {
		if i > 0 {
			p.WriteByte(' ')
		}
		p.WriteString(num(xs[i]) + "," + num(ys[i]))
	}
	fmt.Fprintf(&s.b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="%s" stroke-linejoin="round"/>`, p.String(), attr(stroke), num(width))
}

// legend draws coloured swatches with labels from (x, y), left to right.
func (s *svgDoc) legend(x, y float64, items ...[2]string) {
	for _, it := range items {
		s.rect(x, y-9, 12, 10, it[0], "")
		s.text(x+16, y, "start", colInk, false, it[1])
		x += 24 + 6.6*float64(len(it[1]))
	}
}

func (s *svgDoc) html() htmltemplate.HTML {
	return htmltemplate.HTML(s.b.String() + `</svg>`) //nolint:gosec // every value above is escaped
}

// scale maps a domain [d0, d1] onto a range [r0, r1].
type scale struct{ d0, d1, r0, r1 float64 }

func (c scale) at(v float64) float64 {
	if c.d1 == c.d0 {
		return c.r0
	}
	return c.r0 + (v-c.d0)/(c.d1-c.d0)*(c.r1-c.r0)
}

// niceTicks returns about n round tick values covering [0, max].
func niceTicks(max float64, n int) []float64 {
	if max <= 0 || math.IsNaN(max) || math.IsInf(max, 0) {
		return []float64{0}
	}
	raw := max / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var ticks []float64
	for v := 0.0; v <= max+step/1e6; v += step {
		ticks = append(ticks, v)
	}
	return ticks
}

// tickTop returns the last tick niceTicks would give for max: the axis end.
func tickTop(max float64, n int) float64 {
	t := niceTicks(max, n)
	if top := t[len(t)-1]; top >= max {
		return top
	}
	return t[len(t)-1] + (t[1] - t[0])
}

// fmtSecs prints an axis or value label in seconds.
func fmtSecs(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 1:
		return strconv.FormatFloat(v, 'f', -1, 64) + " s"
	case v < 120:
		return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64) + " s"
	default:
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64) + " s"
	}
}

// plotArea is a chart's frame: its scales and the drawing of the axes.
type plotArea struct {
	left, top, right, bottom float64
	x, y                     scale
	// labelY, when set, places the markers' labels (by row) instead of inside the plot's top.
	labelY func(row int) float64
}

func newPlot(s *svgDoc, left, top, right, bottom, xmax, ymax float64) *plotArea {
	xmax = tickTop(xmax, 10)
	ymax = tickTop(ymax, 5)
	return &plotArea{left: left, top: top, right: right, bottom: bottom,
		x: scale{0, xmax, left, s.w - right}, y: scale{0, ymax, s.h - bottom, top}}
}

// axes draws the grid, the ticks and the axis titles.
func (p *plotArea) axes(s *svgDoc, xTitle, yTitle string, yLabel func(float64) string) {
	for _, v := range niceTicks(p.y.d1, 5) {
		if yLabel == nil {
			break // lanes, not values: no grid
		}
		y := p.y.at(v)
		s.line(p.left, y, s.w-p.right, y, colGrid, 1, "")
		s.text(p.left-6, y+4, "end", colMuted, false, yLabel(v))
	}
	for _, v := range niceTicks(p.x.d1, 10) {
		x := p.x.at(v)
		s.line(x, s.h-p.bottom, x, s.h-p.bottom+4, colMuted, 1, "")
		s.text(x, s.h-p.bottom+17, "middle", colMuted, false, fmtSecs(v))
	}
	s.line(p.left, s.h-p.bottom, s.w-p.right, s.h-p.bottom, colMuted, 1, "")
	s.line(p.left, p.top, p.left, s.h-p.bottom, colMuted, 1, "")
	s.text((p.left+s.w-p.right)/2, s.h-p.bottom+34, "middle", colInk, false, xTitle)
	fmt.Fprintf(&s.b, `<text transform="translate(14 %s) rotate(-90)" text-anchor="middle" fill="%s">%s</text>`,
		num((p.top+s.h-p.bottom)/2), colInk, html.EscapeString(yTitle))
}

// band shades [x0, x1] of the plot (a loss window) with a label at its top.
func (p *plotArea) band(s *svgDoc, x0, x1 float64, fill, label string) {
	a, b := p.x.at(x0), p.x.at(x1)
	s.rect(a, p.top, b-a, s.h-p.bottom-p.top, fill, label)
	s.text(a+4, p.top+13, "start", colBad, false, label)
}

// marker draws a labelled vertical line at x.
func (p *plotArea) marker(s *svgDoc, x float64, stroke, label string, row int) {
	xx := p.x.at(x)
	s.line(xx, p.top, xx, s.h-p.bottom, stroke, 1.5, "5 3")
	anchor := "start"
	dx := 4.0
	if xx > s.w-p.right-160 {
		anchor, dx = "end", -4
	}
	y := p.top + 28 + 14*float64(row)
	if p.labelY != nil {
		y = p.labelY(row)
	}
	s.text(xx+dx, y, anchor, stroke, true, label)
}
