package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
)

func init() {
	register(func() *cobra.Command {
		var (
			promote string
			asJSON  bool
		)
		cmd := &cobra.Command{
			Use:   "failover --promote REGION",
			Short: "Move the multi-Region key's primary to REGION (UpdatePrimaryRegion), so the key is managed from there",
			Long: `Sealing, replication and opening need no failover: every region seals, runs its own daemon and
opens on its own (docs/RUNBOOK.md). What stays with one region is the management of the
multi-Region key: rotation and new replicas are done from its primary. failover --promote REGION
makes REGION's replica the primary (KMS UpdatePrimaryRegion) and waits until it reports itself
primary; envdr doctor shows where the primary is.

KMS moves a primary only through its current Region (and with both keys Enabled), so while that
Region is lost, failover fails with an error that says so: the replicas keep working, and only
rotation and new replicas wait. Promote once the old primary's Region answers, or move the key's
administration to a region of your choice ahead of time.

Exit status: 0 promoted (or REGION already primary), 1 failure, 2 bad usage.`,
			Example: `  envdr --config local/envdr.yaml failover --promote eu-west-1
  envdr doctor | grep mrk-primary`,
			Args: noArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				if promote == "" {
					return usageError("--promote REGION is required (see envdr failover --help)")
				}
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				if _, ok := cfg.Region(promote); !ok {
					return usageError("--promote %s: not among the configured regions %v", promote, cfg.RegionNames())
				}
				res, err := recovery.Promote(c.Context(), cfg, promote, regions.Options{})
				if err != nil {
					return withCode(exitFailure, fmt.Errorf("failover: %w", err))
				}
				if asJSON {
					return printJSON(c.OutOrStdout(), res)
				}
				if !res.Changed {
					fmt.Fprintf(c.OutOrStdout(), "%s is already the primary region of %s\n", res.To, res.Key)
					return nil
				}
				fmt.Fprintf(c.OutOrStdout(), "promoted %s: the primary of %s moved from %s (%.1fs)\n", res.To, res.Key, res.From, res.WaitSeconds)
				return nil
			},
		}
		cmd.Flags().StringVar(&promote, "promote", "", "the region whose replica becomes the primary")
		addOutputFlag(cmd, &asJSON)
		return cmd
	})
}
