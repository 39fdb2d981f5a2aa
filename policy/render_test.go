package policy

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
)

func render(t *testing.T, path string, opts Options) map[string]*Document {
	t.Helper()
	cfg, err := config.Load(path)
	require.NoError(t, err)
	docs, err := Render(cfg, opts)
	require.NoError(t, err)
	m := map[string]*Document{}
	for _, d := range docs {
		m[d.Name] = d.Doc
	}
	return m
}

func stmt(t *testing.T, d *Document, sid string) Statement {
	t.Helper()
	for _, s := range d.Statement {
		if s.Sid == sid {
			return s
		}
	}
	t.Fatalf("no statement %s in %s", sid, d.JSON())
	return Statement{}
}

func TestRenderScopesToConfiguredARNs(t *testing.T) {
	t.Parallel()
	m := render(t, "testdata/envdr.yaml", Options{})
	require.Len(t, m, 3+len(Roles))
	const (
		us  = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
		eu  = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
		ap  = "arn:aws:kms:ap-southeast-2:111122223333:key/0987dcba-09fe-87dc-65ba-ab0987654321"
		ctx = "ForAnyValue:StringEquals"
	)
	d := m[DaemonPolicy]
	for sid, key := range map[string]string{"WrapAndVerifyUsEast1": us, "WrapAndVerifyEuWest1": eu, "WrapAndVerifyApSoutheast2": ap} {
		s := stmt(t, d, sid)
		require.Equal(t, Strings{key}, s.Resource)
		require.Equal(t, Strings{ContextKey}, s.Condition[ctx]["kms:EncryptionContextKeys"])
	}
	// The independent key never needs ReEncrypt; MRK replicas do.
	require.Equal(t, Strings{"kms:Decrypt", "kms:Encrypt"}, stmt(t, d, "WrapAndVerifyApSoutheast2").Action)
	require.Contains(t, stmt(t, d, "WrapAndVerifyEuWest1").Action, "kms:ReEncryptTo")
	// DescribeKey carries no encryption context, so its statement must not require one.
	require.Empty(t, stmt(t, d, "DescribeKeyUsEast1").Condition)
	require.Equal(t, Strings{
		"arn:aws:dynamodb:us-east-1:111122223333:table/envdr-records",
		"arn:aws:dynamodb:eu-west-1:111122223333:table/envdr-records",
		"arn:aws:dynamodb:ap-southeast-2:111122223333:table/envdr-records",
	}, stmt(t, d, "Records").Resource)
	require.Equal(t, Strings{"arn:aws:sqs:us-east-1:111122223333:envdr-events"}, stmt(t, d, "ConsumeEvents").Resource)
	// The re-send before redrive reads the redrive policy and sends to the queue (issue 11).
	require.Subset(t, stmt(t, d, "ConsumeEvents").Action, []string{"sqs:GetQueueAttributes", "sqs:SendMessage"})
	require.Subset(t, stmt(t, d, "Records").Action, []string{"dynamodb:BatchGetItem", "dynamodb:DeleteItem"})
	require.Equal(t, Strings{"arn:aws:sqs:us-east-1:111122223333:envdr-events-dlq"}, stmt(t, d, "DeadLetter").Resource)

	p := m[ProducerPolicy]
	require.Len(t, p.Statement, 4, "producers seal in every region (seal falls over), and enqueue")
	require.Equal(t, Strings{us}, stmt(t, p, "SealUsEast1").Resource)
	require.Equal(t, Strings{ap}, stmt(t, p, "SealApSoutheast2").Resource)
	require.Equal(t, Strings{"kms:GenerateDataKey"}, stmt(t, p, "SealUsEast1").Action)

	rw := m[RewrapPolicy]
	require.Equal(t, Strings{us}, stmt(t, rw, "RewrapUsEast1").Resource)
	require.Contains(t, stmt(t, rw, "Records").Action, "dynamodb:PutItem")

	o := m[OperatorPolicy]
	for _, s := range o.Statement {
		for _, a := range s.Action {
			require.NotContains(t, []string{"kms:Encrypt", "kms:ReEncryptTo", "kms:GenerateDataKey", "dynamodb:PutItem", "sqs:DeleteMessage"}, a, "operators are read-only")
		}
	}
}

