package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws/admin"
)

func init() { register(newLocalCmd) }

func newLocalCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "local",
		Short: "Run and control the local three-region AWS stand-in (make local-up / local-down)",
		Long: `The local stand-in serves us-east-1, eu-west-1 and ap-southeast-2 on 127.0.0.1: per region its own
KMS (envdr's KMS stand-in), SQS (fauxqs: a queue and DLQ per region) and DynamoDB (DynamoDB Local:
a replica per region, replicated as global tables are, with a lag and last writer wins) endpoints.
"envdr local down R" closes one region's endpoints (connections refused) to simulate losing it;
"envdr local up R" restores it; "envdr local lag 2s" slows replication. "envdr local fault R"
injects gray failures instead: latency, a share of server errors, or a blackhole that accepts
requests and never answers. See docs/LOCAL.md.

The control commands find the stand-in's admin endpoint in the config's local.admin
(--config local/envdr.yaml; local/envdr.yaml is also tried when --config is not given) or --admin.`,
		Args: subcommandArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	var adminURL string
	cmd.PersistentFlags().StringVar(&adminURL, "admin", os.Getenv("ENVDR_LOCAL_ADMIN"), "admin endpoint URL (default: the config's local.admin); env ENVDR_LOCAL_ADMIN")
	client := func(c *cobra.Command) (*admin.Client, error) {
		if adminURL != "" {
			return admin.NewClient(adminURL), nil
		}
		path := globalConfigPath
		if !c.Flags().Changed("config") && os.Getenv("ENVDR_CONFIG") == "" {
			if _, err := os.Stat(path); err != nil {
				path = "local/" + admin.ConfigFile
			}
		}
		cfg, err := config.Load(path)
		if err != nil {
			return nil, withCode(exitUsage, fmt.Errorf("%w (is the stand-in running? make local-up writes local/envdr.yaml)", err))
		}
		if cfg.Local == nil || cfg.Local.Admin == "" {
			return nil, usageError("config %s has no local.admin: it is not a local stand-in config", path)
		}
		return admin.NewClient(cfg.Local.Admin), nil
	}
	cmd.AddCommand(newLocalServeCmd(), newLocalRegionCmd("down", client), newLocalRegionCmd("up", client),
		newLocalStatusCmd(client), newLocalCountersCmd(client), newLocalThrottleCmd(client), newLocalFaultCmd(client), newLocalReadyCmd(client), newLocalLagCmd(client), newLocalSkewCmd(client))
	return cmd
}

type adminClientFunc func(*cobra.Command) (*admin.Client, error)

// newLocalServeCmd answers the old `envdr local serve`: the stand-in is its own command now
// (cmd/envdr-local), so that the envdr binary carries none of it.
func newLocalServeCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "serve",
		Short:              "Moved: the stand-in is its own command, envdr-local (make local-up runs it)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return usageError("the stand-in is its own command now: run envdr-local (go build -o bin/envdr-local ./cmd/envdr-local), or make local-up; see docs/LOCAL.md")
		},
	}
}

func newLocalRegionCmd(action string, client adminClientFunc) *cobra.Command {
	short := "Lose a region: close its KMS, SQS, DynamoDB and S3 endpoints (connections refused)"
	if action == "up" {
		short = "Restore a lost region on the same ports"
	}
	return &cobra.Command{
		Use:   action + " REGION",
		Short: short,
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			if action == "down" {
				err = c.Down(cmd.Context(), args[0])
			} else {
				err = c.Up(cmd.Context(), args[0])
			}
			if err != nil {
				return fmt.Errorf("region %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", args[0], action)
			return nil
		},
	}
}

