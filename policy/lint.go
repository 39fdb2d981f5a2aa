package policy

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// Severity of a finding.
type Severity string

// Severities: an error is a setup that defeats envelope encryption or key safety; a warning is
// one that weakens it.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Rule names, stable for --json consumers and documented in docs/POLICY.md.
const (
	RuleWildcardPrincipal   = "wildcard-principal"
	RuleWildcardResource    = "wildcard-resource"
	RuleNoContext           = "no-context-condition"
	RuleWeakContext         = "weak-context-condition"
	RuleContextWithoutID    = "context-without-envdr-id"
	RuleAdminToNonAdmin     = "admin-action-to-non-admin"
	RuleAdminInIdentity     = "admin-action-in-identity-policy"
	RuleReplicaDiverges     = "replica-diverges"
	RuleNegatedAllow        = "negated-allow"
	RuleSingleValuedOperand = "single-valued-operator"
	RuleDaemonMissingAction = "daemon-missing-action"
)

// Finding is one problem in one statement.
type Finding struct {
	Severity Severity `json:"severity"`
	Rule     string   `json:"rule"`
	// Document is the name (file) of the policy.
	Document string `json:"document"`
	// Statement is the statement's Sid, or #N (from 1) when it has none.
	Statement string `json:"statement"`
	// Reason says what is wrong and why it matters; Fix says what to change.
	Reason string `json:"reason"`
	Fix    string `json:"fix"`
}

// Linter checks KMS key policies and IAM identity policies.
type Linter struct {
	// Admins are extra principal ARNs allowed to change key policies and schedule deletion,
	// besides account roots and principals whose name contains "admin".
	Admins []string
	// Replicas treats every key policy given as one multi-Region key's primary (the first) and
	// its replicas. Without it, key policies are grouped by their Id element, which envdr sets
	// to the same value on an MRK's primary and replicas.
	Replicas bool
}

// Lint checks docs with the default Linter.
func Lint(docs []Named) []Finding { return Linter{}.Lint(docs) }

// IsKeyPolicy reports whether d is a resource policy (its statements name principals) rather
// than an identity policy.
func IsKeyPolicy(d *Document) bool {
	for _, s := range d.Statement {
		if s.Principal != nil || s.NotPrincipal != nil {
			return true
		}
	}
	return false
}

// Lint returns the findings for docs in document and statement order.
func (l Linter) Lint(docs []Named) []Finding {
	var out []Finding
	for _, n := range docs {
		key := IsKeyPolicy(n.Doc)
		for i, s := range n.Doc.Statement {
			id := s.Sid
			if id == "" {
				id = fmt.Sprintf("#%d", i+1)
			}
			add := func(sev Severity, rule, reason, fix string) {
				out = append(out, Finding{Severity: sev, Rule: rule, Document: n.Name, Statement: id, Reason: reason, Fix: fix})
			}
			if s.Effect != "Allow" {
				continue
			}
			l.statement(s, key, add)
		}
		if !key && isDaemonPolicy(n.Name) {
			out = append(out, daemonMissing(n)...)
		}
	}
	return append(out, l.replicas(docs)...)
}

// isDaemonPolicy: an identity policy named for the daemon role (iam-daemon.json, render's
// FILE#iam-daemon.json, get-role-policy output saved as envdr-daemon.json, ...).
func isDaemonPolicy(name string) bool {
	base := name
	if i := strings.LastIndexAny(base, "/#"); i >= 0 {
		base = base[i+1:]
	}
	return strings.Contains(strings.ToLower(base), "daemon")
}

// daemonMissing reports each action `envdr run` calls that no Allow statement of a daemon
// policy grants (resources and conditions aside). Without sqs:GetQueueAttributes and
// sqs:SendMessage on the queue, for instance, the re-send before redrive never runs and an
// outage pushes valid events into the DLQ.
//
// The queue's actions must be granted on the events queue itself (the resources of the
// statements granting sqs:ReceiveMessage): sqs:SendMessage on the DLQ alone does not re-send.
func daemonMissing(n Named) []Finding {
	var queues []string
	for _, s := range n.Doc.Statement {
		if s.Effect == "Allow" && grantsAny(s, "sqs:ReceiveMessage") {
			queues = append(queues, s.Resource...)
		}
	}
	grantedOn := func(a, resource string) bool {
		for _, s := range n.Doc.Statement {
			if s.Effect != "Allow" || !grantsAny(s, a) {
				continue
			}
			if resource == "" || len(s.NotResource) > 0 {
				return true
			}
			for _, r := range s.Resource {
				if r == resource || matches(r, resource) {
					return true
				}
			}
		}
		return false
	}
	var out []Finding
	for _, a := range DaemonActions() {
		granted := grantedOn(a, "")
		if granted && strings.HasPrefix(a, "sqs:") {
			for _, q := range queues {
				granted = granted && grantedOn(a, q)
			}
		}
		if !granted {
			out = append(out, Finding{Severity: SeverityError, Rule: RuleDaemonMissingAction, Document: n.Name, Statement: "-",
				Reason: "the daemon role lacks " + a + ", which envdr run calls; the call is denied at run time",
				Fix:    "allow " + a + " on the resource envdr policy render's iam-daemon.json names"})
		}
	}
	return out
}