func TestRenderKeyPolicies(t *testing.T) {
	t.Parallel()
	m := render(t, "testdata/envdr.yaml", Options{})
	us, eu, ap := m[KeyPolicyPrefix+"us-east-1.json"], m[KeyPolicyPrefix+"eu-west-1.json"], m[KeyPolicyPrefix+"ap-southeast-2.json"]
	require.Equal(t, string(us.JSON()), string(eu.JSON()), "an MRK's replicas carry the primary's policy")
	require.Equal(t, "envdr-mrk-1234abcd12ab34cd56ef1234567890ab", us.ID)
	require.Equal(t, "envdr-key-ap-southeast-2", ap.ID)
	require.Equal(t, AWS("arn:aws:iam::111122223333:root"), stmt(t, us, "KeyAdministration").Principal)
	require.NotContains(t, stmt(t, us, "KeyAdministration").Action, "kms:Decrypt", "administrators cannot use the key")
	seal := stmt(t, us, "ProducerSeal")
	require.Equal(t, AWS("arn:aws:iam::111122223333:role/envdr-producer"), seal.Principal)
	require.Empty(t, seal.Condition["StringEquals"]["aws:RequestedRegion"], "producers seal in every region")
	require.Equal(t, AWS("arn:aws:iam::111122223333:role/envdr-rewrap"), stmt(t, us, "RewrapKeyUse").Principal)
	deny := stmt(t, us, "DenyOtherAccounts")
	require.Equal(t, "Deny", deny.Effect)
	require.Equal(t, Strings{"111122223333"}, deny.Condition["StringNotEquals"]["kms:CallerAccount"])
}

func TestRenderAliasConfig(t *testing.T) {
	t.Parallel()
	m := render(t, "testdata/envdr-alias.yaml", Options{})
	s := stmt(t, m[DaemonPolicy], "WrapAndVerifyEuWest1")
	// An alias ARN in Resource would match the alias, not the key: scope key/* by alias instead.
	require.Equal(t, Strings{"arn:aws:kms:eu-west-1:111122223333:key/*"}, s.Resource)
	require.Equal(t, Strings{"alias/envdr"}, s.Condition["ForAnyValue:StringEquals"]["kms:ResourceAliases"])
	require.Equal(t, Strings{ContextKey}, s.Condition["ForAnyValue:StringEquals"]["kms:EncryptionContextKeys"])
	require.Equal(t, "envdr-mrk-envdr", m[KeyPolicyPrefix+"ap-southeast-2.json"].ID)
}

// A KMS key serves only the SQS queues of its own region: one queue key per region, each granted
// only through SQS in that region (issue 21).
func TestRenderQueueKeyPerRegion(t *testing.T) {
	t.Parallel()
	us := "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	eu := "arn:aws:kms:eu-west-1:111122223333:key/2234abcd-12ab-34cd-56ef-1234567890ab"
	m := render(t, "testdata/envdr.yaml", Options{QueueKeys: []string{us, eu}, DaemonRole: "arn:aws:iam::111122223333:role/w"})
	for _, name := range []string{DaemonPolicy, ProducerPolicy, GamedayPolicy} {
		for region, key := range map[string]string{"UsEast1": us, "EuWest1": eu} {
			s := stmt(t, m[name], "QueueEncryption"+region)
			require.Equal(t, Strings{key}, s.Resource)
			require.Equal(t, Conditions{"StringEquals": {
				"kms:CallerAccount": {"111122223333"},
				"kms:ViaService":    {"sqs." + config.ARNRegion(key) + ".amazonaws.com"},
			}}, s.Condition, "%s %s", name, region)
		}
	}
	require.Equal(t, AWS("arn:aws:iam::111122223333:role/w"), stmt(t, m[KeyPolicyPrefix+"us-east-1.json"], "DaemonWrapAndVerify").Principal)
	_, err := Render(loadCfg(t), Options{QueueKeys: []string{us, "arn:aws:kms:us-east-1:111122223333:key/other"}})
	require.ErrorContains(t, err, "both in us-east-1")
}

func loadCfg(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Load("testdata/envdr.yaml")
	require.NoError(t, err)
	return c
}

