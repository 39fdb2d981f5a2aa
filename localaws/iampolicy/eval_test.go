package iampolicy_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/localaws/iampolicy"
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
		{"unsupported operator never matches", `{"NumericLessThan":{"kms:CallerAccount":"1"}}`, nil, false},
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
