// Command envdr-local runs the local three-region AWS stand-in (docs/LOCAL.md): per region a KMS,
// SQS and DynamoDB endpoint on 127.0.0.1, global tables replicated between them, and an admin
// endpoint that `envdr local down/up/lag/fault/...` drive. `make local-up` runs it in the
// background.
//
// It is a product of its own, apart from envdr: the envdr binary (and its image) carries none of
// the stand-in, only the admin client (localaws/admin). The stand-in runs on Linux only: it
// ties its child backends' lives to its own (Pdeathsig) and holds its ports with Linux socket
// flags; on other systems this command says so and exits 1 (serve_other.go).
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes, as envdr's: 1 when the stand-in fails, 2 on bad usage.
const (
	exitFailure = 1
	exitUsage   = 2
)

type usageErr struct{ error }

func usageError(format string, a ...any) error { return usageErr{fmt.Errorf(format, a...)} }

func main() {
	cmd := newServeCmd()
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError("%v (see %s --help)", err, c.CommandPath())
	})
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "envdr-local: error: %v\n", err)
		var u usageErr
		if errors.As(err, &u) {
			os.Exit(exitUsage)
		}
		os.Exit(exitFailure)
	}
}
