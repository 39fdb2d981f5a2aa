package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/envdr/envdr/internal/config"
)

// regionFlags are the flags that name a configured region; the shell completes them from the
// config (--config, or ENVDR_CONFIG), e.g. `envdr open --region <TAB>`.
var regionFlags = map[string]bool{"region": true, "lose": true, "scan-region": true}

// registerRegionCompletion gives every region flag of every command dynamic completion.
func registerRegionCompletion(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if regionFlags[f.Name] {
				_ = c.RegisterFlagCompletionFunc(f.Name, completeRegions)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// completeRegions lists the configured regions starting with what was typed. A config that
// does not load completes nothing (the command itself will say why).
func completeRegions(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	c, err := config.Load(globalConfigPath)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	var out []string
	for _, r := range c.Regions {
		if strings.HasPrefix(r.Name, toComplete) {
			out = append(out, r.Name+"\t"+r.Mode+" key "+r.Key)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