func newLocalReadyCmd(client adminClientFunc) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ready",
		Short: "Exit 0 if the stand-in is up and provisioned (make local-up polls this)",
		Long: `ready asks the stand-in's admin endpoint whether it is up and provisioned. --output json prints
{"ready": true|false, "error": "..."} (docs/OUTPUT.md). Exit status: 0 ready, 1 not, 2 bad usage.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			err = c.Ready(cmd.Context())
			if asJSON {
				res := struct {
					Ready bool   `json:"ready"`
					Error string `json:"error,omitempty"`
				}{Ready: err == nil}
				if err != nil {
					res.Error = err.Error()
				}
				if jerr := writeJSON(cmd.OutOrStdout(), res); jerr != nil && err == nil {
					return jerr
				}
			}
			return err
		},
	}
	addOutputFlag(cmd, &asJSON)
	return cmd
}

func newLocalStatusCmd(client adminClientFunc) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each region's state and endpoints",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			repl, err := c.Replication(cmd.Context())
			if err != nil {
				return err
			}
			// A stand-in from before S3 has no GET /s3: then no S3 rows.
			s3st, s3err := c.S3(cmd.Context())
			if asJSON {
				out := struct {
					Regions     map[string]admin.RegionStatus `json:"regions"`
					Replication []admin.PairStats             `json:"replication"`
					S3          *admin.S3Status               `json:"s3,omitempty"`
				}{Regions: st, Replication: repl}
				if s3err == nil {
					out.S3 = &s3st
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := newTable(cmd.OutOrStdout(), "REGION", "STATE", "KMS", "SQS", "DYNAMODB", "S3", "FAULTS", "CLOCK")
			for _, r := range sortedRegions(st) {
				s := st[r]
				state := "up"
				if !s.Up {
					state = "down"
				}
				s3 := s.Endpoints.S3
				if s3 == "" {
					s3 = "-" // a stand-in from before S3
				}
				tw.row(r, state, s.Endpoints.KMS, s.Endpoints.SQS, s.Endpoints.DynamoDB, s3, faultsSummary(s.Faults), skewSummary(s.ClockSkew))
			}
			tw.row()
			tw.row("REPLICATION", "LAG", "JITTER", "REPLICATED", "CONFLICTS", "PENDING", "LATENCY LAST/MAX")
			for _, p := range repl {
				tw.row(p.From+" -> "+p.To, p.Lag, p.Jitter, p.Replicated, p.Conflicts, p.Pending, fmt.Sprintf("%.0fms / %.0fms", p.LastLatencyMs, p.MaxLatencyMs))
			}
			if s3err == nil {
				// S3 replication takes the global tables' lag and jitter (shown above).
				tw.row()
				tw.row("S3 REPLICATION", "SUPERSEDED", "", "REPLICATED", "CONFLICTS", "PENDING", "LATENCY LAST/MAX")
				for _, p := range s3st.Replication {
					tw.row(p.From+" -> "+p.To, p.Superseded, "", p.Replicated, p.Conflicts, p.Pending, fmt.Sprintf("%.0fms / %.0fms", p.LastLatencyMs, p.MaxLatencyMs))
				}
			}
			return tw.flush()
		},
	}
	addOutputFlag(cmd, &asJSON)
	return cmd
}

func newLocalLagCmd(client adminClientFunc) *cobra.Command {
	var from, to string
	var jitter time.Duration
	var seed uint64
	cmd := &cobra.Command{
		Use:   "lag [--from R1] [--to R2] [--jitter J [--seed N]] DURATION",
		Short: "Set the replication lag (default 250ms) and jitter of global tables and S3, for every pair of regions or one direction",
		Long: `Every DynamoDB write reaches the other regions' replicas DURATION after it was made (replication is
