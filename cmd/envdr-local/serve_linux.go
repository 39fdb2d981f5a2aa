package main

import (
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/kms"
)

func newServeCmd() *cobra.Command {
	var (
		dir, tools string
		basePort   int
		persistDDB bool
		lag        time.Duration
		jitter     time.Duration
	)
	base := localaws.DefaultBasePort
	if v := os.Getenv("ENVDR_LOCAL_BASE_PORT"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			base = n
		}
	}
	cmd := &cobra.Command{
		Use:   "envdr-local",
		Short: "Run the local three-region AWS stand-in in the foreground until SIGTERM (make local-up runs it in the background)",
		Long: `envdr-local serves us-east-1, eu-west-1 and ap-southeast-2 on 127.0.0.1: per region envdr's KMS
stand-in, SQS (fauxqs) and DynamoDB (DynamoDB Local, replicated as global tables are). It writes
DIR/envdr.yaml once keys, queues and table exist; envdr --config DIR/envdr.yaml then runs against
it, and envdr local down/up/lag/fault/... control it through its admin endpoint. See docs/LOCAL.md.`,
		Example: `  make local-install && make local-up      # the usual way: in the background, logs in local/logs/
  envdr-local --dir local --base-port 24660 # in the foreground`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if basePort < 1024 || basePort > 65535-40 {
				return usageError("--base-port %d: use 1024..65495 (see envdr-local --help)", basePort)
			}
			if jitter < 0 {
				return usageError("--jitter %s: want a duration >= 0 (see envdr-local --help)", jitter)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			authz := iam.New()
			svc, err := kms.NewService(kms.Options{Dir: filepath.Join(dir, "kms"), Regions: localaws.DefaultRegions, Authorizer: authz})
			if err != nil {
				return err
			}
			defer svc.Close()
			return localaws.Serve(ctx, localaws.ServeOptions{
				Dir: dir, Tools: tools, BasePort: basePort, Regions: localaws.DefaultRegions,
				KMS: svc.Handler, KMSHooks: svc, IAM: authz, PersistDynamoDB: persistDDB, Lag: lagOption(lag), Jitter: jitter,
				Log: cmd.ErrOrStderr(),
			})
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "local", "directory for envdr.yaml, backends.json, logs/ and KMS state (kms/)")
	cmd.Flags().StringVar(&tools, "tools", ".tools/localaws", "where scripts/localaws-install.sh installed fauxqs and DynamoDB Local")
	cmd.Flags().IntVar(&basePort, "base-port", base, "first of the fixed ports (admin; see docs/LOCAL.md); env ENVDR_LOCAL_BASE_PORT")
	cmd.Flags().BoolVar(&persistDDB, "persist-dynamodb", false, "keep DynamoDB data in DIR/dynamodb across restarts (default: in memory)")
	cmd.Flags().DurationVar(&lag, "lag", localaws.DefaultReplicationLag, "global tables' replication lag between every pair of regions (change it later with envdr local lag)")
	cmd.Flags().DurationVar(&jitter, "jitter", 0, "global tables' replication jitter: each item waits the lag plus a random share of this, so a transaction's items arrive apart and in any order")
	return cmd
}

// lagOption maps the --lag flag to ServeOptions.Lag, where 0 means the default.
func lagOption(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
