package iampolicy_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws/iampolicy"
	"github.com/envdr/envdr/policy"
)

const (
	acct   = "111122223333"
	daemon = "arn:aws:iam::111122223333:role/envdr-daemon"
	key    = "arn:aws:kms:us-east-1:111122223333:key/mrk-1"
)

func doc(t *testing.T, s string) *policy.Document {
	t.Helper()
	d, err := policy.Parse([]byte(s))
	require.NoError(t, err)
	return d
}

func req(action string, ctx map[string][]string) iampolicy.Request {
	if ctx == nil {
		ctx = map[string][]string{}
	}
	ctx["aws:PrincipalArn"] = []string{daemon}
	ctx["kms:CallerAccount"] = []string{acct}
	ctx["aws:RequestedRegion"] = []string{"us-east-1"}
	return iampolicy.Request{Principal: daemon, Account: acct, Action: action, Resource: key, Context: ctx}
}

var withID = map[string][]string{"kms:EncryptionContextKeys": {"envdr:id", "app"}, "kms:EncryptionContext:envdr:id": {"e1"}, "kms:EncryptionContext:app": {"billing"}}

// Conditions and operators, as
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
// and https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
// define them.
func TestConditions(t *testing.T) {
	cases := []struct {
		name, cond string
		ctx        map[string][]string
		want       bool
	}{
		{"ForAnyValue requires the key in the context", `{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"envdr:id"}}`, withID, true},
		{"ForAnyValue is false for an empty context", `{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"envdr:id"}}`, nil, false},
		{"ForAllValues is true for an empty context", `{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":"envdr:id"}}`, nil, true},
		{"ForAllValues fails on an extra key", `{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":"envdr:id"}}`, withID, false},
		{"ForAllValues lists every key", `{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["envdr:id","app"]}}`, withID, true},
		{"Null false needs the key", `{"Null":{"kms:EncryptionContextKeys":"false"}}`, nil, false},
		{"Null true when absent", `{"Null":{"kms:EncryptionContextKeys":"true"}}`, nil, true},
		{"EncryptionContext:KEY value", `{"StringEquals":{"kms:EncryptionContext:app":"billing"}}`, withID, true},
		{"EncryptionContext:KEY other value", `{"StringEquals":{"kms:EncryptionContext:app":"hr"}}`, withID, false},
		{"StringLike", `{"StringLike":{"kms:EncryptionContext:envdr:id":"e*"}}`, withID, true},
		{"missing key does not match", `{"StringEquals":{"kms:EncryptionContext:team":"x"}}`, withID, false},
		{"missing key: negated operator is true", `{"StringNotEquals":{"kms:EncryptionContext:team":"x"}}`, withID, true},
		{"IfExists on a missing key is true", `{"StringEqualsIfExists":{"kms:EncryptionContext:team":"x"}}`, withID, true},
		{"RequestedRegion", `{"StringEquals":{"aws:RequestedRegion":"eu-west-1"}}`, nil, false},
		{"CallerAccount", `{"StringEquals":{"kms:CallerAccount":"111122223333"}}`, nil, true},
		{"PrincipalArn ArnLike", `{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/envdr-*"}}`, nil, true},
		{"PrincipalArn ArnNotLike", `{"ArnNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/envdr-*"}}`, nil, false},
		{"values OR", `{"StringEquals":{"aws:RequestedRegion":["eu-west-1","us-east-1"]}}`, nil, true},
		{"keys AND", `{"StringEquals":{"aws:RequestedRegion":"us-east-1","kms:CallerAccount":"999999999999"}}`, nil, false},
		{"negated values NOR", `{"StringNotEquals":{"aws:RequestedRegion":["eu-west-1","us-east-1"]}}`, nil, false},
		{"Bool", `{"Bool":{"aws:SecureTransport":"true"}}`, map[string][]string{"aws:SecureTransport": {"true"}}, true},
		{"case-insensitive key names", `{"StringEquals":{"KMS:CALLERACCOUNT":"111122223333"}}`, nil, true},
		{"NumericLessThan compares numbers", `{"NumericLessThan":{"kms:CallerAccount":"1"}}`, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := doc(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":`+c.cond+`}]}`)
			ctx := map[string][]string{}
			for k, v := range c.ctx {
				ctx[k] = v
			}
			got := iampolicy.EvaluateIdentity(req("kms:Decrypt", ctx), []*policy.Document{p})
			require.Equal(t, c.want, got.Allowed(), got)
		})
	}
}