asynchronous; conflicting writes are resolved by last writer wins, as DynamoDB global tables do).
With --jitter J each item waits DURATION plus a random delay in [0, J] of its own, per
destination: the items of one transaction or batch then arrive at different times and in any
order, as on AWS, where items replicate individually (two writes of one item still arrive in
write order). Without --jitter the jitter is left as it is (0 unless set). --seed N restarts
the jitter's random source, so the same writes in the same order get the same delays.
S3 Cross-Region Replication takes the same lag and jitter, per object and destination.
The new lag applies to writes made from now on. "envdr local status" shows each direction's lag,
jitter, measured replication latency and conflicts (S3's: the admin endpoint's GET /s3).

  envdr local lag 2s                                   every pair
  envdr local lag --from us-east-1 --to eu-west-1 5s    one direction
  envdr local lag 1s --jitter 500ms                    each item 1s to 1.5s late
  envdr local lag 1s --jitter 500ms --seed 7           the same, with a replayable schedule
  envdr local lag 0 --jitter 0                         as fast as the stand-in can`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := time.ParseDuration(args[0])
			if err != nil || d < 0 {
				return usageError("DURATION %q: want a duration >= 0 such as 250ms or 2s", args[0])
			}
			withJitter := cmd.Flags().Changed("jitter")
			if withJitter && jitter < 0 {
				return usageError("--jitter %s: want a duration >= 0 such as 100ms", jitter)
			}
			var seedp *uint64
			if cmd.Flags().Changed("seed") {
				if !withJitter {
					return usageError("--seed goes with --jitter")
				}
				seedp = &seed
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			if withJitter {
				err = c.SetLagJitter(cmd.Context(), from, to, d, jitter, seedp)
			} else {
				err = c.SetLag(cmd.Context(), from, to, d)
			}
			if err != nil {
				return err
			}
			scope := "every pair of regions"
			if from != "" || to != "" {
				scope = fmt.Sprintf("%s -> %s", or(from, "*"), or(to, "*"))
			}
			if withJitter {
				fmt.Fprintf(cmd.OutOrStdout(), "replication lag %s: %s, jitter %s\n", scope, d, jitter)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "replication lag %s: %s\n", scope, d)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "only changes written in this region")
	cmd.Flags().StringVar(&to, "to", "", "only changes arriving in this region")
	cmd.Flags().DurationVar(&jitter, "jitter", 0, "each item waits the lag plus a random delay up to this (default: unchanged)")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "restart the jitter's random source from this seed (a replayable schedule)")
	return cmd
}

func newLocalSkewCmd(client adminClientFunc) *cobra.Command {
	return &cobra.Command{
		Use:   "skew REGION=OFFSET...",
		Short: "Offset regions' write clocks, which last writer wins compares (default 0)",
		Long: `Global tables resolve concurrent writes to one item by last writer wins, on the time the writing
region's clock gave the write. OFFSET moves a region's clock ahead (300ms) or behind (-300ms):
a write made later in real time in a region whose clock is behind then loses to an earlier
one. A region still never overwrites its own item with an older time. "envdr local status"
shows each region's offset.

  envdr local skew eu-west-1=-300ms us-east-1=200ms
  envdr local skew eu-west-1=0                        back in step`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			type set struct {
				region string
				skew   time.Duration
			}
			var sets []set
			for _, a := range args {
				region, v, ok := strings.Cut(a, "=")
				d, err := time.ParseDuration(v)
				if !ok || region == "" || err != nil {
					return usageError("%q: want REGION=OFFSET such as eu-west-1=-300ms", a)
				}
				sets = append(sets, set{region, d})
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			for _, s := range sets {
				if err := c.SetSkew(cmd.Context(), s.region, s.skew); err != nil {
					return fmt.Errorf("region %s: %w", s.region, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s write clock %s\n", s.region, skewSummary(s.skew.String()))
			}
			return nil
		},
	}
}

// skewSummary shows a region's clock offset: "-" when in step, else signed ("+300ms").
func skewSummary(skew string) string {
	switch {
	case skew == "" || skew == "0s":
		return "-"
	case strings.HasPrefix(skew, "-"):
		return skew
	}
	return "+" + skew
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func newLocalCountersCmd(client adminClientFunc) *cobra.Command {
	var asJSON, reset bool
	cmd := &cobra.Command{
		Use:   "counters",
		Short: "Show KMS calls per region and operation (--reset zeroes them afterwards)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			n, err := c.Counters(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				err = printJSON(cmd.OutOrStdout(), n)
			} else {
				tw := newTable(cmd.OutOrStdout(), "REGION", "OPERATION", "CALLS")
				for _, r := range sortedRegions(n) {
					ops := n[r]
					names := make([]string, 0, len(ops))
					for op := range ops {
						names = append(names, op)
					}
					sort.Strings(names)
					for _, op := range names {
						tw.row(r, op, ops[op])
					}
				}
				err = tw.flush()
			}
			if err == nil && reset {
				err = c.ResetCounters(cmd.Context())
			}
			return err
		},
	}
	addOutputFlag(cmd, &asJSON)
	cmd.Flags().BoolVar(&reset, "reset", false, "zero the counters after printing them")
	return cmd
}

func newLocalThrottleCmd(client adminClientFunc) *cobra.Command {
	return &cobra.Command{
		Use:   "throttle REGION RPS",
		Short: "Limit a region's KMS to RPS requests/s (ThrottlingException past it); 0 removes the limit",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rps, err := strconv.ParseFloat(args[1], 64)
			if err != nil || rps < 0 {
				return usageError("RPS %q: want a number >= 0", args[1])
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			if err := c.SetRateLimit(cmd.Context(), args[0], rps); err != nil {
				return fmt.Errorf("region %s: %w", args[0], err)
			}
			if rps == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%s kms: no rate limit\n", args[0])
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s kms: %g requests/s\n", args[0], rps)
			}
			return nil
		},
	}
}

func newLocalFaultCmd(client adminClientFunc) *cobra.Command {
	var (
		service, latency, errorRate string
		blackhole, clear            bool
	)
	cmd := &cobra.Command{
		Use:   "fault REGION [--service S] [--latency D[±J]] [--error-rate P] [--blackhole] | --clear",
		Short: "Inject gray failures into a region: latency, a share of server errors, a blackhole",
		Long: `fault makes a region's services fail partially instead of vanishing (compare "local down"):

  --latency D[±J]   each request waits D, plus uniform jitter in [-J, +J], before it is served
                    (1s, 200ms±50ms; 200ms+-50ms where ± is hard to type)
  --error-rate P    that share of requests (0.3 or 30%) gets a retryable server error, HTTP 500
                    or 503 in the service's own shape (KMSInternalException,
                    DependencyTimeoutException; InternalServerError, ServiceUnavailable;
                    InternalFailure, ServiceUnavailable; InternalError, SlowDown)
  --blackhole       requests are accepted and read but never answered, until the client gives up
                    (or the fault is cleared: held requests are then served)

