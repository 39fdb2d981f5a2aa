package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// Section 2: envdr seal/open against age (to a pipe and to /dev/null) and, durable to a file,
// against dd bs=4M conv=fsync of the same bytes. scripts/bench.sh runs every command once per
// round; a ratio is given best against best, and as the median of the ratios within each round
// (both sides under the same machine load: steadier on a busy machine).

// Goals of issue 14 (and issue 4's for /dev/null and peak RSS).
const (
	goalPipeRatio    = 3.0  // envdr / age throughput, stdout a pipe
	goalDurableRatio = 1.15 // envdr wall to a durable file / dd conv=fsync wall
)

// CommandFigure is one command's runs.
type CommandFigure struct {
	Label       string  `json:"label"`
	Runs        int     `json:"runs"`
	BestWallS   float64 `json:"best_wall_s"`
	MedianWallS float64 `json:"median_wall_s"`
	BestMBps    float64 `json:"best_mb_per_s"`
	MinCPUS     float64 `json:"min_cpu_s"`
	MaxRSSMiB   float64 `json:"max_rss_mib"`
}

// RatioFigure compares a command with its baseline.
type RatioFigure struct {
	Name         string  `json:"name"`
	Command      string  `json:"command"`
	Baseline     string  `json:"baseline"`
	Kind         string  `json:"kind"`           // "throughput" (baseline wall / command wall) or "time" (command wall / baseline wall)
	Best         float64 `json:"best"`           // from the best run of each
	MedianPaired float64 `json:"median_paired"`  // median over rounds of the ratio within the round
	Rounds       int     `json:"rounds_paired"`  // rounds with both
	Goal         string  `json:"goal,omitempty"` // e.g. ">= 3.00"
	Pass         *bool   `json:"pass,omitempty"`
}

// CLIFigures is section 2 of summary.json.
type CLIFigures struct {
	Bytes    int64           `json:"bytes"`
	Commands []CommandFigure `json:"commands"`
	Ratios   []RatioFigure   `json:"ratios"`
	Check    string          `json:"check"` // cmp of every output with the input
}

type cliRatioSpec struct {
	name, cmd, base, kind string
	goal                  float64 // 0: informational
}

var cliRatioSpecs = []cliRatioSpec{
	{"envdr seal / age, to a pipe", "envdr-seal-pipe", "age-seal-pipe", "throughput", goalPipeRatio},
	{"envdr open / age, to a pipe", "envdr-open-pipe", "age-open-pipe", "throughput", goalPipeRatio},
	{"envdr seal --jobs 1 / age, to a pipe", "envdr-seal-pipe-j1", "age-seal-pipe", "throughput", 0},
	{"envdr open --jobs 1 / age, to a pipe", "envdr-open-pipe-j1", "age-open-pipe", "throughput", 0},
	{"envdr seal, all cores / --jobs 1, to a pipe", "envdr-seal-pipe", "envdr-seal-pipe-j1", "throughput", 0},
	{"envdr open, all cores / --jobs 1, to a pipe", "envdr-open-pipe", "envdr-open-pipe-j1", "throughput", 0},
	{"envdr seal to a pipe / cat FILE | cat (time: 1.00 = the pipe's floor)", "envdr-seal-pipe", "cat-pipe", "time", 0},
	{"envdr open to a pipe / cat FILE | cat (time)", "envdr-open-pipe", "cat-pipe", "time", 0},
	{"age seal to a pipe / cat FILE | cat (time)", "age-seal-pipe", "cat-pipe", "time", 0},
	{"envdr seal / age, to /dev/null", "envdr-seal", "age-seal", "throughput", goalCLIRatio},
	{"envdr open / age, to /dev/null", "envdr-open", "age-open", "throughput", goalCLIRatio},
	{"envdr seal to a durable file / dd conv=fsync (time)", "envdr-seal-file", "dd-fsync", "time", goalDurableRatio},
	{"envdr open to a durable file / dd conv=fsync (time)", "envdr-open-file", "dd-fsync", "time", goalDurableRatio},
}

