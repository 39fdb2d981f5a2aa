package main

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestVersionFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/envdr/envdr", Version: "v0.3.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "7c1138a47ccef9acdec0fc1ae51347881ef3e519"},
			{Key: "vcs.time", Value: "2026-11-29T14:32:15Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	v := versionFrom(bi, "")
	require.Equal(t, "v0.3.0", v.Version)
	require.Equal(t, "7c1138a47ccef9acdec0fc1ae51347881ef3e519", v.Commit)
	require.Equal(t, "2026-11-29T14:32:15Z", v.Date)
	require.True(t, v.Modified)
	require.Regexp(t, `^envdr v0\.3\.0 \(commit 7c1138a47ccef9acdec0fc1ae51347881ef3e519, 2026-11-29T14:32:15Z, modified, go1\.26\.8, \w+/\w+\)$`, v.String())

	// -ldflags "-X main.version=..." (the Docker build) wins over the module version.
	require.Equal(t, "v9.9.9", versionFrom(bi, "v9.9.9").Version)

	// No stamp, no module version: say so rather than invent one.
	v = versionFrom(&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "")
	require.Equal(t, "dev", v.Version)
	require.Equal(t, "unknown", v.Commit)
	require.Empty(t, v.Date)
	require.False(t, v.Modified)
	require.Equal(t, "dev", versionFrom(nil, "").Version)
}

// A release build stamps commit and date with -ldflags -X (scripts/release.sh): a build from a
// worktree or a source tarball carries no VCS stamp of its own, and the stamp wins over one.
func TestVersionReleaseStamp(t *testing.T) {
	v := versionFrom(nil, "v1.4.0", "0123456789abcdef0123456789abcdef01234567", "2026-12-07T17:12:07Z")
	require.Equal(t, "v1.4.0", v.Version)
	require.Equal(t, "0123456789abcdef0123456789abcdef01234567", v.Commit)
	require.Equal(t, "2026-12-07T17:12:07Z", v.Date)
	require.False(t, v.Modified)

	bi := &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "aaaa"}, {Key: "vcs.modified", Value: "true"}}}
	v = versionFrom(bi, "", "bbbb", "")
	require.Equal(t, "bbbb", v.Commit)
	require.False(t, v.Modified, "the stamp describes the release commit, not the builder's tree")
	require.Equal(t, "dev", v.Version)
}
