package recovery

import (
	"fmt"
	htmltemplate "html/template"
	"math"
)

// GamedayCharts are the game day page's charts, each one inline <svg>.
type GamedayCharts struct {
	Timeline, Histogram, BySeal, CatchUp htmltemplate.HTML
}

// gamedayCharts draws the charts from the report alone, so the page shows what the JSON holds.
func gamedayCharts(r *GamedayReport) GamedayCharts {
	return GamedayCharts{Timeline: gamedayTimeline(r), Histogram: gamedayHistogram(r), BySeal: gamedayBySeal(r), CatchUp: gamedayCatchUp(r)}
}

// span is the game day's length in seconds.
func (r *GamedayReport) span() float64 { return math.Max(r.EndedAt.Sub(r.StartedAt).Seconds(), 1) }

// lossWindow is the loss in seconds from the start: [lost, restored] (restored: the end when the
// region was not restored).
func (r *GamedayReport) lossWindow() (float64, float64) {
	lost := r.LostAt.Sub(r.StartedAt).Seconds()
	end := r.span()
	if !r.RestoredAt.IsZero() {
		end = r.RestoredAt.Sub(r.StartedAt).Seconds()
	}
	return lost, end
}

// gamedayTimeline: one lane per region (up, or lost), the sealing rate, and the moments that
// make the figures: the loss, new envelopes protected again (RTO), the return, caught up.
func gamedayTimeline(r *GamedayReport) htmltemplate.HTML {
	lanes := len(r.Matrix) + 1
	s := newSVG(chartWidth, 140+float64(lanes)*34, "Timeline of the game day: regions up and lost, sealing, RTO and catch-up")
	p := newPlot(s, 130, 92, 20, 40, r.span(), 1)
	// The moments' labels sit above the lanes, one row each, under the RTO bracket.
	p.labelY = func(row int) float64 { return 48 + 14*float64(row) }
	lost, back := r.lossWindow()
	row := func(i int) float64 { return p.top + 8 + float64(i)*34 }
	for i, m := range r.Matrix {
		y := row(i)
		s.text(p.left-8, y+15, "end", colInk, m.Lost, m.Region)
		if !m.Lost {
			s.rect(p.x.at(0), y, p.x.at(r.span())-p.x.at(0), 22, colOK, m.Region+": up")
			continue
		}
		s.rect(p.x.at(0), y, p.x.at(lost)-p.x.at(0), 22, colOK, m.Region+": up")
		what := "lost"
		if !r.Controlled {
			what = "blocked by the operator (never contacted)"
		}
		s.rect(p.x.at(lost), y, p.x.at(back)-p.x.at(lost), 22, colBad, fmt.Sprintf("%s: %s for %.1f s", m.Region, what, back-lost))
		s.text(p.x.at(lost)+6, y+15, "start", "#fff", true, what)
		if !r.RestoredAt.IsZero() {
			s.rect(p.x.at(back), y, p.x.at(r.span())-p.x.at(back), 22, colOK, m.Region+": restored")
		}
	}
	// Sealing: envelopes sealed per second, from the timeline samples.
	y := row(len(r.Matrix))
	s.text(p.left-8, y+15, "end", colInk, false, "sealing")
	peak := 0.0
	type bar struct{ x0, x1, rate float64 }
	var bars []bar
	for i := 1; i < len(r.Timeline); i++ {
		a, b := r.Timeline[i-1], r.Timeline[i]
		if dt := b.AtSeconds - a.AtSeconds; dt > 0 && b.Sealed > a.Sealed {
			rate := float64(b.Sealed-a.Sealed) / dt
			bars = append(bars, bar{a.AtSeconds, b.AtSeconds, rate})
			peak = math.Max(peak, rate)
		}
	}
	for _, b := range bars {
		h := 22 * b.rate / peak
		s.rect(p.x.at(b.x0), y+22-h, math.Max(p.x.at(b.x1)-p.x.at(b.x0), 1), h, colBlue, fmt.Sprintf("%.0f envelopes/s", b.rate))
	}
	p.axes(s, "seconds since the game day started", "", nil)
	// The moments, and the RTO bracket above the lanes.
	p.marker(s, lost, colBad, "lost", 0)
	if r.RTOSeconds >= 0 {
		rx := lost + r.RTOSeconds
		y := 22.0
		s.line(p.x.at(lost), y, p.x.at(rx), y, colPurple, 3, "")
		s.line(p.x.at(rx), y-6, p.x.at(rx), y+6, colPurple, 2, "")
		s.line(p.x.at(lost), y-6, p.x.at(lost), y+6, colPurple, 2, "")
		label := fmt.Sprintf("RTO %.2f s: new envelopes open in every surviving region alone", r.RTOSeconds)
		if p.x.at(rx) < chartWidth-p.right-430 {
			s.text(p.x.at(rx)+6, y+4, "start", colPurple, true, label)
		} else {
			s.text(p.x.at(lost)-6, y+4, "end", colPurple, true, label) // no room after the bracket
		}
	} else {
		s.text(p.x.at(lost)+6, 26, "start", colBad, true, "RTO not reached: no envelope sealed during the loss was protected")
	}
	if !r.RestoredAt.IsZero() {
		p.marker(s, back, colOK, "restored", 1)
		if r.CatchUpSeconds >= 0 {
			p.marker(s, back+r.CatchUpSeconds, colBlue, fmt.Sprintf("caught up (+%.1f s)", r.CatchUpSeconds), 2)
		}
	}
	return s.html()
}