// Every command has a role: rewrap may list rotations (rewrap without --since), drills only
// read and open, failover only describes and moves the primary, game days seal, enqueue and
// open (issue 21). Each grant is in the identity policy and the key policy.
func TestRenderCommandRoles(t *testing.T) {
	t.Parallel()
	const us = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
	const ap = "arn:aws:kms:ap-southeast-2:111122223333:key/0987dcba-09fe-87dc-65ba-ab0987654321"
	m := render(t, "testdata/envdr.yaml", Options{})
	require.Len(t, m, 3+len(Roles))
	kp := m[KeyPolicyPrefix+"us-east-1.json"]
	role := func(n string) *Principal { return AWS("arn:aws:iam::111122223333:role/envdr-" + n) }

	require.Contains(t, stmt(t, m[RewrapPolicy], "DescribeKeyUsEast1").Action, "kms:ListKeyRotations")
	require.Contains(t, stmt(t, kp, "RewrapDescribeKey").Action, "kms:ListKeyRotations")

	dr := m[DrillPolicy]
	require.Equal(t, Strings{"kms:Decrypt"}, stmt(t, dr, "UnwrapUsEast1").Action)
	require.Equal(t, Strings{ContextKey}, stmt(t, dr, "UnwrapUsEast1").Condition["ForAnyValue:StringEquals"]["kms:EncryptionContextKeys"])
	require.Equal(t, Strings{"dynamodb:BatchGetItem", "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:Scan"}, stmt(t, dr, "ScanRecords").Action)
	require.Equal(t, role("drill"), stmt(t, kp, "DrillUnwrap").Principal)
	for _, d := range dr.Statement {
		for _, a := range d.Action {
			require.NotRegexp(t, `Put|Delete|Update|Send|Receive|Generate|Encrypt`, a, "the drill role only reads")
		}
	}

	fo := m[FailoverPolicy]
	require.Equal(t, Strings{"kms:DescribeKey", "kms:UpdatePrimaryRegion"}, stmt(t, fo, "PromoteUsEast1").Action)
	require.Equal(t, Strings{us}, stmt(t, fo, "PromoteUsEast1").Resource)
	require.Equal(t, Strings{"kms:DescribeKey"}, stmt(t, fo, "PromoteApSoutheast2").Action, "an independent key has no primary to move")
	require.Equal(t, Strings{"kms:DescribeKey", "kms:UpdatePrimaryRegion"}, stmt(t, kp, "FailoverPromote").Action)
	require.Equal(t, role("failover"), stmt(t, kp, "FailoverPromote").Principal)
	require.Equal(t, Strings{"kms:DescribeKey"}, stmt(t, m[KeyPolicyPrefix+"ap-southeast-2.json"], "FailoverPromote").Action)
	// Nobody else is granted UpdatePrimaryRegion except the key administrators.
	for _, s := range kp.Statement {
		if s.Sid != "FailoverPromote" && s.Sid != "KeyAdministration" {
			require.NotContains(t, s.Action, "kms:UpdatePrimaryRegion", s.Sid)
		}
	}

	gd := m[GamedayPolicy]
	require.Equal(t, Strings{"kms:Decrypt", "kms:GenerateDataKey"}, stmt(t, gd, "SealAndOpenApSoutheast2").Action)
	require.Equal(t, Strings{ap}, stmt(t, gd, "SealAndOpenApSoutheast2").Resource)
	require.Equal(t, Strings{"sqs:SendMessage"}, stmt(t, gd, "Enqueue").Action)
	require.Equal(t, role("gameday"), stmt(t, kp, "GamedaySealAndOpen").Principal)
}

func TestRenderErrors(t *testing.T) {
	t.Parallel()
	base := func() *config.Config {
		c, err := config.Load("testdata/envdr.yaml")
		require.NoError(t, err)
		return c
	}
	c := base()
	c.Regions[1].Key = "arn:aws:kms:eu-west-1:444455556666:key/mrk-1234abcd12ab34cd56ef1234567890ab"
	_, err := Render(c, Options{})
	require.ErrorContains(t, err, "account 444455556666")
	c = base()
	c.QueueURL = "not a url"
	_, err = Render(c, Options{})
	require.ErrorContains(t, err, "queue_url")
	_, err = Render(base(), Options{QueueKeys: []string{"alias/x"}})
	require.ErrorContains(t, err, "queue key")
}

