//go:build linux

package main

import (
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// Bad flags are usage errors (exit 2) that name the flag, before anything starts.
func TestServeRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--base-port", "80"},
		{"--base-port", "65500"},
		{"--jitter", "-1s"},
	} {
		cmd := newServeCmd()
		cmd.SetArgs(append(args, "--dir", t.TempDir()))
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		var u usageErr
		require.True(t, errors.As(err, &u), "%v: %v", args, err)
		require.Contains(t, err.Error(), args[0])
	}
}
