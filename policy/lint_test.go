package policy

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
)

// Every known-bad policy in testdata/bad and the exact rules it must trigger: a rule that stops
// firing, or a new one that fires by accident, fails the test.
var badCases = map[string][]string{
	"admin-action-in-identity-policy.json":        {RuleAdminInIdentity},
	"admin-action-to-non-admin.json":              {RuleAdminToNonAdmin},
	"admin-action-to-non-admin.put-wildcard.json": {RuleAdminToNonAdmin},
	"context-without-envdr-id.json":               {RuleContextWithoutID},
	// The daemon policy both generators shipped before issue 11: no sqs:GetQueueAttributes or
	// sqs:SendMessage on the queue (the re-send before redrive), no BatchGetItem/DeleteItem.
	"daemon-missing-action.iam-daemon.json":        {RuleDaemonMissingAction},
	"negated-allow.json":                           {RuleAdminInIdentity, RuleNegatedAllow},
	"no-context-condition.default-key-policy.json": {RuleNoContext},
	"no-context-condition.generate-wildcard.json":  {RuleNoContext},
	"no-context-condition.iam.json":                {RuleNoContext},
	"single-valued-operator.json":                  {RuleSingleValuedOperand},
	"weak-context-condition.forallvalues.json":     {RuleWeakContext},
	"weak-context-condition.ifexists.json":         {RuleWeakContext},
	"wildcard-principal.decrypt.json":              {RuleWildcardPrincipal},
	"wildcard-principal.open.json":                 {RuleAdminToNonAdmin, RuleNoContext, RuleWildcardPrincipal},
	"wildcard-resource.keystar.json":               {RuleAdminInIdentity, RuleWildcardResource},
	"wildcard-resource.star.json":                  {RuleWildcardResource},
	"replica-diverges":                             {RuleReplicaDiverges},
}

func rules(fs []Finding) []string {
	set := map[string]bool{}
	for _, f := range fs {
		set[f.Rule] = true
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

func TestLintKnownBad(t *testing.T) {
	t.Parallel()
	entries, err := os.ReadDir("testdata/bad")
	require.NoError(t, err)
	require.Len(t, entries, len(badCases), "every file in testdata/bad needs an entry in badCases")
	for _, e := range entries {
		want, ok := badCases[e.Name()]
		require.True(t, ok, "testdata/bad/%s has no expected rules", e.Name())
		t.Run(e.Name(), func(t *testing.T) {
			t.Parallel()
			docs, err := LoadPath(filepath.Join("testdata/bad", e.Name()))
			require.NoError(t, err)
			fs := Lint(docs)
			require.Equal(t, want, rules(fs), "findings: %+v", fs)
			for _, f := range fs {
				require.NotEmpty(t, f.Reason)
				require.NotEmpty(t, f.Fix)
				require.NotEmpty(t, f.Statement)
				require.Contains(t, []Severity{SeverityError, SeverityWarning}, f.Severity)
			}
		})
	}
}

func TestLintKnownGood(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/good/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			docs, err := LoadPath(f)
			require.NoError(t, err)
			require.Empty(t, Lint(docs))
		})
	}
}

// Everything Render produces must lint clean, for every config shape and option it supports.
func TestLintGeneratedClean(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, config string
		opts         Options
	}{
		{"key ARNs", "testdata/envdr.yaml", Options{}},
		{"alias ARNs", "testdata/envdr-alias.yaml", Options{}},
		{"custom roles and SSE-KMS queue", "testdata/envdr.yaml", Options{
			DaemonRole: "arn:aws:iam::111122223333:role/dr-worker",
			Admins:     []string{"arn:aws:iam::111122223333:role/KeyAdmin", "arn:aws:iam::111122223333:role/SecOps"},
			QueueKeys:  []string{"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Load(tc.config)
			require.NoError(t, err)
			docs, err := Render(cfg, tc.opts)
			require.NoError(t, err)
			l := Linter{Admins: tc.opts.Admins}
			require.Empty(t, l.Lint(docs))
			// Also after a JSON round trip, as `envdr policy lint` reads them.
			var reread []Named
			for _, d := range docs {
				p, err := Parse(d.Doc.JSON())
				require.NoError(t, err)
				reread = append(reread, Named{Name: d.Name, Doc: p})
			}
			require.Empty(t, l.Lint(reread))
		})
	}
}

func TestLintReplicasFlagComparesAll(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load("testdata/envdr.yaml")
	require.NoError(t, err)
	docs, err := Render(cfg, Options{})
	require.NoError(t, err)
	var keys []Named
	for _, d := range docs {
		if IsKeyPolicy(d.Doc) {
			keys = append(keys, d)
		}
	}
	require.Len(t, keys, 3)
	// Primary first: us-east-1, then the replica and the independent key.
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name > keys[j].Name })
	// By Id, the independent key is its own group: clean.
	require.Empty(t, Lint(keys))
	// Forced into one group, the independent key's policy (no ReEncrypt, other Id) diverges.
	fs := Linter{Replicas: true}.Lint(keys)
	require.Equal(t, []string{RuleReplicaDiverges}, rules(fs))
	for _, f := range fs {
		require.Equal(t, KeyPolicyPrefix+"ap-southeast-2.json", f.Document)
	}
}

func TestMatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, action string
		want            bool
	}{
		{"kms:*", "kms:Decrypt", true},
		{"*", "kms:Decrypt", true},
		{"KMS:decrypt", "kms:Decrypt", true},
		{"kms:Decrypt*", "kms:Decrypt", true},
		{"kms:GenerateDataKey*", "kms:GenerateDataKeyWithoutPlaintext", true},
		{"kms:Re*", "kms:Decrypt", false},
		{"kms:Put?eyPolicy", "kms:PutKeyPolicy", true},
		{"kms:Describe.*", "kms:DescribeKey", false},
	} {
		require.Equal(t, tc.want, matches(tc.pattern, tc.action), "%s vs %s", tc.pattern, tc.action)
	}
}

func TestLintDaemonMissingActionNamesEachAction(t *testing.T) {
	t.Parallel()
	docs, err := LoadPath("testdata/bad/daemon-missing-action.iam-daemon.json")
	require.NoError(t, err)
	var missing []string
	for _, f := range Lint(docs) {
		require.Equal(t, RuleDaemonMissingAction, f.Rule)
		missing = append(missing, f.Reason)
	}
	require.Len(t, missing, 4)
	for i, a := range []string{"dynamodb:BatchGetItem", "dynamodb:DeleteItem", "sqs:GetQueueAttributes", "sqs:SendMessage"} {
		require.Contains(t, missing[i], a)
	}
}