// cliLabels in display order, with what their output was.
var cliLabels = []struct{ label, output string }{
	{"envdr-seal-pipe", "pipe"}, {"envdr-seal-pipe-j1", "pipe, --jobs 1"}, {"age-seal-pipe", "pipe"},
	{"envdr-open-pipe", "pipe"}, {"envdr-open-pipe-j1", "pipe, --jobs 1"}, {"age-open-pipe", "pipe"},
	{"cat-pipe", "pipe (cat FILE | cat)"},
	{"envdr-seal", "/dev/null"}, {"age-seal", "/dev/null"}, {"envdr-open", "/dev/null"}, {"age-open", "/dev/null"},
	{"envdr-seal-file", "durable file"}, {"envdr-open-file", "durable file"}, {"dd-fsync", "file, conv=fsync"},
}

func cliFigures(ms []Measurement, dir string, j *judge) *CLIFigures {
	byLabel := map[string][]Measurement{}
	f := &CLIFigures{Check: "not checked"}
	for _, m := range ms {
		if m.Exit != 0 {
			continue
		}
		byLabel[m.Label] = append(byLabel[m.Label], m)
		f.Bytes = max(f.Bytes, m.Bytes)
	}
	for _, l := range cliLabels {
		runs := byLabel[l.label]
		if len(runs) == 0 {
			continue
		}
		c := CommandFigure{Label: l.label, Runs: len(runs), BestWallS: runs[0].WallS, MinCPUS: runs[0].UserS + runs[0].SysS}
		var walls []float64
		for _, m := range runs {
			walls = append(walls, m.WallS)
			if m.WallS < c.BestWallS {
				c.BestWallS = m.WallS
			}
			c.MinCPUS = min(c.MinCPUS, m.UserS+m.SysS)
			c.MaxRSSMiB = max(c.MaxRSSMiB, float64(m.MaxRSSKiB)/1024)
		}
		c.MedianWallS = median(walls)
		if c.BestWallS > 0 {
			c.BestMBps = float64(runs[0].Bytes) / c.BestWallS / 1e6
		}
		f.Commands = append(f.Commands, c)
	}
	best := map[string]float64{}
	for _, c := range f.Commands {
		best[c.Label] = c.BestWallS
	}
	for _, sp := range cliRatioSpecs {
		cw, bw := best[sp.cmd], best[sp.base]
		if cw == 0 || bw == 0 {
			continue
		}
		r := RatioFigure{Name: sp.name, Command: sp.cmd, Baseline: sp.base, Kind: sp.kind}
		ratio := func(c, b float64) float64 {
			if sp.kind == "time" {
				return c / b
			}
			return b / c
		}
		r.Best = ratio(cw, bw)
		var paired []float64
		for _, m := range byLabel[sp.cmd] {
			for _, b := range byLabel[sp.base] {
				if m.Round != 0 && b.Round == m.Round && m.WallS > 0 && b.WallS > 0 {
					paired = append(paired, ratio(m.WallS, b.WallS))
				}
			}
		}
		if len(paired) > 0 {
			r.MedianPaired = median(paired)
			r.Rounds = len(paired)
		}
		if sp.goal > 0 {
			v := r.judged()
			var ok bool
			if sp.kind == "time" {
				r.Goal = fmt.Sprintf("<= %.2f", sp.goal)
				ok = v <= sp.goal
			} else {
				r.Goal = fmt.Sprintf(">= %.2f", sp.goal)
				ok = v >= sp.goal
			}
			if !j.short {
				r.Pass = &ok
			}
		}
		f.Ratios = append(f.Ratios, r)
	}
	if b, err := os.ReadFile(filepath.Join(dir, fileCLICheck)); err == nil {
		f.Check = strings.TrimSpace(string(b))
	}
	return f
}