// gamedayHistogram: envelopes per protection-time bucket (the buckets of
// envdr_protection_seconds), required regions and surviving regions side by side, with the
// percentiles marked.
func gamedayHistogram(r *GamedayReport) htmltemplate.HTML {
	s := newSVG(chartWidth, 330, "Histogram of the per-envelope protection time with its percentiles")
	h := r.Protection.Histogram
	last := 0
	peak := 1
	for i, b := range h {
		if b.Required > 0 || b.Surviving > 0 {
			last = i
		}
		peak = max(peak, b.Required, b.Surviving)
	}
	if len(h) == 0 {
		s.text(chartWidth/2, 160, "middle", colMuted, false, "no envelope was measured")
		return s.html()
	}
	h = h[:last+1]
	left, top, bottom := 70.0, 40.0, 70.0
	width := chartWidth - left - 20
	bw := width / float64(len(h))
	y := scale{0, tickTop(float64(peak), 5), 330 - bottom, top}
	for _, v := range niceTicks(y.d1, 5) {
		s.line(left, y.at(v), chartWidth-20, y.at(v), colGrid, 1, "")
		s.text(left-6, y.at(v)+4, "end", colMuted, false, fmt.Sprintf("%.0f", v))
	}
	prev := 0.0
	for i, b := range h {
		x := left + float64(i)*bw
		label := "≤ " + fmtSecs(b.LE)
		rng := fmt.Sprintf("%s to %s", fmtSecs(prev), fmtSecs(b.LE))
		if b.LE == 0 {
			label, rng = "> "+fmtSecs(prev), "over "+fmtSecs(prev)
		}
		s.rect(x+bw*0.12, y.at(float64(b.Required)), bw*0.36, y.at(0)-y.at(float64(b.Required)), colBad,
			fmt.Sprintf("%d envelopes protected in every required region in %s", b.Required, rng))
		s.rect(x+bw*0.52, y.at(float64(b.Surviving)), bw*0.36, y.at(0)-y.at(float64(b.Surviving)), colBlue,
			fmt.Sprintf("%d envelopes protected in every surviving region in %s", b.Surviving, rng))
		s.text(x+bw/2, 330-bottom+16, "middle", colMuted, false, label)
		prev = b.LE
	}
	s.line(left, y.at(0), chartWidth-20, y.at(0), colMuted, 1, "")
	s.text(left+width/2, 330-bottom+36, "middle", colInk, false, "protection time, seal to open alone (bucket upper bound)")
	fmt.Fprintf(&s.b, `<text transform="translate(14 %s) rotate(-90)" text-anchor="middle" fill="%s">envelopes</text>`, num((top+330-bottom)/2), colInk)
	// A percentile's place: its bucket, interpolated linearly inside it.
	pos := func(v float64) float64 {
		lo := 0.0
		for i, b := range h {
			if b.LE == 0 || v <= b.LE {
				f := 0.5
				if b.LE > lo {
					f = (v - lo) / (b.LE - lo)
				}
				return left + (float64(i)+math.Min(math.Max(f, 0), 1))*bw
			}
			lo = b.LE
		}
		return left + width
	}
	if pr := r.Protection.RequiredRegions; pr.Envelopes > 0 {
		for i, q := range []struct {
			name string
			v    float64
		}{{"p50", pr.P50}, {"p99", pr.P99}, {"p99.9", pr.P999}, {"p99.99", pr.P9999}} {
			// Percentiles often share a bucket: the lines carry no label, the values are listed.
			x := pos(q.v)
			s.line(x, top, x, y.at(0), colPurple, 1.2, "4 3")
			s.text(left+10, top+4+14*float64(i), "start", colPurple, false, fmt.Sprintf("%s %s", q.name, fmtSecs(q.v)))
		}
	}
	s.legend(left, 330-12, [2]string{colBad, "every required region (the lost one included)"}, [2]string{colBlue, "every surviving region"},
		[2]string{colPurple, "percentiles, required regions"})
	return s.html()
}

