package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const completionConfig = `home_region: us-east-1
table: t
regions:
  - {name: us-east-1, key: "arn:aws:kms:us-east-1:111122223333:key/mrk-1"}
  - {name: eu-west-1, key: "arn:aws:kms:eu-west-1:111122223333:key/mrk-1"}
  - {name: eu-central-1, key: "arn:aws:kms:eu-central-1:111122223333:key/k-2", mode: independent}
`

// --region, --lose and --scan-region complete from the config's regions, on every command.
func TestRegionCompletion(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "envdr.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(completionConfig), 0o644))
	complete := func(args ...string) []string {
		out, code, _ := runCLI(t, append([]string{"__complete", "--config", cfg}, args...)...)
		require.Equal(t, exitOK, code, out)
		var names []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasPrefix(l, ":") && !strings.HasPrefix(l, "Completion ended") {
				name, _, _ := strings.Cut(l, "\t")
				names = append(names, name)
			}
		}
		require.Contains(t, out, ":4\n", "no file completion after a region flag")
		return names
	}
	require.Equal(t, []string{"us-east-1", "eu-west-1", "eu-central-1"}, complete("open", "--region", ""))
	require.Equal(t, []string{"eu-west-1", "eu-central-1"}, complete("verify", "--region", "eu-"))
	require.Equal(t, []string{"eu-west-1"}, complete("drill", "--lose", "eu-w"))
	require.Equal(t, []string{"us-east-1"}, complete("drill", "--lose", "eu-west-1", "--scan-region", "us"))
	require.Equal(t, []string{"eu-central-1"}, complete("rewrap", "--region", "eu-c"))
	out, _, _ := runCLI(t, "__complete", "--config", cfg, "open", "--region", "")
	require.Contains(t, out, "eu-central-1\tindependent key arn:aws:kms:eu-central-1:111122223333:key/k-2")
	// A config that does not load completes nothing and says it failed (directive 1|4).
	out, _, _ = runCLI(t, "__complete", "--config", filepath.Join(t.TempDir(), "missing.yaml"), "open", "--region", "")
	require.Contains(t, out, ":5\n")
}