func writeCLI(w io.Writer, ms []Measurement, dir string, j *judge) *CLIFigures {
	f := cliFigures(ms, dir, j)
	fmt.Fprintf(w, "   file: %d random bytes (%.0f MiB), in the page cache; every command once per round, interleaved.\n", f.Bytes, float64(f.Bytes)/(1<<20))
	fmt.Fprintf(w, "   pipe: stdout piped to cat; durable file: envdr writes, fsyncs, renames and fsyncs the directory,\n")
	fmt.Fprintf(w, "   dd bs=4M conv=fsync copies the same bytes to a file and fsyncs it. Goals are judged on the median of\n")
	fmt.Fprintf(w, "   the ratios within rounds (from %d rounds on; else best against best).\n", minJudgedRounds)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "   command\toutput\truns\tbest wall s\tmedian wall s\tMB/s (best)\tleast CPU s (user+sys)\tpeak RSS MiB\t\n")
	outputs := map[string]string{}
	for _, l := range cliLabels {
		outputs[l.label] = l.output
	}
	for _, c := range f.Commands {
		fmt.Fprintf(tw, "   %s\t%s\t%d\t%.3f\t%.3f\t%.1f\t%.3f\t%.1f\t\n", c.Label, outputs[c.Label], c.Runs, c.BestWallS, c.MedianWallS,
			c.BestMBps, c.MinCPUS, c.MaxRSSMiB)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "   ratio\tbest vs best\tmedian within rounds\tgoal\t\n")
	for _, r := range f.Ratios {
		goal := ""
		if r.Goal != "" {
			v := r.judged()
			ok := strings.HasPrefix(r.Goal, "<=") && v <= goalOf(r) || strings.HasPrefix(r.Goal, ">=") && v >= goalOf(r)
			goal = r.Goal + " " + j.check(ok)
		}
		fmt.Fprintf(tw, "   %s\t%.2fx\t%.2fx (%d)\t%s\t\n", r.Name, r.Best, r.MedianPaired, r.Rounds, goal)
	}
	var sealRSS, openRSS float64
	for _, c := range f.Commands {
		switch {
		case strings.HasPrefix(c.Label, "envdr-seal"):
			sealRSS = max(sealRSS, c.MaxRSSMiB)
		case strings.HasPrefix(c.Label, "envdr-open"):
			openRSS = max(openRSS, c.MaxRSSMiB)
		}
	}
	for _, x := range []struct {
		op  string
		rss float64
	}{{"seal", sealRSS}, {"open", openRSS}} {
		if x.rss > 0 {
			fmt.Fprintf(tw, "   envdr %s peak RSS (all runs)\t%.1f MiB\t\t<= %d MiB %s\t\n", x.op, x.rss, goalRSSMiB, j.check(x.rss <= goalRSSMiB))
		}
	}
	fmt.Fprintf(tw, "   outputs == input (cmp)\t%s\t\t\t\n", f.Check)
	tw.Flush()
	return f
}

// judged is the figure a goal is judged on: the median of the ratios within rounds (both sides
// under the same load; what one lucky or unlucky run cannot swing) once there are at least
// minJudgedRounds, else best against best.
func (r RatioFigure) judged() float64 {
	if r.Rounds >= minJudgedRounds {
		return r.MedianPaired
	}
	return r.Best
}

const minJudgedRounds = 3

func goalOf(r RatioFigure) float64 {
	var g float64
	_, _ = fmt.Sscanf(strings.TrimLeft(r.Goal, "<>= "), "%g", &g)
	return g
}

// LibraryFigure is one envelope benchmark of section 1.
type LibraryFigure struct {
	Name    string             `json:"name"`
	Runs    int                `json:"runs"`
	Metrics map[string]float64 `json:"metrics"` // medians: MB/s, raw-MB/s, x-raw, ns/op, ...
}

// Figures is .bench/summary.json: every figure the summary prints.
type Figures struct {
	Time        string                      `json:"time"`
	Mode        string                      `json:"mode"`
	Platform    string                      `json:"platform"`
	CPUs        int                         `json:"cpus"`
	Load        string                      `json:"load"`
	Library     []LibraryFigure             `json:"library,omitempty"`
	LibRatios   []Ratio                     `json:"library_ratios,omitempty"`
	CLI         *CLIFigures                 `json:"cli,omitempty"`
	Replicate   map[string]*ReplicateResult `json:"replicate,omitempty"`
	Quota       []QuotaCurve                `json:"quota_curves,omitempty"` // many daemons, one quota
	Modes       []ModeCalls                 `json:"modes,omitempty"`        // KMS calls per envelope by mode
	GoalsMissed int                         `json:"goals_missed"`
}

func libraryFigures(bs []GoBench) []LibraryFigure {
	out := make([]LibraryFigure, 0, len(bs))
	for _, b := range bs {
		out = append(out, LibraryFigure{Name: b.Name, Runs: b.Runs, Metrics: b.Metrics})
	}
	return out
}
