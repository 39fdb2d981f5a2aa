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
// Statements support Principal and, with Deny, NotPrincipal (AWS ARNs, account IDs, "*"),
// Action and NotAction (wildcards, case-insensitive), Resource and NotResource (wildcards), and
// the condition operators String* (Equals, NotEquals, EqualsIgnoreCase, NotEqualsIgnoreCase,
// Like, NotLike), Arn* (Equals, Like, NotEquals, NotLike), Numeric* and Date* (Equals,
// NotEquals, LessThan, LessThanEquals, GreaterThan, GreaterThanEquals), Bool, IpAddress,
// NotIpAddress and Null, each (but Null) with the IfExists suffix and the ForAnyValue: and
// ForAllValues: set qualifiers
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html,
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html).
// Validate refuses, when a policy is loaded, any element or operator outside that set (Binary,
// say), naming it: a condition the stand-in cannot evaluate must never be silently ignored, since
// a Deny that never matches allows what AWS would refuse.
package iampolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/envdr/envdr/policy"
)

// Request is one authorization question: may Principal do Action on Resource, with Context?
type Request struct {
	// Principal is the caller's ARN as aws:PrincipalArn has it (a role ARN for roles).
	Principal string
	// Session is the caller's assumed-role session ARN
	// (arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION), if it has one; a policy may name it.
	Session string
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
		if v == "*" || v == req.Principal || (req.Session != "" && v == req.Session) {
			return true
		}
	}
	return false
}