type addFunc func(sev Severity, rule, reason, fix string)

func (l Linter) statement(s Statement, key bool, add addFunc) {
	if (len(s.NotAction) > 0 || len(s.NotResource) > 0) && grantsAny(s, "kms:Decrypt", "kms:ScheduleKeyDeletion", "kms:PutKeyPolicy") {
		add(SeverityWarning, RuleNegatedAllow,
			"Allow with NotAction or NotResource grants everything not listed, including KMS actions added later",
			"list the allowed Action and Resource values explicitly")
	}
	decrypt := grantsAny(s, "kms:Decrypt")
	all := grantsAll(s)
	if key && (decrypt || all) && wildcardPrincipal(s.Principal) && !callerRestricted(s.Condition) {
		add(SeverityError, RuleWildcardPrincipal,
			"the key policy lets any principal (\"*\") "+verb(all)+" this key, so anyone who can call KMS in any account may unwrap every data key",
			"name the envdr roles as principals (envdr policy render), or restrict with StringEquals on kms:CallerAccount or aws:PrincipalArn")
	}
	if !key && (decrypt || all) && wildcardKeyResource(s.Resource) && !aliasScoped(s.Condition) {
		add(SeverityError, RuleWildcardResource,
			"the identity policy allows "+verb(all)+" on Resource \""+strings.Join(s.Resource, "\", \"")+"\", i.e. every KMS key the account can reach, not just envdr's",
			"list the configured key ARNs (envdr policy render), or scope key/* with ForAnyValue:StringEquals on kms:ResourceAliases")
	}
	// Through kms:ViaService an AWS service (SQS SSE-KMS, ...) calls KMS with its own
	// encryption context, so envdr's context rules do not apply to such statements.
	if (decrypt || grantsAny(s, "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext")) && !viaService(s.Condition) {
		l.context(s, add)
	}
	if grantsAny(s, "kms:ScheduleKeyDeletion", "kms:PutKeyPolicy") {
		if key {
			if bad := l.nonAdmins(s.Principal); len(bad) > 0 {
				add(SeverityError, RuleAdminToNonAdmin,
					"kms:ScheduleKeyDeletion/kms:PutKeyPolicy is granted to "+strings.Join(bad, ", ")+"; a compromised workload role could then destroy the key (and every envelope with it) or rewrite who may use it",
					"grant key administration only to the account root or a dedicated key-admin role; give workloads only the use actions")
			}
		} else {
			add(SeverityWarning, RuleAdminInIdentity,
				"the identity policy grants kms:ScheduleKeyDeletion/kms:PutKeyPolicy; whoever it is attached to can destroy the key or rewrite its policy",
				"attach this policy only to key administrators, never to envdr's daemon, producer or operator roles")
		}
	}
}

