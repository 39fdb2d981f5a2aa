package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Measurement is one run of a child process (a JSON line in the measure file).
type Measurement struct {
	Label     string  `json:"label"`
	Round     int     `json:"round,omitempty"` // scripts/bench.sh runs every command once per round
	Bytes     int64   `json:"bytes,omitempty"`
	WallS     float64 `json:"wall_s"`
	UserS     float64 `json:"user_s"`
	SysS      float64 `json:"sys_s"`
	MaxRSSKiB int64   `json:"maxrss_kib"`
	Exit      int     `json:"exit"`
	Command   string  `json:"command"`
}

// MBps is the throughput in MB/s (10^6 bytes per second).
func (m Measurement) MBps() float64 {
	if m.WallS <= 0 {
		return 0
	}
	return float64(m.Bytes) / m.WallS / 1e6
}

func runMeasure(args []string) error {
	fs := flag.NewFlagSet("measure", flag.ExitOnError)
	label := fs.String("label", "", "name of this measurement (e.g. envdr-seal)")
	bytes := fs.Int64("bytes", 0, "bytes processed, for throughput")
	out := fs.String("out", "", "append the JSON line to this file (default: stdout only)")
	round := fs.Int("round", 0, "the round of interleaved runs this one belongs to (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	if *label == "" || len(argv) == 0 {
		return errors.New("measure: --label and a command after -- are required")
	}
	m, err := measure(*label, *bytes, argv)
	if err != nil {
		return err
	}
	m.Round = *round
	line, _ := json.Marshal(m)
	fmt.Fprintf(os.Stderr, "measure %s: %.3fs wall, %.3fs user, %.3fs sys, peak RSS %.1f MiB\n",
		m.Label, m.WallS, m.UserS, m.SysS, float64(m.MaxRSSKiB)/1024)
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.Write(append(line, '\n')); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	} else {
		fmt.Println(string(line))
	}
	if m.Exit != 0 {
		return fmt.Errorf("measure %s: %v exited %d", m.Label, argv, m.Exit)
	}
	return nil
}

// measure runs argv with this process's stdio and returns its wall time and rusage.
func measure(label string, bytes int64, argv []string) (Measurement, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	m := Measurement{Label: label, Bytes: bytes, WallS: wall.Seconds(), Command: fmt.Sprint(argv)}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return m, fmt.Errorf("measure %s: %w", label, err)
	}
	fillUsage(&m, cmd.ProcessState)
	return m, nil
}

// fillUsage copies a finished child's exit status, CPU times and peak RSS (KiB on Linux).
func fillUsage(m *Measurement, ps *os.ProcessState) {
	if ps == nil {
		return
	}
	m.Exit = ps.ExitCode()
	m.UserS = ps.UserTime().Seconds()
	m.SysS = ps.SystemTime().Seconds()
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		m.MaxRSSKiB = int64(ru.Maxrss)
	}
}
