//go:build !linux

package main

import (
	"errors"
	"runtime"

	"github.com/spf13/cobra"
)

// The stand-in needs Linux: it ties its child backends to its own life with Pdeathsig and holds
// its fixed ports with SOCK_CLOEXEC sockets (localaws/backends.go, stack.go). envdr itself runs
// everywhere; run the stand-in in a Linux VM or container and point envdr at its envdr.yaml.
func newServeCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "envdr-local",
		Short:              "The local AWS stand-in (Linux only)",
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("the local stand-in runs on Linux only (this is " + runtime.GOOS + "/" + runtime.GOARCH +
				"): run envdr-local in a Linux VM or container; envdr itself runs here (docs/LOCAL.md)")
		},
	}
}
