// Package iampolicy evaluates IAM identity policies and KMS key policies the way AWS does, for
// the local stand-in. Pure: no I/O.
//
// The rules, from the IAM policy evaluation logic
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html) and
// the KMS key policy documentation
// (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-overview.html,
// https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html):
//
//   - every request starts denied (implicit deny);
//   - an explicit Deny in any applicable policy wins over any Allow;
//   - for an identity-only service call (SQS, DynamoDB without resource policies here), an
//     Allow in an identity policy is needed;
//   - for KMS, the key policy is the primary authority: an Allow from it naming the principal
//     suffices; an Allow naming the account (arn:aws:iam::ACCOUNT:root or the bare account ID)
//     delegates to IAM, so the principal's identity policy must also allow the action; without
//     either, nothing allows it (no IAM policy alone can grant use of a key).
//
// Statements support Principal (AWS ARNs, account IDs, "*"), Action and NotAction (wildcards,
// case-insensitive), Resource and NotResource (wildcards), and the condition operators String*
// (Equals, NotEquals, EqualsIgnoreCase, NotEqualsIgnoreCase, Like, NotLike), Arn* (Equals, Like,
// NotEquals, NotLike), Bool and Null, each with the IfExists suffix and the ForAnyValue: and
// ForAllValues: set qualifiers
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html,
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html).
// Numeric and date operators are not supported: a condition using one never matches.
package iampolicy

import (
	"fmt"
	"strings"

	"github.com/envdr/envdr/policy"
)

// Request is one authorization question: may Principal do Action on Resource, with Context?
type Request struct {
	// Principal is the caller's ARN as aws:PrincipalArn has it (a role ARN for roles).
	Principal string
	// Account is the caller's account ID.
	Account string
	// Action, e.g. "kms:Decrypt".
	Action string
	// Resource ARN.
	Resource string
	// Context holds the request's condition keys (names compared case-insensitively); a
	// multivalued key (kms:EncryptionContextKeys, kms:ResourceAliases) has one entry per value.
	// A key that is absent is not in the map.
	Context map[string][]string
}

// Decision is the outcome of an evaluation.
type Decision int

// Decisions.
const (
	ImplicitDeny Decision = iota
	Allow
	ExplicitDeny
)

func (d Decision) String() string {
	switch d {
	case Allow:
		return "allowed"
	case ExplicitDeny:
		return "explicit deny"
	}
	return "implicit deny"
}

// Result explains a decision.
type Result struct {
	Decision Decision
	// Why is the reason in AWS's words: "because no identity-based policy allows the kms:Decrypt
	// action", "with an explicit deny in a resource-based policy", ...
	Why string
	// Statement is the Sid (or index) of the statement that decided, for an Allow or an explicit
	// Deny.
	Statement string
}

// Allowed reports whether the request is allowed.
func (r Result) Allowed() bool { return r.Decision == Allow }

// EvaluateIdentity decides a request authorized by identity policies only.
func EvaluateIdentity(req Request, identity []*policy.Document) Result {
	if sid, ok := match(req, identity, "Deny", nil); ok {
		return Result{Decision: ExplicitDeny, Why: "with an explicit deny in an identity-based policy", Statement: sid}
	}
	if sid, ok := match(req, identity, "Allow", nil); ok {
		return Result{Decision: Allow, Statement: sid}
	}
	return Result{Decision: ImplicitDeny, Why: fmt.Sprintf("because no identity-based policy allows the %s action", req.Action)}
}

// EvaluateKMS decides a KMS request under the key policy and the caller's identity policies.
func EvaluateKMS(req Request, keyPolicy *policy.Document, identity []*policy.Document) Result {
	kp := []*policy.Document{}
	if keyPolicy != nil {
		kp = append(kp, keyPolicy)
	}
	if sid, ok := match(req, kp, "Deny", principalApplies); ok {
		return Result{Decision: ExplicitDeny, Why: "with an explicit deny in a resource-based policy", Statement: sid}
	}
	if sid, ok := match(req, identity, "Deny", nil); ok {
		return Result{Decision: ExplicitDeny, Why: "with an explicit deny in an identity-based policy", Statement: sid}
	}
	if sid, ok := match(req, kp, "Allow", principalNamed); ok {
		return Result{Decision: Allow, Statement: "key policy " + sid}
	}
	delegated, delegates := match(req, kp, "Allow", principalAccount)
	if delegates {
		if sid, ok := match(req, identity, "Allow", nil); ok {
			return Result{Decision: Allow, Statement: "key policy " + delegated + " + identity policy " + sid}
		}
		return Result{Decision: ImplicitDeny, Why: fmt.Sprintf("because no identity-based policy allows the %s action", req.Action)}
	}
	return Result{Decision: ImplicitDeny, Why: "because no resource-based policy allows the " + req.Action + " action"}
}

// principal matchers for key policy statements.
type principalMatch func(req Request, values []string) bool

// principalApplies: the statement applies to the caller (for Deny): "*", the caller's ARN, or
// the caller's account.
func principalApplies(req Request, values []string) bool {
	return principalNamed(req, values) || principalAccount(req, values)
}

// principalNamed: "*" or the caller's own ARN.
func principalNamed(req Request, values []string) bool {
	for _, v := range values {
		if v == "*" || v == req.Principal {
			return true
		}
	}
	return false
}

// principalAccount: the caller's account, as arn:PARTITION:iam::ACCOUNT:root or the bare ID.
func principalAccount(req Request, values []string) bool {
	for _, v := range values {
		if v == req.Account || (strings.HasPrefix(v, "arn:") && strings.HasSuffix(v, ":iam::"+req.Account+":root")) {
			return true
		}
	}
	return false
}