func TestQueueARN(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://sqs.eu-west-1.amazonaws.com/111122223333/q":      "arn:aws:sqs:eu-west-1:111122223333:q",
		"https://eu-west-1.queue.amazonaws.com/111122223333/q":    "arn:aws:sqs:eu-west-1:111122223333:q",
		"http://127.0.0.1:4566/000000000000/envdr-events":         "arn:aws:sqs:us-east-1:000000000000:envdr-events",
		"http://localhost:9324/queue/envdr-events":                "arn:aws:sqs:us-east-1:999999999999:envdr-events",
		"https://sqs.us-east-1.amazonaws.com/111122223333/q.fifo": "arn:aws:sqs:us-east-1:111122223333:q.fifo",
	} {
		got, err := queueARN(in, "aws", "us-east-1", "999999999999")
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := queueARN("https://sqs.us-east-1.amazonaws.com/q", "aws", "us-east-1", "1")
	require.Error(t, err)
}

func TestParseForms(t *testing.T) {
	t.Parallel()
	a, err := Parse([]byte(`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":true}}}}`))
	require.NoError(t, err)
	require.True(t, a.Statement[0].Principal.Any)
	require.Equal(t, Strings{"true"}, a.Statement[0].Condition["Bool"]["aws:SecureTransport"])
	b, err := Canonical([]byte(`{"Statement":[{"Resource":["*"],"Action":["kms:Decrypt"],"Principal":"*","Effect":"Allow","Condition":{"Bool":{"aws:SecureTransport":"true"}}}],"Version":"2012-10-17"}`))
	require.NoError(t, err)
	require.Equal(t, string(a.JSON()), string(b), "layout, key order and string-or-list do not matter")

	for _, bad := range []string{
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condtion":{}}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Permit","Action":"kms:Decrypt","Resource":"*"}]}`,
		`{"Version":"2012-10-17","Statement":[]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"someone","Action":"kms:Decrypt"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":{"a":1}}]}`,
	} {
		_, err := Parse([]byte(bad))
		require.Error(t, err, bad)
	}
}

func TestLoadShapes(t *testing.T) {
	t.Parallel()
	doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sqs:SendMessage","Resource":"arn:aws:sqs:us-east-1:111122223333:q"}]}`
	iam, _ := json.Marshal(map[string]string{"RoleName": "r", "PolicyName": "p", "PolicyDocument": url.QueryEscape(doc)})
	kms, _ := json.Marshal(map[string]string{"PolicyName": "default", "Policy": doc})
	rendered := fmt.Sprintf(`{"a.json": %s, "b.json": %s}`, doc, doc)
	for name, in := range map[string]string{"bare": doc, "iam": string(iam), "kms": string(kms), "render": rendered} {
		ns, err := Load(name, []byte(in))
		require.NoError(t, err, name)
		require.NotEmpty(t, ns)
		require.Equal(t, "sqs:SendMessage", ns[0].Doc.Statement[0].Action[0])
		if name == "render" {
			require.Equal(t, []string{"render#a.json", "render#b.json"}, []string{ns[0].Name, ns[1].Name})
		}
	}
	for _, bad := range []string{`[]`, `{}`, `{"Policy": "{"}`, `{"x": {"Statement": 1}}`, strings.Repeat("x", 3)} {
		_, err := Load("bad", []byte(bad))
		require.Error(t, err, bad)
	}
}

// previous_keys and trusted_keys still unwrap (events in flight, older wraps): the daemon,
// operator and rewrap roles may Decrypt (and the daemon and rewrap ReEncryptFrom) and
// DescribeKey them, with the context condition; alias ARNs are scoped by kms:ResourceAliases.
// Without this the daemon's policy denied what strict keys accept (found by running the
// replicate suite as envdr-daemon on the stand-in).
func TestRenderPreviousAndTrustedKeys(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load("testdata/envdr.yaml")
	require.NoError(t, err)
	old := "arn:aws:kms:us-east-1:111122223333:key/0ld0ld00-0000-0000-0000-000000000000"
	cfg.Regions[0].PreviousKeys = []string{old}
	cfg.TrustedKeys = []string{"arn:aws:kms:eu-west-1:111122223333:alias/archive"}
	require.NoError(t, cfg.Validate())
	docs, err := Render(cfg, Options{})
	require.NoError(t, err)
	m := map[string]*Document{}
	for _, d := range docs {
		m[d.Name] = d.Doc
	}
	for name, actions := range map[string][]string{
		DaemonPolicy:   {"kms:Decrypt", "kms:ReEncryptFrom"},
		OperatorPolicy: {"kms:Decrypt"},
		RewrapPolicy:   {"kms:Decrypt", "kms:ReEncryptFrom"},
	} {
		s := stmt(t, m[name], "PreviousKeys")
		require.Equal(t, Strings(actions), s.Action, name)
		require.Equal(t, Strings{old}, s.Resource, name)
		require.Equal(t, Strings{ContextKey}, s.Condition["ForAnyValue:StringEquals"]["kms:EncryptionContextKeys"])
		require.Equal(t, Strings{old}, stmt(t, m[name], "DescribePreviousKeys").Resource)
		a := stmt(t, m[name], "PreviousAliasesEuWest1")
		require.Equal(t, Strings{"arn:aws:kms:eu-west-1:111122223333:key/*"}, a.Resource)
		require.Equal(t, Strings{"alias/archive"}, a.Condition["ForAnyValue:StringEquals"]["kms:ResourceAliases"])
	}
	require.Empty(t, Lint(docs), "render's documents lint clean")
}

