// Command envdr keeps envelope-encrypted data recoverable when an AWS region is lost.
//
// Each subcommand lives in its own file and registers itself with register() from an init
// function, so areas of the CLI do not touch each other's files.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap/zapcore"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// Exit codes, documented in docs/OPERATIONS.md.
const (
	exitOK       = 0
	exitFailure  = 1 // the operation failed (named in the error line)
	exitUsage    = 2 // bad flags, arguments or config
	exitFindings = 1 // checks ran and found problems (verify, drill, doctor, policy lint)
	// A command stopped by a signal (its temporary output removed): 128 + the signal number.
	exitInterrupt  = 130 // SIGINT
	exitTerminated = 143 // SIGTERM
)

// exitError carries a specific exit code with an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks err as a usage problem (exit 2).
func usageError(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// withCode wraps err with an exit code.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

var (
	globalConfigPath string
	globalLogLevel   string // --log-level / ENVDR_LOG_LEVEL, checked before every command
	subcommands      []func() *cobra.Command
)

// register adds a subcommand constructor; called from init functions.
func register(f func() *cobra.Command) { subcommands = append(subcommands, f) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "envdr",
		Short: "Keep envelope-encrypted data recoverable when an AWS region is lost",
		Long: `envdr seals data with AES-256-GCM under a KMS data key, wraps that same data key under the
KMS key of every region you name, stores the multi-wrapped record in a DynamoDB global table, and
proves that each region can open it on its own.

Try it locally with no AWS account:
  make demo                                   # three-region stand-in, seal, replicate, lose a region
  envdr --config local/envdr.yaml seal --context app=billing in.txt in.envdr
  envdr --config local/envdr.yaml open --region eu-west-1 in.envdr out.txt

Every command takes --config FILE (or ENVDR_CONFIG), --log-level (or ENVDR_LOG_LEVEL) and
--log-format console|json (or ENVDR_LOG_FORMAT; console on a terminal, JSON otherwise); every
command that prints a result takes --output json|text (--json; ENVDR_OUTPUT). seal, open and
report files never overwrite a file, never write over their input, never write binary to a
terminal, unless --force. envdr exits 0 on success, 1 on failure or findings, 2 on bad usage or
a bad config (the line ends with "(see envdr X --help)"), 130 or 143 when stopped by SIGINT or
SIGTERM (no output file is left), printing one line "envdr: error: ..." that names the region,
key and record concerned (a config with several problems: one such line per problem, each
naming the field). Results and exit codes per command: docs/OUTPUT.md.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildVersion().String(),
		Args:          subcommandArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			_, err := zapcore.ParseLevel(globalLogLevel)
			if err != nil {
				return usageError("--log-level %q: use debug, info, warn or error (see %s --help)", globalLogLevel, cmd.CommandPath())
			}
			if _, err := logFormat(globalLogFormat); err != nil {
				return usageError("--log-format %q: use console or json (see %s --help)", globalLogFormat, cmd.CommandPath())
			}
			// The AWS SDK logs through zap, in the same format and at the same level, on every
			// command; seal and open log their own steps on it too.
			if l, err := newLogger(globalLogLevel); err == nil {
				regions.SetDefaultSDKLogger(l)
				cliLog = l
			}
			return nil
		},
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.Flags().BoolP("version", "v", false, "print the version, commit and commit date (as envdr version)")
	def := os.Getenv("ENVDR_CONFIG")
	if def == "" {
		def = "envdr.yaml"
	}
	root.PersistentFlags().StringVar(&globalConfigPath, "config", def, "config file (YAML); env ENVDR_CONFIG")
	lvl := os.Getenv("ENVDR_LOG_LEVEL")
	if lvl == "" {
		lvl = "info"
	}
	root.PersistentFlags().StringVar(&globalLogLevel, "log-level", lvl, "log level of the logs on stderr: debug, info, warn or error; env ENVDR_LOG_LEVEL")
	root.PersistentFlags().StringVar(&globalLogFormat, "log-format", os.Getenv("ENVDR_LOG_FORMAT"),
		"log format on stderr: console or json (default: console on a terminal, json otherwise); env ENVDR_LOG_FORMAT")
	_ = root.RegisterFlagCompletionFunc("log-format", cobra.FixedCompletions([]string{logConsole, logJSON}, cobra.ShellCompDirectiveNoFileComp))
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError("%v (see %s --help)", err, c.CommandPath())
	})
	for _, f := range subcommands {
		root.AddCommand(f())
	}
	registerRegionCompletion(root)
	return root
}

// subcommandArgs is the Args of a command that only groups subcommands (envdr, envdr policy,
// envdr local): an unknown subcommand is a usage error (exit 2) carrying cobra's "did you mean"
// suggestions. Cobra's own check, which suggests, runs only for a root without Args and returns
// an untyped error (exit 1); a group without Args would print its help and exit 0.
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, which it sets only in its own check
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 && !cmd.DisableSuggestions {
		msg += fmt.Sprintf("; did you mean %q?", strings.Join(s, `" or "`))
	}
	return usageError("%s (see %s --help)", msg, cmd.CommandPath())
}

// exactArgs is cobra.ExactArgs with a usage error (exit 2).
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError("%s takes %d argument(s), got %d (see %s --help)", cmd.Name(), n, len(args), cmd.CommandPath())
		}
		return nil
	}
}

// noArgs is cobra.NoArgs with a usage error (exit 2).
func noArgs(cmd *cobra.Command, args []string) error { return exactArgs(0)(cmd, args) }

// usageArgs turns the error of a cobra positional-argument check into a usage error (exit 2).
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError("%s %v (see %s --help)", cmd.Name(), err, cmd.CommandPath())
		}
		return nil
	}
}

// loadConfig loads the --config file; a problem is a usage error.
func loadConfig() (*config.Config, error) {
	c, err := config.Load(globalConfigPath)
	if err != nil {
		return nil, withCode(exitUsage, err)
	}
	return c, nil
}

func main() {
	os.Exit(run(os.Args[1:]))
}

// run executes the CLI and returns the exit code; tests call it in-process.
//
// The first SIGINT or SIGTERM cancels the command's context: seal and open stop between chunks
// (removing their temporary file), verify, drill and rewrap stop scanning, the daemon drains. A
// command that then fails exits 128+signal (130 for SIGINT, 143 for SIGTERM), as a shell
// expects of a process ended by that signal. After the first signal envdr stops catching them,
// so a second one ends the process at once (the daemon keeps its own handler for its grace).
func run(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var (
		mu  sync.Mutex
		got os.Signal
	)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case s := <-sigs:
			mu.Lock()
			got = s
			mu.Unlock()
			signal.Stop(sigs)
			cancel()
		case <-done:
			signal.Stop(sigs)
		}
	}()
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	err = withHelpHint(cmd, err)
	mu.Lock()
	sig := got
	mu.Unlock()
	if sig != nil {
		code := exitInterrupt
		if sig == syscall.SIGTERM {
			code = exitTerminated
		}
		fmt.Fprintf(os.Stderr, "envdr: error: interrupted by %s: %s\n", sigName(sig), strings.ReplaceAll(err.Error(), "\n", "; "))
		return code
	}
	printError(os.Stderr, err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}

// withHelpHint makes every usage error (exit 2) end with "(see envdr X --help)", X being the
// command that refused, however deep in the code the refusal was made.
func withHelpHint(cmd *cobra.Command, err error) error {
	var ee *exitError
	if cmd == nil || !errors.As(err, &ee) || ee.code != exitUsage || strings.Contains(err.Error(), "(see envdr") {
		return err
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		return err // a config file's problems, one line each naming the field: --help would not help
	}
	return &exitError{code: exitUsage, err: fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())}
}

func sigName(s os.Signal) string {
	if s == syscall.SIGTERM {
		return "SIGTERM"
	}
	return "SIGINT"
}

// printError writes err as one line "envdr: error: ...". A config with several problems gets one
// such line per problem; any other multi-line message is joined with "; ".
func printError(w io.Writer, err error) {
	var ce *config.Error
	if errors.As(err, &ce) {
		for _, l := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(w, "envdr: error: %s\n", l)
		}
		return
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	if ad, ok := regions.FindAccessDenied(err); ok {
		// An AWS access denial: the message names principal, action and resource; say the fix.
		msg += "; fix: " + ad.Fix()
	}
	fmt.Fprintf(w, "envdr: error: %s\n", msg)
}