func principalValues(s policy.Statement) []string {
	if s.Principal == nil {
		return nil
	}
	if s.Principal.Any {
		return []string{"*"}
	}
	return s.Principal.ByType["AWS"]
}

// match finds the first statement with effect in docs that applies to req; pm, when not nil,
// must accept the statement's Principal (resource policies).
func match(req Request, docs []*policy.Document, effect string, pm principalMatch) (string, bool) {
	for _, d := range docs {
		if d == nil {
			continue
		}
		for i, s := range d.Statement {
			if s.Effect != effect {
				continue
			}
			if pm != nil && (s.NotPrincipal != nil || !pm(req, principalValues(s))) {
				continue
			}
			if !actionMatches(s, req.Action) || !resourceMatches(s, req.Resource) || !conditionsMatch(s.Condition, req.Context) {
				continue
			}
			sid := s.Sid
			if sid == "" {
				sid = fmt.Sprintf("#%d", i)
			}
			return sid, true
		}
	}
	return "", false
}

func actionMatches(s policy.Statement, action string) bool {
	if len(s.NotAction) > 0 {
		return !anyGlob(s.NotAction, action, true)
	}
	return anyGlob(s.Action, action, true)
}

func resourceMatches(s policy.Statement, resource string) bool {
	if len(s.NotResource) > 0 {
		return !anyGlob(s.NotResource, resource, false)
	}
	if len(s.Resource) == 0 {
		return true // key policies may omit it; the resource is the key
	}
	return anyGlob(s.Resource, resource, false)
}

func anyGlob(patterns []string, v string, fold bool) bool {
	for _, p := range patterns {
		if Glob(p, v, fold) {
			return true
		}
	}
	return false
}

// Glob matches v against a pattern with * (any run) and ? (one character), as IAM's Action,
// Resource and StringLike do.
func Glob(pattern, v string, fold bool) bool {
	if fold {
		pattern, v = strings.ToLower(pattern), strings.ToLower(v)
	}
	// Iterative wildcard match with backtracking to the last star.
	p, s, star, mark := 0, 0, -1, 0
	for s < len(v) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == v[s]):
			p++
			s++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, s
			p++
		case star >= 0:
			p = star + 1
			mark++
			s = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// lookup finds a condition key case-insensitively.
func lookup(ctx map[string][]string, key string) ([]string, bool) {
	if v, ok := ctx[key]; ok {
		return v, true
	}
	for k, v := range ctx {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

// conditionsMatch: every operator block and every key in it must hold (AND); the values listed
// for one key are alternatives (OR), or for a negated operator all must fail to match (NOR).
func conditionsMatch(c policy.Conditions, ctx map[string][]string) bool {
	for op, keys := range c {
		for key, want := range keys {
			got, present := lookup(ctx, key)
			if !condition(op, want, got, present) {
				return false
			}
		}
	}
	return true
}

func condition(op string, want, got []string, present bool) bool {
	set := ""
	if q, rest, ok := strings.Cut(op, ":"); ok {
		set, op = q, rest
	}
	ifExists := strings.HasSuffix(op, "IfExists")
	op = strings.TrimSuffix(op, "IfExists")
	if op == "Null" {
		// "true": the key must be absent; "false": present (an empty set counts as absent).
		absent := !present || len(got) == 0
		for _, w := range want {
			if strings.EqualFold(w, "true") == absent {
				return true
			}
		}
		return false
	}
	cmp, negated, ok := comparator(op)
	if !ok {
		return false
	}
	one := func(v string) bool {
		for _, w := range want {
			if cmp(w, v) {
				return true
			}
		}
		return false
	}
	switch set {
	case "ForAllValues":
		// Every value in the request must satisfy the operator; true for an absent key or an
		// empty set (which is why it needs a Null check).
		for _, v := range got {
			if one(v) == negated {
				return false
			}
		}
		return true
	case "ForAnyValue":
		// At least one value in the request satisfies the operator; false when absent.
		for _, v := range got {
			if one(v) != negated {
				return true
			}
		}
		return false
	}
	if !present || len(got) == 0 {
		// A missing key does not match; negated operators are then true; IfExists is true.
		return ifExists || negated
	}
	// A single-valued operator: the (first) value must match one of the listed values; a
	// negated operator must match none of them.
	for _, v := range got {
		if one(v) != negated {
			return true
		}
	}
	return false
}

// comparator returns how an operator compares a policy value with a request value, and whether
// it is negated (the comparator is then the positive form).
func comparator(op string) (func(want, got string) bool, bool, bool) {
	c, ok := comparators[op]
	return c.cmp, c.negated, ok
}

func equal(w, g string) bool     { return w == g }
func equalFold(w, g string) bool { return strings.EqualFold(w, g) }
func like(w, g string) bool      { return Glob(w, g, false) }

// comparators are the supported condition operators (without IfExists and the set qualifiers).
var comparators = map[string]struct {
	cmp     func(want, got string) bool
	negated bool
}{
	"StringEquals":              {equal, false},
	"ArnEquals":                 {equal, false},
	"StringNotEquals":           {equal, true},
	"ArnNotEquals":              {equal, true},
	"StringEqualsIgnoreCase":    {equalFold, false},
	"StringNotEqualsIgnoreCase": {equalFold, true},
	"StringLike":                {like, false},
	"ArnLike":                   {like, false},
	"StringNotLike":             {like, true},
	"ArnNotLike":                {like, true},
	"Bool":                      {equalFold, false},
}