Without --service the fault applies to the region's KMS, SQS, DynamoDB and S3; it replaces what the
service had. --clear removes the region's faults (all, or --service's). Faults stay across
"local down"/"local up"; "local status" lists them.`,
		Example: `  envdr local fault eu-west-1 --blackhole
  envdr local fault ap-southeast-2 --error-rate 30%
  envdr local fault us-east-1 --service kms --latency 200ms±50ms
  envdr local fault eu-west-1 --clear`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			region := args[0]
			if service != "" && !slices.Contains(admin.Services, service) {
				return usageError("--service %q: want kms, sqs, dynamodb or s3 (none: all four)", service)
			}
			var f admin.Fault
			var err error
			if latency != "" {
				if f.Latency, f.Jitter, err = admin.ParseLatency(latency); err != nil {
					return usageError("--latency: %v", err)
				}
			}
			if errorRate != "" {
				if f.ErrorRate, err = admin.ParseErrorRate(errorRate); err != nil {
					return usageError("--error-rate: %v", err)
				}
			}
			f.Blackhole = blackhole
			switch {
			case clear && !f.IsZero():
				return usageError("--clear takes no --latency, --error-rate or --blackhole")
			case !clear && f.IsZero():
				return usageError("nothing to inject: give --latency, --error-rate or --blackhole (or --clear)")
			}
			if err := f.Validate(); err != nil {
				return usageError("%v", err)
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			what := "all services"
			if service != "" {
				what = service
			}
			if clear {
				if err := c.ClearFaults(cmd.Context(), region, service); err != nil {
					return fmt.Errorf("region %s: %w", region, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s: faults cleared\n", region, what)
				return nil
			}
			now, err := c.SetFault(cmd.Context(), region, service, f)
			if err != nil {
				return fmt.Errorf("region %s: %w", region, err)
			}
			for _, svc := range admin.Services {
				if g, ok := now[svc]; ok {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %s\n", region, svc, g)
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&service, "service", "", "kms, sqs, dynamodb or s3 (default: all four)")
	fl.StringVar(&latency, "latency", "", "added latency D or D±J (D+-J), e.g. 1s, 200ms±50ms")
	fl.StringVar(&errorRate, "error-rate", "", "share of requests answered with a retryable 500/503: 0.3 or 30%")
	fl.BoolVar(&blackhole, "blackhole", false, "accept and read requests, never answer")
	fl.BoolVar(&clear, "clear", false, "remove the region's faults (all services, or --service)")
	return cmd
}

// faultsSummary renders a region's faults for the status table: "kms: latency 1s; sqs: …", "-".
func faultsSummary(m map[string]admin.Fault) string {
	var parts []string
	for _, svc := range admin.Services {
		if f, ok := m[svc]; ok {
			parts = append(parts, svc+": "+f.String())
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

func sortedRegions[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