// gamedayBySeal: the slowest protection time of the envelopes sealed in each bin, against the
// moment they were sealed; the loss shaded.
func gamedayBySeal(r *GamedayReport) htmltemplate.HTML {
	s := newSVG(chartWidth, 330, "Slowest protection time by the moment the envelopes were sealed")
	ymax := 1.0
	for _, b := range r.Protection.BySealTime {
		ymax = math.Max(ymax, math.Max(b.MaxRequired, b.MaxSurviving))
	}
	p := newPlot(s, 70, 24, 20, 70, r.span(), ymax)
	lost, back := r.lossWindow()
	p.band(s, lost, back, colLostBg, r.Lost+" lost")
	p.axes(s, fmt.Sprintf("seal time, seconds since the start (bins of %.0f s)", r.Protection.BinSeconds), "protection time", fmtSecs)
	for _, b := range r.Protection.BySealTime {
		x := p.x.at(b.AtSeconds + r.Protection.BinSeconds/2)
		tip := fmt.Sprintf("%d envelopes sealed at %.0f-%.0f s", b.Sealed, b.AtSeconds, b.AtSeconds+r.Protection.BinSeconds)
		if b.MaxRequired >= 0 {
			s.circle(x, p.y.at(b.MaxRequired), 3.2, colBad, fmt.Sprintf("%s: slowest in every required region %.2f s", tip, b.MaxRequired))
		} else {
			s.text(x, p.top+8, "middle", colBad, true, "×")
		}
		if b.MaxSurviving >= 0 {
			s.circle(x, p.y.at(b.MaxSurviving), 2.6, colBlue, fmt.Sprintf("%s: slowest in every surviving region %.2f s", tip, b.MaxSurviving))
		}
	}
	if pr := r.Protection.RequiredRegions; pr.Envelopes > 0 {
		y := p.y.at(pr.P9999)
		s.line(p.left, y, s.w-p.right, y, colPurple, 1, "4 3")
		s.text(s.w-p.right-4, y-4, "end", colPurple, false, "p99.99 "+fmtSecs(pr.P9999))
	}
	s.legend(p.left, 330-12, [2]string{colBad, "slowest, every required region"}, [2]string{colBlue, "slowest, every surviving region"},
		[2]string{colLostBg, "loss window"})
	return s.html()
}

// gamedayCatchUp: envelopes sealed but not yet protected, over time: the backlog the loss
// builds and the catch-up that drains it.
func gamedayCatchUp(r *GamedayReport) htmltemplate.HTML {
	s := newSVG(chartWidth, 330, "Unprotected envelopes over time: the backlog during the loss and the catch-up")
	ymax := 1.0
	for _, t := range r.Timeline {
		ymax = math.Max(ymax, float64(t.Unprotected))
	}
	p := newPlot(s, 70, 24, 20, 70, r.span(), ymax)
	lost, back := r.lossWindow()
	p.band(s, lost, back, colLostBg, r.Lost+" lost")
	p.axes(s, "seconds since the game day started", "envelopes not yet protected", func(v float64) string { return fmt.Sprintf("%.0f", v) })
	var xs, yr, ys []float64
	for _, t := range r.Timeline {
		xs = append(xs, p.x.at(t.AtSeconds))
		yr = append(yr, p.y.at(float64(t.Unprotected)))
		ys = append(ys, p.y.at(float64(t.UnprotectedSurviving)))
	}
	s.polyline(xs, yr, colBad, 2)
	s.polyline(xs, ys, colBlue, 2)
	if !r.RestoredAt.IsZero() && r.CatchUpSeconds >= 0 {
		p.marker(s, back+r.CatchUpSeconds, colBlue, fmt.Sprintf("caught up %.1f s after the return", r.CatchUpSeconds), 0)
	}
	s.legend(p.left, 330-12, [2]string{colBad, "not yet open in every required region alone"}, [2]string{colBlue, "not yet open in every surviving region alone"})
	return s.html()
}
