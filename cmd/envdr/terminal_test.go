package main

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws/localtest"
)

// TestBinaryNeverToTerminal: with stdout a terminal (the check behind stdoutIsTerminal), seal
// refuses to write its envelope there, open refuses binary plaintext (writing nothing) but lets
// text through, and --force lifts the refusal, as age does.
func TestBinaryNeverToTerminal(t *testing.T) {
	env := localtest.New(t)
	roles := newRoleConfigs(t, env, nil)
	dir := t.TempDir()

	// Stand in a file for the terminal, so what reaches "it" can be read back.
	term, err := os.Create(filepath.Join(dir, "terminal"))
	require.NoError(t, err)
	realStdout, realIsTerminal := os.Stdout, stdoutIsTerminal
	os.Stdout, stdoutIsTerminal = term, func() bool { return true }
	t.Cleanup(func() { os.Stdout, stdoutIsTerminal = realStdout, realIsTerminal; term.Close() })
	shown := func() []byte {
		b, err := os.ReadFile(term.Name())
		require.NoError(t, err)
		return b
	}
	envdr := func(args ...string) (string, int) {
		_, stderr, code := runSplit(t, append([]string{"--config", roles.path(args...)}, args...)...)
		return stderr, code
	}

	text := filepath.Join(dir, "text.txt")
	require.NoError(t, os.WriteFile(text, []byte("plain text may be shown\n"), 0o600))
	bin := make([]byte, 4096)
	_, err = rand.Read(bin)
	require.NoError(t, err)
	binPath := filepath.Join(dir, "bin.dat")
	require.NoError(t, os.WriteFile(binPath, bin, 0o600))

	stderr, code := envdr("seal", text, "-")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "refusing to write a binary envelope to the terminal")
	require.Contains(t, stderr, "(see envdr seal --help)")
	require.Empty(t, shown())

	for _, f := range []string{text, binPath} {
		_, code = envdr("seal", f, f+".envdr")
		require.Equal(t, exitOK, code)
	}
	stderr, code = envdr("open", binPath+".envdr", "-")
	require.Equal(t, exitUsage, code, stderr)
	require.Contains(t, stderr, "refusing to write binary plaintext to the terminal")
	require.Empty(t, shown(), "nothing of the binary plaintext reached the terminal")

	stderr, code = envdr("open", text+".envdr", "-")
	require.Equal(t, exitOK, code, stderr)
	require.Equal(t, "plain text may be shown\n", string(shown()))

	require.NoError(t, term.Truncate(0))
	_, err = term.Seek(0, 0)
	require.NoError(t, err)
	stderr, code = envdr("open", "--force", binPath+".envdr", "-")
	require.Equal(t, exitOK, code, stderr)
	require.Equal(t, bin, shown())
}
