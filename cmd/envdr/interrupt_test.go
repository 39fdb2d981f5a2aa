package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/localtest"
	"github.com/envdr/envdr/regions"
)

// TestOpenInterrupted is issue 13's acceptance test for interrupts: SIGINT (then SIGTERM) during
// `open` of a 1 GiB envelope (generated into its stdin) ends the process within 1 s of the signal, with exit 130 (143), no
// OUT and no temporary file. Before the fix the signal only cancelled a context that open never
// looked at between chunks: open ran to the end and exited 0 with the whole OUT written.
func TestOpenInterrupted(t *testing.T) {
	env := localtest.New(t)
	dir := t.TempDir()
	// The test seals as the producer; open runs as the operator (the keys carry the rendered
	// key policies).
	topo, err := regions.New(context.Background(), env.ConfigAs(nil, iam.RoleProducer), regions.Options{})
	require.NoError(t, err)
	home, err := topo.HomeRegion()
	require.NoError(t, err)

	for _, sig := range []struct {
		s    syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		// The input is a generated 1 GiB envelope, sealed by this test straight into open's
		// stdin: no GiB on disk, and the test costs what open does until the signal.
		out := filepath.Join(dir, "out-"+sig.s.String())
		cmd, stderr := envdrCmd("--config", env.ConfigPathAs(nil, iam.RoleOperator), "open", "-", out)
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		fed := make(chan error, 1)
		go func() {
			_, err := envelope.Seal(context.Background(), stdin, io.LimitReader(zeros{}, 1<<30), home,
				envelope.SealOptions{ID: "big-" + sig.s.String(), HomeRegion: home.Name})
			stdin.Close()
			fed <- err
		}()
		// Wait until open is writing plaintext (its temporary file has data), then signal.
		took, err := interruptWhenWriting(t, cmd, filepath.Join(dir, ".out-*.envdr-tmp-*"), sig.s, "open")
		require.Error(t, <-fed, "open stopped reading before the end of the 1 GiB")
		requireInterrupted(t, err, took, "open", sig.s, sig.code, stderr.String(), out, filepath.Join(dir, ".out-*"))
		require.Contains(t, stderr.String(), "interrupted")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestSealInterrupted: SIGINT during `seal` of an endless stdin stops it between chunks, exit
// 130, no OUT, no temporary file. Before issue 13 the signal was swallowed and seal read on.
func TestSealInterrupted(t *testing.T) {
	env := localtest.New(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "sealed.envdr")
	cmd, stderr := envdrCmd("--config", env.ConfigPathAs(nil, iam.RoleProducer), "seal", "-", out)
	cmd.Stdin = io.LimitReader(zeros{}, 1<<40)
	require.NoError(t, cmd.Start())
	took, err := interruptWhenWriting(t, cmd, filepath.Join(dir, ".sealed.envdr.envdr-tmp-*"), syscall.SIGINT, "seal")
	requireInterrupted(t, err, took, "seal", syscall.SIGINT, 130, stderr.String(), out, filepath.Join(dir, ".sealed*"))
}

// envdrCmd is envdr as a subprocess (this test binary re-executed) with args, its stderr
// collected.
func envdrCmd(args ...string) (*exec.Cmd, *strings.Builder) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	return cmd, &stderr
}

// interruptWhenWriting waits until the one temporary file matching tmp holds more than 4 MiB
// (what, the started cmd, is writing its output), signals cmd with sig, and returns how long
// after the signal it exited and how (cmd.Wait's error).
func interruptWhenWriting(t *testing.T, cmd *exec.Cmd, tmp string, sig syscall.Signal, what string) (time.Duration, error) {
	t.Helper()
	require.Eventually(t, func() bool {
		m, _ := filepath.Glob(tmp)
		if len(m) != 1 {
			return false
		}
		fi, err := os.Stat(m[0])
		return err == nil && fi.Size() > 4<<20
	}, 30*time.Second, time.Millisecond, what+" never started writing")
	signalled := time.Now()
	require.NoError(t, cmd.Process.Signal(sig))
	err := cmd.Wait()
	return time.Since(signalled), err
}

// requireInterrupted requires that what exited with code within 1 s of sig (took), leaving
// neither out nor a temporary file matching tmp.
func requireInterrupted(t *testing.T, err error, took time.Duration, what string, sig syscall.Signal, code int, stderr, out, tmp string) {
	t.Helper()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "%s must fail after %s, got %v; stderr: %s", what, sig, err, stderr)
	require.Equal(t, code, ee.ExitCode(), stderr)
	require.Less(t, took, time.Second, "exit within 1 s of %s", sig)
	t.Logf("%s: exit %d %s after the signal", sig, ee.ExitCode(), took.Round(time.Microsecond))
	require.NoFileExists(t, out)
	m, _ := filepath.Glob(tmp)
	require.Empty(t, m, "no temporary file is left")
}
