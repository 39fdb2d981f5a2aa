package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func init() {
	register(func() *cobra.Command {
		return &cobra.Command{
			Use:   "inspect FILE|-",
			Short: "Print an envelope's header as JSON (never secrets)",
			Long: `inspect prints the header of an envelope: format version, envelope ID, encryption context, chunk
size, home region, key ARN, key commitment and the wrapped data key (ciphertext, useless without
KMS). It makes no KMS call and reads no data chunk, so it neither needs the key nor checks the
chunks: what it prints is not authenticated. The header is authenticated only by the chunks,
which takes the data key; anyone could have written these fields. Use open to authenticate.`,
			Example: `  envdr inspect report.pdf.envdr | jq .context`,
			Args:    exactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				in, err := openInput(args[0])
				if err != nil {
					return fmt.Errorf("input: %w", err)
				}
				defer in.Close()
				hdr, _, err := readHeaderKeep(in)
				if err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(hdr); err != nil {
					return err
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "envdr: note: this header is NOT authenticated (inspect has no key; the chunks authenticate it): envdr open checks it")
				return nil
			},
		}
	})
}
