package recovery

import (
	"fmt"
	htmltemplate "html/template"
	"math"
)

// DrillCharts are the drill page's charts, each one inline <svg>.
type DrillCharts struct {
	Timeline, Outcomes, Latency htmltemplate.HTML
}

func drillCharts(r *DrillReport) DrillCharts {
	return DrillCharts{Timeline: drillTimeline(r), Outcomes: drillOutcomes(r), Latency: drillLatency(r)}
}

// drillTimeline: the drill's phases on one time axis, with the RTO (the surviving regions
// opening everything) bracketed and the recovery point's age beside it.
func drillTimeline(r *DrillReport) htmltemplate.HTML {
	s := newSVG(chartWidth, 190, "Drill timeline: scan and decrypt, files opened, and the RTO")
	total := math.Max(r.DurationSeconds, r.RTOSeconds)
	p := newPlot(s, 150, 50, 20, 70, math.Max(total, 0.001), 1)
	y := p.top + 10
	scan, open := r.Timings.ScanSeconds, r.Timings.OpenSeconds
	s.text(p.left-8, y+16, "end", colInk, false, "drill")
	s.rect(p.x.at(0), y, p.x.at(scan)-p.x.at(0), 24, colBlue, fmt.Sprintf("scan and decrypt in %v: %.2f s, %.0f records/s", r.Surviving, scan, r.Timings.RecordsPerSec))
	s.rect(p.x.at(scan), y, math.Max(p.x.at(scan+open)-p.x.at(scan), 1), 24, colPurple, fmt.Sprintf("open %d files: %.2f s", len(r.Files), open))
	if rest := total - scan - open; rest > 0 {
		s.rect(p.x.at(scan+open), y, p.x.at(total)-p.x.at(scan+open), 24, colGrid, fmt.Sprintf("setup and report: %.2f s", rest))
	}
	p.axes(s, "seconds since the drill started", "", nil)
	by := p.top - 20
	s.line(p.x.at(0), by, p.x.at(r.RTOSeconds), by, colPurple, 3, "")
	s.line(p.x.at(r.RTOSeconds), by-6, p.x.at(r.RTOSeconds), by+6, colPurple, 2, "")
	s.line(p.x.at(0), by-6, p.x.at(0), by+6, colPurple, 2, "")
	rpo := fmt.Sprintf("RPO %.1f s", r.RecoveryPoint.RPOSeconds)
	if r.RecoveryPoint.RPOLowerBound {
		rpo = "RPO at least " + fmt.Sprintf("%.1f s", r.RecoveryPoint.RPOSeconds)
	}
	label := fmt.Sprintf("RTO %.2f s: %d records opened without %s · %s, %d at risk", r.RTOSeconds, r.Recoverable, r.Lost, rpo, r.RecoveryPoint.AtRisk)
	if p.x.at(r.RTOSeconds) > chartWidth/2 {
		s.text(p.x.at(0), by-10, "start", colPurple, true, label)
	} else {
		s.text(p.x.at(r.RTOSeconds)+8, by+4, "start", colPurple, true, label)
	}
	s.legend(p.left, 190-8, [2]string{colBlue, "scan and decrypt"}, [2]string{colPurple, "envelope files opened"}, [2]string{colGrid, "setup and report"})
	return s.html()
}

// drillOutcomes: per region, its records by outcome as one stacked bar; the lost region shows
// only the wraps that went with it.
func drillOutcomes(r *DrillReport) htmltemplate.HTML {
	rowH := 34.0
	h := 80 + rowH*float64(len(r.Matrix))
	s := newSVG(chartWidth, h, "Records by outcome in each region")
	top := 20.0
	p := newPlot(s, 150, top, 20, 60, math.Max(float64(r.Records), 1), 1)
	for i, m := range r.Matrix {
		y := top + 6 + float64(i)*rowH
		s.text(p.left-8, y+16, "end", colInk, m.Lost, m.Region)
		if m.Lost {
			s.rect(p.x.at(0), y, p.x.at(float64(m.WrapsHeld))-p.x.at(0), 22, colMuted, fmt.Sprintf("%s (lost): %d wraps went with it, not contacted", m.Region, m.WrapsHeld))
			s.text(p.x.at(0)+6, y+16, "start", "#fff", true, fmt.Sprintf("lost: %d wraps went with it, not contacted", m.WrapsHeld))
			continue
		}
		x := 0.0
		for _, part := range []struct {
			n         int64
			col, what string
		}{{m.OK, colOK, "opened alone"}, {m.Skipped, colGrid, "skipped (another region opened it)"}, {m.NoWrap, colWarn, "no wrap"},
			{m.NoRecord, colWarn, "no record"}, {m.Failed, colBad, "failed"}, {m.Unavailable, colBad, "unavailable"}} {
			if part.n == 0 {
				continue
			}
			s.rect(p.x.at(x), y, p.x.at(x+float64(part.n))-p.x.at(x), 22, part.col, fmt.Sprintf("%s: %d %s", m.Region, part.n, part.what))
			x += float64(part.n)
		}
	}
	p.axes(s, "records", "", nil)
	s.legend(p.left, h-8, [2]string{colOK, "opened alone"}, [2]string{colGrid, "skipped"}, [2]string{colWarn, "no wrap / no record"},
		[2]string{colBad, "failed / unavailable"}, [2]string{colMuted, "lost region's wraps"})
	return s.html()
}

// drillLatency: each surviving region's KMS Decrypt latency, mean and max.
func drillLatency(r *DrillReport) htmltemplate.HTML {
	var rows []MatrixRow
	peak := 0.0
	for _, m := range r.Matrix {
		if !m.Lost {
			rows = append(rows, m)
			peak = math.Max(peak, m.MaxMillis)
		}
	}
	rowH := 40.0
	h := 90 + rowH*float64(len(rows))
	s := newSVG(chartWidth, h, "KMS Decrypt latency per surviving region")
	top := 20.0
	p := newPlot(s, 150, top, 20, 60, math.Max(peak, 1), 1)
	for i, m := range rows {
		y := top + 6 + float64(i)*rowH
		s.text(p.left-8, y+18, "end", colInk, false, m.Region)
		s.rect(p.x.at(0), y, p.x.at(m.MeanMillis)-p.x.at(0), 13, colBlue, fmt.Sprintf("%s: mean %.1f ms over %d calls", m.Region, m.MeanMillis, m.Calls))
		s.rect(p.x.at(0), y+15, p.x.at(m.MaxMillis)-p.x.at(0), 13, colWarn, fmt.Sprintf("%s: max %.1f ms", m.Region, m.MaxMillis))
		label := fmt.Sprintf("%.1f ms mean · %.1f ms max · %d calls", m.MeanMillis, m.MaxMillis, m.Calls)
		if x := p.x.at(m.MaxMillis); x+300 < chartWidth-p.right {
			s.text(x+6, y+26, "start", colMuted, false, label)
		} else {
			s.text(x-6, y+26, "end", "#fff", true, label) // no room after the bar: inside it
		}
	}
	// The axis is in milliseconds: label it so (fmtSecs would say seconds).
	for _, v := range niceTicks(p.x.d1, 10) {
		x := p.x.at(v)
		s.line(x, h-p.bottom, x, h-p.bottom+4, colMuted, 1, "")
		s.text(x, h-p.bottom+17, "middle", colMuted, false, fmt.Sprintf("%g ms", v))
	}
	s.line(p.left, h-p.bottom, chartWidth-p.right, h-p.bottom, colMuted, 1, "")
	s.legend(p.left, h-8, [2]string{colBlue, "mean"}, [2]string{colWarn, "max"})
	return s.html()
}
