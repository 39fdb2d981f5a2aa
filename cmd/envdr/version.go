package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version overrides the module version when set at build time with -ldflags "-X main.version=..."
// (deploy/Dockerfile does, since its build context has no .git to stamp from).
var version = ""

// versionInfo is what `envdr version` prints: the main module version and the VCS stamp the Go
// toolchain records (go build stamps vcs.* when built inside a git checkout).
type versionInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit"`   // vcs.revision; "unknown" without a stamp
	Date     string `json:"date"`     // vcs.time: the commit's time, RFC 3339; "" without a stamp
	Modified bool   `json:"modified"` // vcs.modified: built from a tree with uncommitted changes
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// versionFrom reads bi (nil when the binary carries no build info).
func versionFrom(bi *debug.BuildInfo, override string) versionInfo {
	v := versionInfo{Version: "dev", Commit: "unknown", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if mv := bi.Main.Version; mv != "" && mv != "(devel)" {
			v.Version = mv
		}
		if bi.GoVersion != "" {
			v.Go = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.time":
				v.Date = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if override != "" {
		v.Version = override
	}
	return v
}

func buildVersion() versionInfo {
	bi, _ := debug.ReadBuildInfo()
	return versionFrom(bi, version)
}

// String is the one line `envdr version` and `envdr --version` print.
func (v versionInfo) String() string {
	parts := []string{"commit " + v.Commit}
	if v.Date != "" {
		parts = append(parts, v.Date)
	}
	if v.Modified {
		parts = append(parts, "modified")
	}
	parts = append(parts, v.Go, v.Platform)
	return fmt.Sprintf("envdr %s (%s)", v.Version, strings.Join(parts, ", "))
}

func init() {
	register(func() *cobra.Command {
		var asJSON bool
		cmd := &cobra.Command{
			Use:   "version [--json]",
			Short: "Print the envdr version, commit and commit date",
			Long: `Print the version of this envdr binary, the git commit it was built from, that commit's date,
whether the tree had uncommitted changes, and the Go version and platform. The commit and date
come from the build information go build records inside a git clone (make build); a binary
built without it says "commit unknown" (go build does not stamp in a git worktree, whose .git is
a file, nor from a source tarball). envdr --version prints the same line.`,
			Example: `  envdr version
  envdr --version
  envdr version --json | jq -r .commit`,
			Args: noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				v := buildVersion()
				if asJSON {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					return enc.Encode(v)
				}
				fmt.Fprintln(cmd.OutOrStdout(), v.String())
				return nil
			},
		}
		addOutputFlag(cmd, &asJSON)
		return cmd
	})
}
