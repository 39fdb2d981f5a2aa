package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/policy"
)

// runPolicy runs the CLI in-process and returns stdout and the exit code run() would return.
func runPolicy(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return out.String(), exitOK
	}
	var ee *exitError
	require.True(t, errors.As(err, &ee), "untyped error %v", err)
	return out.String(), ee.code
}

func TestPolicyRenderStdoutAndLintClean(t *testing.T) {
	cfg := filepath.Join("..", "..", "policy", "testdata", "envdr.yaml")
	out, code := runPolicy(t, "--config", cfg, "policy", "render")
	require.Equal(t, exitOK, code, out)
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(out), &m))
	require.Len(t, m, 3+len(policy.Roles))
	require.Contains(t, m, "iam-daemon.json")
	require.Contains(t, m, "kms-key-policy.eu-west-1.json")

	f := filepath.Join(t.TempDir(), "all.json")
	require.NoError(t, os.WriteFile(f, []byte(out), 0o644))
	out, code = runPolicy(t, "policy", "lint", f)
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "10 policy documents, no findings")
}

func TestPolicyRenderOutDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p")
	cfg := filepath.Join("..", "..", "policy", "testdata", "envdr-alias.yaml")
	out, code := runPolicy(t, "--config", cfg, "policy", "render", "--out", dir, "--admin", "arn:aws:iam::111122223333:role/KeyAdmin")
	require.Equal(t, exitOK, code, out)
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	require.NoError(t, err)
	require.Len(t, files, 3+len(policy.Roles))
	out, code = runPolicy(t, "policy", "lint", "--json", dir)
	require.Equal(t, exitOK, code, out)
	var res struct {
		Documents []string          `json:"documents"`
		Findings  []json.RawMessage `json:"findings"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Len(t, res.Documents, 3+len(policy.Roles))
	require.NotNil(t, res.Findings)
	require.Empty(t, res.Findings)
}

func TestPolicyLintExitCodes(t *testing.T) {
	bad := filepath.Join("..", "..", "policy", "testdata", "bad")
	out, code := runPolicy(t, "policy", "lint", filepath.Join(bad, "no-context-condition.iam.json"))
	require.Equal(t, exitFindings, code)
	require.Contains(t, out, "no-context-condition")
	require.Contains(t, out, "why:")
	require.Contains(t, out, "fix:")

	out, code = runPolicy(t, "policy", "lint", "--json", filepath.Join(bad, "replica-diverges"))
	require.Equal(t, exitFindings, code)
	var res struct {
		Findings []struct{ Rule, Severity string } `json:"findings"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.NotEmpty(t, res.Findings)
	require.Equal(t, "replica-diverges", res.Findings[0].Rule)

	junk := filepath.Join(t.TempDir(), "junk.json")
	require.NoError(t, os.WriteFile(junk, []byte("not json"), 0o644))
	_, code = runPolicy(t, "policy", "lint", junk)
	require.Equal(t, exitUsage, code, "unreadable input")
	_, code = runPolicy(t, "policy", "lint", filepath.Join(t.TempDir(), "missing.json"))
	require.Equal(t, exitUsage, code, "missing input")
	_, code = runPolicy(t, "--config", filepath.Join(t.TempDir(), "none.yaml"), "policy", "render")
	require.Equal(t, exitUsage, code, "missing config")
}
