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
	topo, err := regions.New(context.Background(), env.Config, regions.Options{})
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
		cmd := exec.Command(os.Args[0], "--config", env.ConfigPath, "open", "-", out)
		cmd.Env = append(os.Environ(), envRunMain+"=1")
		var stderr strings.Builder
		cmd.Stderr = &stderr
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
		require.Eventually(t, func() bool {
			m, _ := filepath.Glob(filepath.Join(dir, ".out-*.envdr-tmp-*"))
			if len(m) != 1 {
				return false
			}
			fi, err := os.Stat(m[0])
			return err == nil && fi.Size() > 4<<20
		}, 30*time.Second, time.Millisecond, "open never started writing")
		signalled := time.Now()
		require.NoError(t, cmd.Process.Signal(sig.s))
		err = cmd.Wait()
		took := time.Since(signalled)
		require.Error(t, <-fed, "open stopped reading before the end of the 1 GiB")
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "open must fail after %s, got %v; stderr: %s", sig.s, err, stderr.String())
		require.Equal(t, sig.code, ee.ExitCode(), stderr.String())
		require.Less(t, took, time.Second, "exit within 1 s of %s", sig.s)
		t.Logf("%s: exit %d %s after the signal", sig.s, ee.ExitCode(), took.Round(time.Microsecond))
		require.NoFileExists(t, out)
		m, _ := filepath.Glob(filepath.Join(dir, ".out-*"))
		require.Empty(t, m, "no temporary file is left")
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
	cmd := exec.Command(os.Args[0], "--config", env.ConfigPath, "seal", "-", out)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	cmd.Stdin = io.LimitReader(zeros{}, 1<<40)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, ".sealed.envdr.envdr-tmp-*"))
		if len(m) != 1 {
			return false
		}
		fi, err := os.Stat(m[0])
		return err == nil && fi.Size() > 4<<20
	}, 30*time.Second, time.Millisecond, "seal never started writing")
	signalled := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	err := cmd.Wait()
	took := time.Since(signalled)
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "seal must fail after SIGINT, got %v; stderr: %s", err, stderr.String())
	require.Equal(t, 130, ee.ExitCode(), stderr.String())
	require.Less(t, took, time.Second)
	require.NoFileExists(t, out)
	m, _ := filepath.Glob(filepath.Join(dir, ".sealed*"))
	require.Empty(t, m, "no temporary file is left")
}
