package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// releaseTargets are the platforms envdr is released for (scripts/release.sh, make cross).
var releaseTargets = []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64"}

// The envdr binary carries none of the local stand-in: on every release platform its import
// graph holds localaws/admin (the admin endpoint's client and wire types, standard library
// only) and no other package of localaws. The stand-in is its own command, cmd/envdr-local.
func TestProductImportGraphHasNoStandIn(t *testing.T) {
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "the import-graph check runs go list")
	const module = "github.com/envdr/envdr/"
	for _, target := range releaseTargets {
		goos, goarch, _ := strings.Cut(target, "/")
		cmd := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}}", ".")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s: go list -deps: %s", target, out)
		var own []string
		for _, pkg := range strings.Fields(string(out)) {
			if !strings.HasPrefix(pkg, module) {
				continue
			}
			own = append(own, pkg)
			rel := strings.TrimPrefix(pkg, module)
			if rel == "localaws" || (strings.HasPrefix(rel, "localaws/") && rel != "localaws/admin") {
				t.Errorf("%s: envdr imports the stand-in package %s; only localaws/admin may be linked (move what envdr needs there)", target, pkg)
			}
		}
		require.Contains(t, own, module+"localaws/admin", "%s: the check read envdr's graph", target)
	}
}

// localaws/admin stays small and pure: the standard library only, so linking it brings nothing
// of the stand-in (nor any Linux-only code) into envdr.
func TestAdminPackageIsStandardLibraryOnly(t *testing.T) {
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "the import-graph check runs go list")
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "github.com/envdr/envdr/localaws/admin").CombinedOutput()
	require.NoError(t, err, "go list -deps: %s", out)
	require.Equal(t, []string{"github.com/envdr/envdr/localaws/admin"}, strings.Fields(string(out)))
}