// context checks the encryption-context condition of a statement that decrypts or generates
// data keys.
func (l Linter) context(s Statement, add addFunc) {
	type use struct{ op, key string }
	var uses []use
	mentionsID := false
	for op, kv := range s.Condition {
		for k, vals := range kv {
			lk := strings.ToLower(k)
			if lk != "kms:encryptioncontextkeys" && !strings.HasPrefix(lk, "kms:encryptioncontext:") {
				continue
			}
			uses = append(uses, use{op, k})
			if lk == "kms:encryptioncontext:"+ContextKey {
				mentionsID = true
			}
			if lk == "kms:encryptioncontextkeys" {
				for _, v := range vals {
					if strings.EqualFold(v, ContextKey) {
						mentionsID = true
					}
				}
			}
		}
	}
	if len(uses) == 0 {
		add(SeverityError, RuleNoContext,
			"kms:Decrypt/kms:GenerateDataKey is allowed with no encryption-context condition, so the grant covers every data key of the key, not only envdr envelopes",
			`add "Condition": {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["envdr:id"]}}`)
		return
	}
	// A condition that an empty encryption context satisfies requires nothing: ForAllValues
	// is true for an empty set, ...IfExists for a missing key; a Null check closes the gap.
	strong := false
	for _, u := range uses {
		lop := strings.ToLower(u.op)
		switch {
		case strings.HasPrefix(lop, "forallvalues:"), strings.HasSuffix(lop, "ifexists"):
		case lop == "null":
			for _, v := range s.Condition[u.op][u.key] {
				if strings.EqualFold(v, "false") {
					strong = true
				}
			}
		case strings.HasPrefix(lop, "string") || strings.HasPrefix(lop, "foranyvalue:string"):
			if strings.Contains(lop, "not") {
				continue
			}
			strong = true
			if strings.EqualFold(u.key, "kms:EncryptionContextKeys") && !strings.HasPrefix(lop, "foranyvalue:") {
				add(SeverityWarning, RuleSingleValuedOperand,
					u.op+" on the multivalued kms:EncryptionContextKeys matches only a request whose context has exactly that one key; extra context keys make it fail, and linters cannot tell the intent",
					"use ForAnyValue:StringEquals to require a key (or ForAllValues plus a Null check to limit the keys)")
			}
		}
	}
	if !strong {
		add(SeverityError, RuleWeakContext,
			"the encryption-context condition is satisfied by a request with no context at all (ForAllValues on an empty set, or ...IfExists), so it restricts nothing",
			`require the key: "ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["envdr:id"]}, or add "Null": {"kms:EncryptionContextKeys": "false"}`)
		return
	}
	if !mentionsID {
		add(SeverityWarning, RuleContextWithoutID,
			"the encryption-context condition does not require envdr:id, the key envdr binds to every envelope; the grant also covers other data encrypted under the key",
			`add "envdr:id" to the kms:EncryptionContextKeys values`)
	}
}

// replicas reports key policies that differ from the first policy of their group.
func (l Linter) replicas(docs []Named) []Finding {
	var out []Finding
	groups := map[string][]Named{}
	var order []string
	for _, n := range docs {
		if !IsKeyPolicy(n.Doc) || !mentionsKMS(n.Doc) {
			continue
		}
		g := n.Doc.ID
		if l.Replicas {
			g = "*"
		}
		if g == "" {
			continue
		}
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], n)
	}
	for _, g := range order {
		ns := groups[g]
		primary := ns[0]
		for _, r := range ns[1:] {
			for _, diff := range diffStatements(primary.Doc, r.Doc) {
				out = append(out, Finding{
					Severity: SeverityError, Rule: RuleReplicaDiverges, Document: r.Name, Statement: diff.sid,
					Reason: "this replica key policy " + diff.what + " compared with the primary's (" + primary.Name + "); a replica that differs grants or denies different principals in a failover region",
					Fix:    "apply the primary's key policy to every replica (aws kms put-key-policy, or one policy input in terraform/modules/kms-mrk)",
				})
			}
		}
	}
	return out
}

type stmtDiff struct{ sid, what string }

func diffStatements(a, b *Document) []stmtDiff {
	key := func(i int, s Statement) string {
		if s.Sid != "" {
			return s.Sid
		}
		return fmt.Sprintf("#%d", i+1)
	}
	enc := func(s Statement) []byte {
		return (&Document{Version: Version, Statement: []Statement{s}}).JSON()
	}
	am, bm := map[string]Statement{}, map[string]Statement{}
	var aorder, border []string
	for i, s := range a.Statement {
		am[key(i, s)] = s
		aorder = append(aorder, key(i, s))
	}
	for i, s := range b.Statement {
		bm[key(i, s)] = s
		border = append(border, key(i, s))
	}
	var out []stmtDiff
	for _, k := range aorder {
		bs, ok := bm[k]
		if !ok {
			out = append(out, stmtDiff{k, "lacks statement " + k})
		} else if !bytes.Equal(enc(am[k]), enc(bs)) {
			out = append(out, stmtDiff{k, "changes statement " + k})
		}
	}
	for _, k := range border {
		if _, ok := am[k]; !ok {
			out = append(out, stmtDiff{k, "adds statement " + k})
		}
	}
	if a.ID != b.ID {
		out = append(out, stmtDiff{"Id", "has Id " + b.ID})
	}
	if a.Version != b.Version {
		out = append(out, stmtDiff{"Version", "has Version " + b.Version})
	}
	return out
}

func verb(all bool) string {
	if all {
		return "every KMS action (kms:*) on"
	}
	return "kms:Decrypt on"
}

