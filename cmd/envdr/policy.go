package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/policy"
)

func init() { register(newPolicyCmd) }

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Generate and lint the KMS key policies and IAM policies of an envdr setup",
		Long: `Generate least-privilege KMS key policies and IAM policies from the envdr config, and lint
existing ones for the mistakes that defeat envelope encryption. See docs/POLICY.md.`,
		Args: subcommandArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	cmd.AddCommand(newPolicyRenderCmd(), newPolicyLintCmd())
	return cmd
}

func newPolicyRenderCmd() *cobra.Command {
	var (
		out  string
		opts policy.Options
	)
	cmd := &cobra.Command{
		Use:   "render [--out DIR]",
		Short: "Generate the key policy of every region's key and the IAM policies of the envdr roles",
		Long: `Generate, from the config, one KMS key policy per region and the IAM policies of the envdr
roles (docs/POLICY.md says what each may do and why):

  kms-key-policy.REGION.json  who may administer and use the region's key; identical across an
                              MRK's primary and replicas
  iam-daemon.json             envdr run: Decrypt/Encrypt/ReEncrypt/DescribeKey on the configured
                              keys, item reads and writes on the table, consume the queue, send
                              to the DLQ
  iam-producer.json           envdr seal --enqueue: GenerateDataKey in the home region, SendMessage
  iam-operator.json           envdr verify/open/status/doctor: Decrypt and read-only access
  iam-rewrap.json             envdr rewrap: re-make wraps (ListKeyRotations without --since),
                              rewrite records
  iam-drill.json              envdr drill (scheduled): Decrypt, scan and read records, queue depth
  iam-failover.json           envdr failover --promote: DescribeKey, UpdatePrimaryRegion
  iam-gameday.json            envdr gameday: seal, enqueue, read records back and open them

Every use of a key requires the envelope ID in the encryption context
(ForAnyValue:StringEquals kms:EncryptionContextKeys = envdr:id). The account comes from the key
ARNs; queue and table ARNs from queue_url, dlq_url and table. Role names default to
envdr-daemon, -producer, -operator, -rewrap, -drill, -failover and -gameday in that account, as
terraform/modules/iam creates them.

Without --out, all documents go to standard output as one JSON object keyed by file name.`,
		Example: `  # print every document
  envdr --config envdr.yaml policy render

  # write one file per document, then apply a key policy
  envdr --config envdr.yaml policy render --out policies/
  aws kms put-key-policy --region eu-west-1 --key-id alias/envdr --policy-name default \
      --policy file://policies/kms-key-policy.eu-west-1.json

  # your own role names, a dedicated key-admin role, SSE-KMS queues (a key per region)
  envdr policy render --daemon-role arn:aws:iam::111122223333:role/dr-worker \
      --admin arn:aws:iam::111122223333:role/KeyAdmin \
      --queue-key arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab \
      --queue-key arn:aws:kms:eu-west-1:111122223333:key/2234abcd-12ab-34cd-56ef-1234567890ab`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			docs, err := policy.Render(cfg, opts)
			if err != nil {
				return withCode(exitUsage, err)
			}
			if out == "" {
				return writeRendered(c.OutOrStdout(), docs)
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return withCode(exitFailure, fmt.Errorf("policy render: %w", err))
			}
			for _, d := range docs {
				p := filepath.Join(out, d.Name)
				if err := os.WriteFile(p, d.Doc.JSON(), 0o644); err != nil {
					return withCode(exitFailure, fmt.Errorf("policy render: %w", err))
				}
				fmt.Fprintln(c.OutOrStdout(), p)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "write one JSON file per document into DIR (created if missing)")
	f.StringVar(&opts.DaemonRole, "daemon-role", "", "daemon role ARN (default arn:aws:iam::ACCOUNT:role/envdr-daemon)")
	f.StringVar(&opts.ProducerRole, "producer-role", "", "producer role ARN (default .../role/envdr-producer)")
	f.StringVar(&opts.OperatorRole, "operator-role", "", "operator role ARN (default .../role/envdr-operator)")
	f.StringSliceVar(&opts.Admins, "admin", nil, "key administrator ARN, repeatable (default the account root)")
	f.StringVar(&opts.RewrapRole, "rewrap-role", "", "rewrap role ARN (default .../role/envdr-rewrap)")
	f.StringVar(&opts.DrillRole, "drill-role", "", "drill role ARN (default .../role/envdr-drill)")
	f.StringVar(&opts.FailoverRole, "failover-role", "", "failover role ARN (default .../role/envdr-failover)")
	f.StringVar(&opts.GamedayRole, "gameday-role", "", "game day role ARN (default .../role/envdr-gameday)")
	f.StringSliceVar(&opts.QueueKeys, "queue-key", nil, "KMS key ARN of the queues' SSE-KMS encryption, one per region, repeatable (a key serves only its own region's queues)")
	return cmd
}

// writeRendered prints all documents as one JSON object keyed by file name.
func writeRendered(w io.Writer, docs []policy.Named) error {
	m := make(map[string]*policy.Document, len(docs))
	for _, d := range docs {
		m[d.Name] = d.Doc
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return withCode(exitFailure, err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func newPolicyLintCmd() *cobra.Command {
	var (
		asJSON bool
		l      policy.Linter
	)
	cmd := &cobra.Command{
		Use:   "lint FILE|DIR...",
		Short: "Check KMS key policies and IAM policies for setups that defeat envelope encryption",
		Long: `Check KMS key policies and IAM identity policies and report each problem with its severity,
the reason it matters and the fix. Rules (docs/POLICY.md has the details):

  wildcard-principal              a key policy lets "*" use kms:* or kms:Decrypt
  wildcard-resource               an IAM policy allows kms:* or kms:Decrypt on Resource "*" (or key/*)
  no-context-condition            Decrypt/GenerateDataKey without an encryption-context condition
  weak-context-condition          a context condition that an empty context satisfies
  context-without-envdr-id        a context condition that does not require envdr:id (warning)
  single-valued-operator          StringEquals on the multivalued kms:EncryptionContextKeys (warning)
  admin-action-to-non-admin       kms:ScheduleKeyDeletion/kms:PutKeyPolicy for a non-admin principal
  admin-action-in-identity-policy the same in an IAM policy (warning: attach it to admins only)
  replica-diverges                a replica key policy differs from its primary's
  negated-allow                   Allow with NotAction/NotResource (warning)

Each FILE may be a policy document, the output of "aws kms get-key-policy" or
"aws iam get-role-policy", or the output of "envdr policy render"; a DIR means its *.json files.
Key policies with the same Id (envdr gives an MRK's primary and replicas the same one) are compared
with the first of them; --replicas compares every key policy given with the first.

Exit status: 0 no findings, 1 findings (errors or warnings), 2 a file is missing or not a policy.`,
		Example: `  # lint what render generates (must be clean)
  envdr policy render --out policies/ && envdr policy lint policies/

  # lint a live key policy and its replicas, first the primary
  for r in us-east-1 eu-west-1 ap-southeast-2; do
    aws kms get-key-policy --region $r --key-id alias/envdr --policy-name default > key.$r.json
  done
  envdr policy lint --replicas key.us-east-1.json key.eu-west-1.json key.ap-southeast-2.json

  # machine-readable findings
  envdr policy lint --json iam-daemon.json | jq '.findings[] | select(.severity == "error")'`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			var docs []policy.Named
			for _, a := range args {
				ns, err := policy.LoadPath(a)
				if err != nil {
					return withCode(exitUsage, fmt.Errorf("policy lint: %w", err))
				}
				docs = append(docs, ns...)
			}
			findings := l.Lint(docs)
			if asJSON {
				if err := writeFindingsJSON(c.OutOrStdout(), docs, findings); err != nil {
					return withCode(exitFailure, err)
				}
			} else {
				writeFindingsTable(c.OutOrStdout(), docs, findings)
			}
			if len(findings) > 0 {
				return withCode(exitFindings, lintSummaryError(findings))
			}
			return nil
		},
	}
	f := cmd.Flags()
	addOutputFlag(cmd, &asJSON)
	f.StringSliceVar(&l.Admins, "admin", nil, "principal ARN that counts as a key administrator, repeatable")
	f.BoolVar(&l.Replicas, "replicas", false, "treat all key policies given as one MRK: the first is the primary")
	return cmd
}

func writeFindingsJSON(w io.Writer, docs []policy.Named, findings []policy.Finding) error {
	names := make([]string, len(docs))
	for i, d := range docs {
		names[i] = d.Name
	}
	if findings == nil {
		findings = []policy.Finding{}
	}
	b, err := json.MarshalIndent(struct {
		Documents []string         `json:"documents"`
		Findings  []policy.Finding `json:"findings"`
	}{names, findings}, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func writeFindingsTable(w io.Writer, docs []policy.Named, findings []policy.Finding) {
	if len(findings) == 0 {
		fmt.Fprintf(w, "%d policy documents, no findings\n", len(docs))
		return
	}
	for _, f := range findings {
		fmt.Fprintf(w, "%-7s  %s  %s  statement %s\n    why: %s\n    fix: %s\n", f.Severity, f.Rule, f.Document, f.Statement, f.Reason, f.Fix)
	}
}

// lintSummaryError is the one-line error for exit status 1.
func lintSummaryError(findings []policy.Finding) error {
	var errs, warns int
	docs := map[string]bool{}
	for _, f := range findings {
		docs[f.Document] = true
		if f.Severity == policy.SeverityError {
			errs++
		} else {
			warns++
		}
	}
	names := make([]string, 0, len(docs))
	for d := range docs {
		names = append(names, d)
	}
	sort.Strings(names)
	if len(names) > 3 {
		names = append(names[:3], "...")
	}
	return errors.New("policy lint: " + fmt.Sprintf("%d errors, %d warnings in %s", errs, warns, strings.Join(names, ", ")))
}
