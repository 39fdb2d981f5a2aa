package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Result formats of --output (docs/OUTPUT.md holds the JSON schemas).
const (
	outputText = "text"
	outputJSON = "json"
)

// addOutputFlag gives a command that prints a result the one output switch every such command
// shares: --output json|text, its alias --json, and the ENVDR_OUTPUT default (as kubectl's -o and
// Vault's -format / VAULT_FORMAT). *asJSON is set before RunE runs; a bad value is a usage error.
func addOutputFlag(cmd *cobra.Command, asJSON *bool) {
	var (
		format string
		alias  bool
	)
	def, fromEnv := os.LookupEnv("ENVDR_OUTPUT")
	if !fromEnv || def == "" {
		def = outputText
	}
	cmd.Flags().StringVar(&format, "output", def, "result format on stdout: text or json (docs/OUTPUT.md); env ENVDR_OUTPUT")
	cmd.Flags().BoolVar(&alias, "json", false, "print the result as JSON (alias of --output json)")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{outputJSON, outputText}, cobra.ShellCompDirectiveNoFileComp))
	chainPreRun(cmd, func(c *cobra.Command, _ []string) error {
		switch {
		case alias:
			if c.Flags().Changed("output") && format != outputJSON {
				return usageError("--json and --output %s disagree: give one", format)
			}
			*asJSON = true
		case format == outputJSON:
			*asJSON = true
		case format == outputText:
			*asJSON = false
		case c.Flags().Changed("output"):
			return usageError("--output %q: use json or text", format)
		default:
			return usageError("ENVDR_OUTPUT=%q: use json or text", format)
		}
		return nil
	})
}

// chainPreRun runs f before the command's existing PreRunE (if any).
func chainPreRun(cmd *cobra.Command, f func(*cobra.Command, []string) error) {
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if err := f(c, args); err != nil {
			return err
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

// writeJSON prints v as indented JSON, the form every --output json result takes.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("print JSON: %w", err)
	}
	return nil
}
