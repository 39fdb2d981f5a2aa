package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/recovery"
)

func init() {
	register(func() *cobra.Command {
		var (
			opts   recovery.DoctorOptions
			asJSON bool
		)
		cmd := &cobra.Command{
			Use:   "doctor",
			Short: "Check the live setup: regions, keys, rotation, replicas, table, queue, key policies",
			Long: `doctor checks, and prints as a pass/fail table with the fix for each failure:

  region-reachable  every region's KMS answers
  key-enabled       each region's key exists and is enabled (a missing mrk replica: replicate-key)
  key-rotation      automatic rotation is on (set on the primary for multi-Region keys)
  mrk-replica       in mrk mode, the home key has a replica in the region and it names the same primary
  key-policy        the key policy passes envdr's policy linter: no wildcard principal may use
                    kms:Decrypt or kms:*, Decrypt and GenerateDataKey carry an encryption-context
                    condition, and replica policies agree with the primary's
  table             the records table has a replica in every region and is ACTIVE
  queue, dlq        the event queue and its dead-letter queue exist, and the queue redrives to it

A lost region (its KMS unreachable, silent past --region-timeout, or answering 5xx) gets one
failing region-reachable row marked REGION LOST, its other checks are skipped, and every other
region is still checked; the JSON lists it under "lost_regions".

Exit status: 0 every check passed (warnings allowed), 1 a check failed, 2 bad usage or config.`,
			Example: `  envdr --config local/envdr.yaml doctor
  envdr doctor --json | jq '.checks[] | select(.status == "fail")'`,
			Args: noArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				if opts.RegionTimeout <= 0 {
					return usageError("--region-timeout %s: use a positive duration such as 5s", opts.RegionTimeout)
				}
				rep, err := recovery.Doctor(c.Context(), cfg, opts)
				if err != nil {
					return withCode(exitFailure, fmt.Errorf("doctor: %w", err))
				}
				if asJSON {
					if err := writeJSON(c.OutOrStdout(), rep); err != nil {
						return withCode(exitFailure, err)
					}
				} else {
					writeDoctorTable(c.OutOrStdout(), rep)
				}
				if !rep.Passed() {
					var names []string
					for _, ch := range rep.Checks {
						if ch.Status == recovery.StatusFail {
							names = append(names, ch.Check+" in "+ch.Region)
						}
					}
					if len(names) > 4 {
						names = append(names[:4], "...")
					}
					return withCode(exitFindings, fmt.Errorf("doctor: %d checks failed: %s", rep.Failed, strings.Join(names, ", ")))
				}
				return nil
			},
		}
		addOutputFlag(cmd, &asJSON)
		cmd.Flags().DurationVar(&opts.RegionTimeout, "region-timeout", recovery.DefaultRegionTimeout, "how long a region's KMS may take to answer before the region is marked lost")
		cmd.Flags().StringSliceVar(&opts.Admins, "admin", nil, "principal ARN that counts as a key administrator in the key-policy lint, repeatable")
		return cmd
	})
}

func writeDoctorTable(w io.Writer, r *recovery.DoctorReport) {
	t := newTable(w, "STATUS", "CHECK", "REGION", "DETAIL")
	for _, c := range r.Checks {
		t.row(strings.ToUpper(c.Status), c.Check, c.Region, c.Detail)
		if c.Status != recovery.StatusPass && c.Fix != "" {
			t.row("", "", "", "  fix: "+c.Fix)
		}
	}
	_ = t.flush()
	fmt.Fprintf(w, "%d checks: %d failed, %d warnings\n", len(r.Checks), r.Failed, r.Warnings)
	if len(r.Lost) > 0 {
		fmt.Fprintf(w, "LOST regions (not answering; their other checks skipped, the rest checked): %s\n", strings.Join(r.Lost, ", "))
	}
}