// notPrincipalExcepts reports whether a NotPrincipal list spares the caller. AWS checks a role
// session's account first, then its role, then the session, so the list must name the account
// and the role (or the session): naming only the role leaves the Deny on the whole account
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notprincipal.html,
// "Key points").
func notPrincipalExcepts(req Request, values []string) bool {
	for _, v := range values {
		if v == "*" {
			return true
		}
	}
	if !principalAccount(req, values) {
		return false
	}
	if strings.Contains(req.Principal, ":role/") || req.Session != "" {
		for _, v := range values {
			if v == req.Principal || (req.Session != "" && v == req.Session) {
				return true
			}
		}
		return false
	}
	return true
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

// principalMatches: a statement with Principal applies when pm accepts it; one with NotPrincipal
// applies to everyone NotPrincipal does not spare.
func principalMatches(req Request, s policy.Statement, pm principalMatch) bool {
	if s.NotPrincipal != nil {
		np := s.NotPrincipal.ByType["AWS"]
		if s.NotPrincipal.Any {
			np = []string{"*"}
		}
		return !notPrincipalExcepts(req, np)
	}
	return pm(req, principalValues(s))
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
			if pm != nil && !principalMatches(req, s, pm) {
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

// numeric compares as numbers; a value that is not a number matches nothing.
func numeric(cmp func(w, g float64) bool) func(w, g string) bool {
	return func(w, g string) bool {
		wf, err1 := strconv.ParseFloat(strings.TrimSpace(w), 64)
		gf, err2 := strconv.ParseFloat(strings.TrimSpace(g), 64)
		return err1 == nil && err2 == nil && cmp(wf, gf)
	}
}

// date compares instants; a value that is not a date matches nothing.
func date(cmp func(w, g float64) bool) func(w, g string) bool {
	return func(w, g string) bool {
		wt, ok1 := ParseDate(w)
		gt, ok2 := ParseDate(g)
		return ok1 && ok2 && cmp(float64(wt.UnixNano()), float64(gt.UnixNano()))
	}
}

// dateLayouts are the ISO 8601 forms IAM accepts in Date conditions ("W3C implementations of
// the ISO 8601 date format", reference_policies_elements_condition_operators.html#Conditions_Date).
var dateLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04Z07:00", "2006-01-02T15Z07:00", "2006-01-02", "2006-01", "2006"}

// ParseDate reads a Date condition value: epoch seconds (aws:EpochTime) or ISO 8601 (aws:CurrentTime).
func ParseDate(v string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && len(v) > 4 {
		return time.Unix(n, 0), true
	}
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, v); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// ipAddress: the request's address lies in the policy's CIDR block (or is the policy's address).
func ipAddress(w, g string) bool {
	p, ok := parsePrefix(w)
	a, err := netip.ParseAddr(strings.TrimSpace(g))
	return ok && err == nil && p.Contains(a.Unmap())
}

func parsePrefix(v string) (netip.Prefix, bool) {
	v = strings.TrimSpace(v)
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(v); err == nil {
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), true
	}
	return netip.Prefix{}, false
}

func eq(w, g float64) bool { return g == w }
func lt(w, g float64) bool { return g < w }
func le(w, g float64) bool { return g <= w }
func gt(w, g float64) bool { return g > w }
func ge(w, g float64) bool { return g >= w }

type operator struct {
	cmp     func(want, got string) bool
	negated bool
	// valid checks a policy value when the policy is loaded.
	valid func(string) bool
}

func anyValue(string) bool { return true }
func isNumber(v string) bool {
	_, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	return err == nil
}
func isDate(v string) bool { _, ok := ParseDate(v); return ok }
func isBool(v string) bool { return strings.EqualFold(v, "true") || strings.EqualFold(v, "false") }
func isIP(v string) bool   { _, ok := parsePrefix(v); return ok }

// comparators are the supported condition operators (without IfExists and the set qualifiers;
// Null is handled apart), from the IAM JSON policy reference's "Condition operators" page: the
// request's value is compared with each policy value ("the value in the request is less than
// the value in the policy" for NumericLessThan, and so on).
var comparators = map[string]operator{
	"StringEquals":              {equal, false, anyValue},
	"ArnEquals":                 {equal, false, anyValue},
	"StringNotEquals":           {equal, true, anyValue},
	"ArnNotEquals":              {equal, true, anyValue},
	"StringEqualsIgnoreCase":    {equalFold, false, anyValue},
	"StringNotEqualsIgnoreCase": {equalFold, true, anyValue},
	"StringLike":                {like, false, anyValue},
	"ArnLike":                   {like, false, anyValue},
	"StringNotLike":             {like, true, anyValue},
	"ArnNotLike":                {like, true, anyValue},
	"Bool":                      {equalFold, false, isBool},
	"NumericEquals":             {numeric(eq), false, isNumber},
	"NumericNotEquals":          {numeric(eq), true, isNumber},
	"NumericLessThan":           {numeric(lt), false, isNumber},
	"NumericLessThanEquals":     {numeric(le), false, isNumber},
	"NumericGreaterThan":        {numeric(gt), false, isNumber},
	"NumericGreaterThanEquals":  {numeric(ge), false, isNumber},
	"DateEquals":                {date(eq), false, isDate},
	"DateNotEquals":             {date(eq), true, isDate},
	"DateLessThan":              {date(lt), false, isDate},
	"DateLessThanEquals":        {date(le), false, isDate},
	"DateGreaterThan":           {date(gt), false, isDate},
	"DateGreaterThanEquals":     {date(ge), false, isDate},
	"IpAddress":                 {ipAddress, false, isIP},
	"NotIpAddress":              {ipAddress, true, isIP},
}

// Kind says where a policy document is used: the elements allowed differ.
type Kind int

// Kinds of policy.
const (
	// Identity policies (attached to a role) have no Principal or NotPrincipal.
	Identity Kind = iota + 1
	// Resource policies (KMS key policies) need Principal or, with Deny only, NotPrincipal.
	Resource
)

// Validate refuses a policy the stand-in cannot evaluate exactly as AWS would: an unknown or
// unsupported condition operator or set qualifier (the error names it), IfExists on Null, a
// value the operator cannot read, a Principal in an identity policy, and NotPrincipal with Allow
// (reference_policies_elements_notprincipal.html: "Using it with Allow is not supported").
func Validate(d *policy.Document, kind Kind) error {
	if d == nil {
		return errors.New("no policy document")
	}
	for i, s := range d.Statement {
		sid := s.Sid
		if sid == "" {
			sid = fmt.Sprintf("#%d", i)
		}
		switch kind {
		case Identity:
			if s.Principal != nil || s.NotPrincipal != nil {
				return fmt.Errorf("statement %s: an identity policy cannot name a Principal or NotPrincipal", sid)
			}
		case Resource:
			if s.Principal == nil && s.NotPrincipal == nil {
				return fmt.Errorf("statement %s: a key policy statement needs a Principal", sid)
			}
			if s.NotPrincipal != nil && s.Effect != "Deny" {
				return fmt.Errorf("statement %s: NotPrincipal is supported only with \"Effect\": \"Deny\"", sid)
			}
		}
		if len(s.Action) > 0 && len(s.NotAction) > 0 {
			return fmt.Errorf("statement %s: both Action and NotAction", sid)
		}
		if len(s.Action) == 0 && len(s.NotAction) == 0 {
			return fmt.Errorf("statement %s: no Action or NotAction", sid)
		}
		for op, keys := range s.Condition {
			if err := validOperator(op, keys); err != nil {
				return fmt.Errorf("statement %s: %w", sid, err)
			}
		}
	}
	return nil
}

func validOperator(op string, keys map[string]policy.Strings) error {
	base := op
	if q, rest, ok := strings.Cut(op, ":"); ok {
		if q != "ForAnyValue" && q != "ForAllValues" {
			return fmt.Errorf("condition operator %q: unknown set qualifier %q (want ForAnyValue or ForAllValues)", op, q)
		}
		base = rest
	}
	if base == "Null" {
		for k, vs := range keys {
			for _, v := range vs {
				if !isBool(v) {
					return fmt.Errorf("condition operator %q: key %s: value %q is not true or false", op, k, v)
				}
			}
		}
		return nil
	}
	c, ok := comparators[strings.TrimSuffix(base, "IfExists")]
	if !ok {
		return fmt.Errorf("condition operator %q is not supported by the local stand-in", op)
	}
	for k, vs := range keys {
		for _, v := range vs {
			if !c.valid(v) {
				return fmt.Errorf("condition operator %q: key %s: value %q cannot be read by this operator", op, k, v)
			}
		}
	}
	return nil
}