// The evaluation logic of
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
// and, for KMS, https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-overview.html.
func TestEvaluateKMS(t *testing.T) {
	rootUse := `{"Version":"2012-10-17","Statement":[{"Sid":"Root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`
	named := `{"Version":"2012-10-17","Statement":[{"Sid":"Daemon","Effect":"Allow","Principal":{"AWS":"` + daemon + `"},"Action":"kms:Decrypt","Resource":"*"}]}`
	denyOther := `{"Version":"2012-10-17","Statement":[{"Sid":"Root","Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"},
		{"Sid":"DenyNoContext","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"Null":{"kms:EncryptionContextKeys":"true"}}}]}`
	allowDecrypt := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Decrypt","kms:Encrypt"],"Resource":"` + key + `"}]}`
	allowWildcard := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Re*","Resource":"arn:aws:kms:us-east-1:111122223333:key/*"}]}`
	denyDecrypt := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Sid":"No","Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}`
	otherKey := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"arn:aws:kms:us-east-1:111122223333:key/other"}]}`
	cases := []struct {
		name, keyPolicy string
		identity        []string
		action          string
		ctx             map[string][]string
		want            iampolicy.Decision
	}{
		{"root delegation + identity allow", rootUse, []string{allowDecrypt}, "kms:Decrypt", nil, iampolicy.Allow},
		{"root delegation, no identity policy", rootUse, nil, "kms:Decrypt", nil, iampolicy.ImplicitDeny},
		{"root delegation, identity on another key", rootUse, []string{otherKey}, "kms:Decrypt", nil, iampolicy.ImplicitDeny},
		{"identity wildcard action and resource", rootUse, []string{allowWildcard}, "kms:ReEncryptFrom", nil, iampolicy.Allow},
		{"action is case-insensitive", rootUse, []string{allowDecrypt}, "KMS:decrypt", nil, iampolicy.Allow},
		{"key policy names the principal: no IAM needed", named, nil, "kms:Decrypt", nil, iampolicy.Allow},
		{"key policy names the principal for another action", named, nil, "kms:Encrypt", nil, iampolicy.ImplicitDeny},
		{"identity allow without key policy delegation", named, []string{allowDecrypt}, "kms:Encrypt", nil, iampolicy.ImplicitDeny},
		{"explicit deny in key policy wins", denyOther, []string{allowDecrypt}, "kms:Decrypt", nil, iampolicy.ExplicitDeny},
		{"key policy deny does not apply with a context", denyOther, []string{allowDecrypt}, "kms:Decrypt", withID, iampolicy.Allow},
		{"explicit deny in identity policy wins", rootUse, []string{denyDecrypt}, "kms:Decrypt", nil, iampolicy.ExplicitDeny},
		{"no key policy", "", []string{allowDecrypt}, "kms:Decrypt", nil, iampolicy.ImplicitDeny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var kp *policy.Document
			if c.keyPolicy != "" {
				kp = doc(t, c.keyPolicy)
			}
			var ids []*policy.Document
			for _, s := range c.identity {
				ids = append(ids, doc(t, s))
			}
			ctx := map[string][]string{}
			for k, v := range c.ctx {
				ctx[k] = v
			}
			got := iampolicy.EvaluateKMS(req(c.action, ctx), kp, ids)
			require.Equal(t, c.want, got.Decision, got)
		})
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		p, v string
		want bool
	}{
		{"*", "", true}, {"kms:*", "kms:Decrypt", true}, {"kms:Re*To", "kms:ReEncryptTo", true},
		{"kms:Re*To", "kms:ReEncryptFrom", false}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{"arn:aws:sqs:*:*:envdr-*", "arn:aws:sqs:eu-west-1:000000000000:envdr-events", true},
		{"*a*b", "xaxbxb", true}, {"*a*b", "xaxbxc", false},
	} {
		require.Equal(t, c.want, iampolicy.Glob(c.p, c.v, false), "%s ~ %s", c.p, c.v)
	}
}

// The Numeric, Date, Bool, IpAddress and Null operators, as the IAM JSON policy reference's
// "Condition operators" page defines them
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html:
// #Conditions_Numeric, #Conditions_Date, #Conditions_Boolean, #Conditions_IPAddress,
// #Conditions_Null, #Conditions_IfExists), and the set qualifiers on them
// (reference_policies_condition-single-vs-multi-valued-context-keys.html).
func TestTypedOperators(t *testing.T) {
	now := map[string][]string{
		"aws:CurrentTime":           {"2026-12-07T16:00:00Z"},
		"aws:EpochTime":             {"1796659200"}, // 2026-12-07T16:00:00Z
		"aws:SourceIp":              {"127.0.0.1"},
		"aws:SecureTransport":       {"false"},
		"aws:MultiFactorAuthAge":    {"300"},
		"kms:EncryptionContextKeys": {"envdr:id"},
	}
	cases := []struct {
		name, cond string
		want       bool
	}{
		{"NumericEquals", `{"NumericEquals":{"aws:MultiFactorAuthAge":"300"}}`, true},
		{"NumericNotEquals", `{"NumericNotEquals":{"aws:MultiFactorAuthAge":["300","1"]}}`, false},
		{"NumericLessThan: the request's value is less than the policy's", `{"NumericLessThan":{"aws:MultiFactorAuthAge":"3600"}}`, true},
		{"NumericLessThan false", `{"NumericLessThan":{"aws:MultiFactorAuthAge":"300"}}`, false},
		{"NumericLessThanEquals", `{"NumericLessThanEquals":{"aws:MultiFactorAuthAge":"300"}}`, true},
		{"NumericGreaterThan", `{"NumericGreaterThan":{"aws:MultiFactorAuthAge":"299.5"}}`, true},
		{"NumericGreaterThanEquals", `{"NumericGreaterThanEquals":{"aws:MultiFactorAuthAge":"301"}}`, false},
		{"Numeric on a missing key", `{"NumericLessThan":{"aws:TokenIssueTime":"1"}}`, false},
		{"NumericLessThanIfExists on a missing key", `{"NumericLessThanIfExists":{"aws:TokenIssueTime":"1"}}`, true},
		{"DateLessThan with ISO 8601", `{"DateLessThan":{"aws:CurrentTime":"2027-01-01T00:00:00Z"}}`, true},
		{"DateLessThan in the past", `{"DateLessThan":{"aws:CurrentTime":"2020-01-01T00:00:00Z"}}`, false},
		{"DateGreaterThan with a date only", `{"DateGreaterThan":{"aws:CurrentTime":"2026-12-07"}}`, true},
		{"DateGreaterThan with an offset", `{"DateGreaterThan":{"aws:CurrentTime":"2026-12-07T17:30:00+02:00"}}`, true},
		{"DateGreaterThanEquals with epoch seconds", `{"DateGreaterThanEquals":{"aws:EpochTime":"1796659200"}}`, true},
		{"DateEquals mixes epoch and ISO 8601", `{"DateEquals":{"aws:EpochTime":"2026-12-07T16:00:00Z"}}`, true},
		{"DateNotEquals", `{"DateNotEquals":{"aws:CurrentTime":"2026-12-07T16:00:00Z"}}`, false},
		{"DateLessThanEquals", `{"DateLessThanEquals":{"aws:CurrentTime":"2026-12-07T16:00:00Z"}}`, true},
		{"Bool false", `{"Bool":{"aws:SecureTransport":"false"}}`, true},
		{"Bool true", `{"Bool":{"aws:SecureTransport":"true"}}`, false},
		{"BoolIfExists on a missing key", `{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}`, true},
		{"IpAddress in a CIDR block", `{"IpAddress":{"aws:SourceIp":"127.0.0.0/8"}}`, true},
		{"IpAddress of a single address", `{"IpAddress":{"aws:SourceIp":"127.0.0.1"}}`, true},
		{"IpAddress outside", `{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","192.0.2.0/24"]}}`, false},
		{"NotIpAddress outside every block", `{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","192.0.2.0/24"]}}`, true},
		{"NotIpAddress inside one block", `{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","127.0.0.0/8"]}}`, false},
		{"IpAddress IPv6", `{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}`, false},
		{"Null false: present", `{"Null":{"aws:SourceIp":"false"}}`, true},
		{"Null true: absent", `{"Null":{"aws:SourceVpc":"true"}}`, true},
		{"Null true on a present key", `{"Null":{"aws:SourceIp":"true"}}`, false},
		{"ForAnyValue with a typed operator", `{"ForAnyValue:NumericGreaterThan":{"aws:MultiFactorAuthAge":"100"}}`, true},
		{"ForAllValues with a typed operator on an absent key", `{"ForAllValues:DateLessThan":{"aws:TokenIssueTime":"2020-01-01"}}`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := doc(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":`+c.cond+`}]}`)
			require.NoError(t, iampolicy.Validate(p, iampolicy.Identity))
			ctx := map[string][]string{}
			for k, v := range now {
				ctx[k] = v
			}
			got := iampolicy.EvaluateIdentity(req("kms:Decrypt", ctx), []*policy.Document{p})
			require.Equal(t, c.want, got.Allowed(), got)
		})
	}
}

// A policy the stand-in cannot evaluate exactly is refused when it is loaded, naming what it
// cannot evaluate, instead of a condition that silently never matches.
func TestValidate(t *testing.T) {
	id := func(cond string) string {
		return `{"Version":"2012-10-17","Statement":[{"Sid":"S","Effect":"Deny","Action":"kms:Decrypt","Resource":"*","Condition":` + cond + `}]}`
	}
	cases := []struct {
		name, doc string
		kind      iampolicy.Kind
		err       string
	}{
		{"Binary operators are not supported", id(`{"BinaryEquals":{"aws:SourceIp":"QmluYXJ5"}}`), iampolicy.Identity, `condition operator "BinaryEquals" is not supported`},
		{"a typo in an operator", id(`{"StringEqual":{"aws:SourceIp":"x"}}`), iampolicy.Identity, `"StringEqual"`},
		{"unknown set qualifier", id(`{"ForSomeValues:StringEquals":{"aws:SourceIp":"x"}}`), iampolicy.Identity, `unknown set qualifier "ForSomeValues"`},
		{"NullIfExists does not exist", id(`{"NullIfExists":{"aws:SourceIp":"true"}}`), iampolicy.Identity, `"NullIfExists"`},
		{"Null takes true or false", id(`{"Null":{"aws:SourceIp":"yes"}}`), iampolicy.Identity, `not true or false`},
		{"a date that is not a date", id(`{"DateLessThan":{"aws:CurrentTime":"tomorrow"}}`), iampolicy.Identity, `"tomorrow"`},
		{"a number that is not a number", id(`{"NumericLessThan":{"aws:MultiFactorAuthAge":"ten"}}`), iampolicy.Identity, `"ten"`},
		{"an address that is not an address", id(`{"IpAddress":{"aws:SourceIp":"10.0.0.0/99"}}`), iampolicy.Identity, `"10.0.0.0/99"`},
		{"Bool takes true or false", id(`{"Bool":{"aws:SecureTransport":"1"}}`), iampolicy.Identity, `"1"`},
		{"no Principal in an identity policy", `{"Version":"2012-10-17","Statement":[{"Sid":"S","Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"}]}`, iampolicy.Identity, "cannot name a Principal"},
		{"a key policy statement needs a Principal", `{"Version":"2012-10-17","Statement":[{"Sid":"S","Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}]}`, iampolicy.Resource, "needs a Principal"},
		{"NotPrincipal only with Deny", `{"Version":"2012-10-17","Statement":[{"Sid":"S","Effect":"Allow","NotPrincipal":{"AWS":"` + daemon + `"},"Action":"kms:Decrypt","Resource":"*"}]}`, iampolicy.Resource, "NotPrincipal is supported only with"},
		{"supported operators pass", id(`{"DateGreaterThan":{"aws:CurrentTime":"2026-01-01T00:00:00Z"},"ForAnyValue:StringLike":{"kms:EncryptionContextKeys":"envdr:*"},"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"},"Null":{"kms:EncryptionContextKeys":"true"},"NumericGreaterThanEqualsIfExists":{"aws:MultiFactorAuthAge":"1"}}`), iampolicy.Identity, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := iampolicy.Validate(doc(t, c.doc), c.kind)
			if c.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.err)
			require.ErrorContains(t, err, "statement S")
		})
	}
}

// A key policy Deny with NotPrincipal applies to every principal it does not spare; sparing a
// role session takes the account and the role (or the session)
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notprincipal.html).
func TestNotPrincipal(t *testing.T) {
	const session = "arn:aws:sts::111122223333:assumed-role/envdr-daemon/envdr-local"
	const operator = "arn:aws:iam::111122223333:role/envdr-operator"
	kp := func(notPrincipal string) string {
		return `{"Version":"2012-10-17","Statement":[
			{"Sid":"Use","Effect":"Allow","Principal":{"AWS":"` + daemon + `"},"Action":"kms:Decrypt","Resource":"*"},
			{"Sid":"OnlyOperator","Effect":"Deny","NotPrincipal":{"AWS":` + notPrincipal + `},"Action":"kms:Decrypt","Resource":"*"}]}`
	}
	cases := []struct {
		name, notPrincipal string
		want               iampolicy.Decision
	}{
		{"another role: the caller is denied", `["arn:aws:iam::111122223333:root","` + operator + `"]`, iampolicy.ExplicitDeny},
		{"the caller's role and account: spared", `["arn:aws:iam::111122223333:root","` + daemon + `"]`, iampolicy.Allow},
		{"the caller's session and account: spared", `["111122223333","` + session + `"]`, iampolicy.Allow},
		{"the caller's role without its account: denied", `["` + daemon + `"]`, iampolicy.ExplicitDeny},
		{"the account without the role: denied", `"arn:aws:iam::111122223333:root"`, iampolicy.ExplicitDeny},
		{"another account: denied", `["arn:aws:iam::999999999999:root","` + daemon + `"]`, iampolicy.ExplicitDeny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := doc(t, kp(c.notPrincipal))
			require.NoError(t, iampolicy.Validate(d, iampolicy.Resource))
			r := req("kms:Decrypt", nil)
			r.Session = session
			got := iampolicy.EvaluateKMS(r, d, nil)
			require.Equal(t, c.want, got.Decision, got)
			if c.want == iampolicy.ExplicitDeny {
				require.Equal(t, "OnlyOperator", got.Statement)
			}
		})
	}
}
