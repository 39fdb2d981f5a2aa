package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// Sizes of the runs. The short form (default) keeps `make test` within its CI budget; the long
// form (ENVDR_FAULTS_LONG=1, or an explicit ENVDR_FAULTS_N) is the soak `make faults` runs.
const (
	envN    = "ENVDR_FAULTS_N"
	envLong = "ENVDR_FAULTS_LONG"
	// envBin, optional, names a prebuilt envdr binary instead of building one.
	envBin = "ENVDR_FAULTS_BIN"

	shortCrashN = 300
	longCrashN  = 10000
)

// envdrBin is the envdr binary every test runs, built once per test binary run.
var envdrBin string

// long reports whether the long form was asked for.
func long() bool { return os.Getenv(envLong) == "1" || os.Getenv(envN) != "" }

// crashN is the number of envelopes in the crash run.
func crashN(t testing.TB) int {
	if s := os.Getenv(envN); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive whole number", envN, s)
		}
		return n
	}
	if long() {
		return longCrashN
	}
	return shortCrashN
}

// scaled returns short in the short form and long in the long form, for the other tests' sizes.
func scaled(short, long_ int) int {
	if long() {
		return long_
	}
	return short
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if p := os.Getenv(envBin); p != "" {
		envdrBin = p
		return m.Run()
	}
	// Building here (not using bin/envdr) guarantees the processes run the code under test;
	// with a warm build cache this is only a link.
	dir, err := os.MkdirTemp("", "envdr-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	envdrBin = filepath.Join(dir, "envdr")
	cmd := exec.Command("go", "build", "-o", envdrBin, "github.com/envdr/envdr/cmd/envdr")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "faults: building envdr:", err)
		return 1
	}
	return m.Run()
}