// TestRenderS3DataPath: with regions[].bucket, each role gets its S3 statements (stable Sids,
// docs/POLICY.md) on every region's bucket; without buckets, none.
func TestRenderS3DataPath(t *testing.T) {
	t.Parallel()
	cfg := loadCfg(t)
	docs, err := Render(cfg, Options{})
	require.NoError(t, err)
	for _, d := range docs {
		require.NotContains(t, string(d.Doc.JSON()), "s3:", "%s without buckets", d.Name)
	}

	for i := range cfg.Regions {
		cfg.Regions[i].Bucket = "envdr-data-" + cfg.Regions[i].Name
	}
	docs, err = Render(cfg, Options{})
	require.NoError(t, err)
	by := map[string]*Document{}
	for _, d := range docs {
		by[d.Name] = d.Doc
	}
	objects := Strings{"arn:aws:s3:::envdr-data-us-east-1/*", "arn:aws:s3:::envdr-data-eu-west-1/*", "arn:aws:s3:::envdr-data-ap-southeast-2/*"}
	buckets := Strings{"arn:aws:s3:::envdr-data-us-east-1", "arn:aws:s3:::envdr-data-eu-west-1", "arn:aws:s3:::envdr-data-ap-southeast-2"}
	for _, c := range []struct {
		doc, sid string
		actions  Strings
		resource Strings
	}{
		{ProducerPolicy, "PutEnvelopes", Strings{"s3:AbortMultipartUpload", "s3:PutObject"}, objects},
		{DaemonPolicy, "ReadEnvelopeHeaders", Strings{"s3:GetObject", "s3:GetObjectVersion"}, objects},
		{OperatorPolicy, "OpenEnvelopes", Strings{"s3:GetObject"}, objects},
		{OperatorPolicy, "ListEnvelopes", Strings{"s3:ListBucket"}, buckets},
		{DrillPolicy, "OpenReplicas", Strings{"s3:GetObject"}, objects},
		{DrillPolicy, "ListReplicas", Strings{"s3:ListBucket"}, buckets},
		{GamedayPolicy, "UploadTestEnvelopes", Strings{"s3:AbortMultipartUpload", "s3:PutObject"}, objects},
		{GamedayPolicy, "OpenReplicas", Strings{"s3:GetObject"}, objects},
		{GamedayPolicy, "ListReplicas", Strings{"s3:ListBucket"}, buckets},
	} {
		s := stmt(t, by[c.doc], c.sid)
		require.Equal(t, "Allow", s.Effect, "%s %s", c.doc, c.sid)
		require.Equal(t, c.actions, s.Action, "%s %s", c.doc, c.sid)
		require.Equal(t, c.resource, s.Resource, "%s %s", c.doc, c.sid)
		require.Nil(t, s.Condition, "%s %s", c.doc, c.sid)
	}
	// Roles with no part in the data path get none, and no role may delete an envelope.
	for _, name := range []string{RewrapPolicy, FailoverPolicy} {
		require.NotContains(t, string(by[name].JSON()), "s3:", name)
	}
	for name, d := range by {
		for _, s := range d.Statement {
			require.False(t, grantsAny(s, "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutBucketPolicy"), "%s %s", name, s.Sid)
		}
	}
	require.Empty(t, Lint(docs))
}