// matches reports whether an IAM action pattern (case-insensitive, * and ? wildcards) matches
// action.
func matches(pattern, action string) bool {
	re := "(?i)^" + strings.ReplaceAll(strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, ".*"), `\?`, ".") + "$"
	ok, err := regexp.MatchString(re, action)
	return err == nil && ok
}

// grantsAny reports whether an Allow statement's actions include any of the given actions.
func grantsAny(s Statement, actions ...string) bool {
	for _, a := range actions {
		if len(s.NotAction) > 0 {
			excluded := false
			for _, p := range s.NotAction {
				excluded = excluded || matches(p, a)
			}
			if !excluded {
				return true
			}
			continue
		}
		for _, p := range s.Action {
			if matches(p, a) {
				return true
			}
		}
	}
	return false
}

// grantsAll reports kms:* or * among the actions.
func grantsAll(s Statement) bool {
	for _, p := range s.Action {
		if p == "*" || strings.EqualFold(p, "kms:*") {
			return true
		}
	}
	return false
}

func anyKMS(ps Strings) bool {
	for _, p := range ps {
		if strings.HasPrefix(strings.ToLower(p), "kms:") || p == "*" {
			return true
		}
	}
	return false
}

func mentionsKMS(d *Document) bool {
	for _, s := range d.Statement {
		if anyKMS(s.Action) || anyKMS(s.NotAction) {
			return true
		}
	}
	return false
}

func wildcardPrincipal(p *Principal) bool {
	for _, v := range p.values() {
		if v == "*" {
			return true
		}
	}
	return false
}

// callerRestricted reports a positive condition that limits who the caller can be.
func callerRestricted(c Conditions) bool {
	for op, kv := range c {
		lop := strings.ToLower(op)
		if strings.Contains(lop, "not") || strings.HasPrefix(lop, "forallvalues:") || strings.HasSuffix(lop, "ifexists") {
			continue
		}
		if !strings.HasPrefix(lop, "string") && !strings.HasPrefix(lop, "arn") {
			continue
		}
		for k, vals := range kv {
			switch strings.ToLower(k) {
			case "kms:calleraccount", "aws:principalaccount", "aws:principalarn", "aws:principalorgid", "aws:userid":
				for _, v := range vals {
					if v != "*" && v != "" {
						return true
					}
				}
			}
		}
	}
	return false
}

// wildcardKeyResource reports "*" or a KMS ARN whose key part is a wildcard.
func wildcardKeyResource(rs Strings) bool {
	for _, r := range rs {
		if r == "*" {
			return true
		}
		p := strings.SplitN(r, ":", 6)
		if len(p) == 6 && (p[2] == "kms" || p[2] == "*") && strings.Contains(p[5], "*") {
			return true
		}
	}
	return false
}

// viaService reports a positive kms:ViaService condition naming specific services.
func viaService(c Conditions) bool {
	for op, kv := range c {
		lop := strings.ToLower(op)
		if lop != "stringequals" && lop != "stringequalsignorecase" && lop != "foranyvalue:stringequals" {
			continue
		}
		for k, vals := range kv {
			if strings.EqualFold(k, "kms:ViaService") && len(vals) > 0 && !strings.Contains(strings.Join(vals, ""), "*") {
				return true
			}
		}
	}
	return false
}

func aliasScoped(c Conditions) bool {
	for op, kv := range c {
		lop := strings.ToLower(op)
		if strings.Contains(lop, "not") || strings.HasPrefix(lop, "forallvalues:") {
			continue
		}
		for k := range kv {
			switch strings.ToLower(k) {
			case "kms:resourcealiases", "kms:requestalias":
				return true
			}
			if strings.HasPrefix(strings.ToLower(k), "aws:resourcetag/") {
				return true
			}
		}
	}
	return false
}

var adminName = regexp.MustCompile(`(?i)admin`)

// nonAdmins lists principals that are not key administrators.
func (l Linter) nonAdmins(p *Principal) []string {
	var bad []string
	for _, v := range p.values() {
		if l.isAdmin(v) {
			continue
		}
		bad = append(bad, v)
	}
	return bad
}

func (l Linter) isAdmin(v string) bool {
	for _, a := range l.Admins {
		if v == a {
			return true
		}
	}
	if accountRE.MatchString(v) {
		return true
	}
	p := strings.SplitN(v, ":", 6)
	if len(p) != 6 || p[2] != "iam" {
		return false
	}
	if p[5] == "root" {
		return true
	}
	name := p[5][strings.LastIndex(p[5], "/")+1:]
	return (strings.HasPrefix(p[5], "role/") || strings.HasPrefix(p[5], "user/")) && adminName.MatchString(name)
}
