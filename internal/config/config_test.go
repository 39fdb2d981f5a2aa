package config

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const good = `
home_region: us-east-1
queue_url: https://sqs.us-east-1.amazonaws.com/111122223333/q
dlq_url: https://sqs.us-east-1.amazonaws.com/111122223333/dlq
table: envdr-records
regions:
  - name: us-east-1
    key: arn:aws:kms:us-east-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef
  - name: eu-west-1
    key: arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef
    mode: mrk
  - name: ap-southeast-2
    key: arn:aws:kms:ap-southeast-2:111122223333:alias/envdr
    mode: independent
    kms_rate: 200
policy: {verify: "sample:10%"}
`

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(good))
	require.NoError(t, err)
	require.Equal(t, ModeMRK, c.Regions[0].Mode)
	require.Equal(t, 1000.0, c.Regions[0].KMSRate)
	require.Equal(t, 200.0, c.Regions[2].KMSRate)
	require.Equal(t, []string{"us-east-1", "eu-west-1", "ap-southeast-2"}, c.Policy.Required)
	p, err := c.Policy.SamplePercent()
	require.NoError(t, err)
	require.Equal(t, 10.0, p)
	require.Equal(t, 64, c.Worker.Concurrency)
	require.Equal(t, DefaultKMSTimeout, c.Worker.KMSTimeout)
	require.Equal(t, DefaultDynamoDBTimeout, c.Worker.DynamoDBTimeout)
	require.Equal(t, DefaultSQSTimeout, c.Worker.SQSTimeout)

	c, err = Parse([]byte(good + "worker: {kms_timeout: 2s, dynamodb_timeout: 1500ms, sqs_timeout: 4s}\n"))
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, c.Worker.KMSTimeout)
	require.Equal(t, 1500*time.Millisecond, c.Worker.DynamoDBTimeout)
	require.Equal(t, 4*time.Second, c.Worker.SQSTimeout)
}

func TestValidationNamesFieldAndFix(t *testing.T) {
	for name, tc := range map[string]struct{ edit, want string }{
		"key in another region": {strings.Replace(good, "eu-west-1:111122223333:key", "us-west-2:111122223333:key", 1), "regions[1].key"},
		"bad mode":              {strings.Replace(good, "mode: independent", "mode: fast", 1), "regions[2].mode"},
		"not an ARN":            {strings.Replace(good, "arn:aws:kms:ap-southeast-2:111122223333:alias/envdr", "alias/envdr", 1), "is not a KMS key or alias ARN"},
		"home not listed":       {strings.Replace(good, "home_region: us-east-1", "home_region: us-west-2", 1), "home_region"},
		"bad verify":            {strings.Replace(good, `"sample:10%"`, `"sometimes"`, 1), "policy.verify"},
		"unknown field":         {good + "extra: 1\n", "line 17: extra: unknown field; the fields here are dlq_url, enqueue_copies, enqueue_copy_delay, home_region"},
		"no table":              {strings.Replace(good, "table: envdr-records", "", 1), "table: missing"},
		"tiny kms timeout":      {good + "worker: {kms_timeout: 1ms}\n", "worker.kms_timeout"},
		"negative sqs timeout":  {good + "worker: {sqs_timeout: -1s}\n", "worker.sqs_timeout"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.edit))
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	t.Setenv("ENVDR_TABLE", "other")
	t.Setenv("ENVDR_REQUIRED", "us-east-1, eu-west-1")
	t.Setenv("ENVDR_CONCURRENCY", "4")
	c, err := Parse([]byte(good))
	require.NoError(t, err)
	require.Equal(t, "other", c.Table)
	require.Equal(t, []string{"us-east-1", "eu-west-1"}, c.Policy.Required)
	require.Equal(t, 4, c.Worker.Concurrency)
	t.Setenv("ENVDR_CONCURRENCY", "many")
	_, err = Parse([]byte(good))
	require.ErrorContains(t, err, "ENVDR_CONCURRENCY")
}

func TestTrustedKeysValidated(t *testing.T) {
	c, err := Parse([]byte(good + "trusted_keys:\n  - arn:aws:kms:eu-west-1:111122223333:key/0f0f0f0f-1111-2222-3333-444444444444\n"))
	require.NoError(t, err)
	require.Len(t, c.TrustedKeys, 1)
	for yaml, want := range map[string]string{
		"trusted_keys: [not-an-arn]":                                                           "trusted_keys[0]",
		"trusted_keys: [\"arn:aws:kms:us-west-2:111122223333:key/x\"]":                         "not among regions",
		"trusted_keys: [\"arn:aws:kms:eu-west-1:1:key/x\", \"arn:aws:kms:eu-west-1:1:key/x\"]": "listed twice",
	} {
		_, err := Parse([]byte(good + yaml + "\n"))
		require.ErrorContains(t, err, want, yaml)
	}
}

// worker.visibility below 1 s is refused: SQS counts whole seconds, so the daemon would ask for
// 0 s and every message would be redelivered at once while being worked on. Before issue 13 it
// was accepted.
func TestVisibilityBelowOneSecondRefused(t *testing.T) {
	for _, v := range []string{"500ms", "-5s"} {
		_, err := Parse([]byte(good + "worker: {visibility: " + v + "}\n"))
		require.ErrorContains(t, err, "worker.visibility", v)
	}
	c, err := Parse([]byte(good + "worker: {visibility: 1s}\n"))
	require.NoError(t, err)
	require.Equal(t, "1s", c.Worker.Visibility.String())
}

// worker.max_age: default 3 days, at least a minute, below SQS's longest retention.
func TestMaxAge(t *testing.T) {
	c, err := Parse([]byte(good))
	require.NoError(t, err)
	require.Equal(t, DefaultMaxAge, c.Worker.MaxAge)
	for _, v := range []string{"30s", "336h", "-1h"} {
		_, err := Parse([]byte(good + "worker: {max_age: " + v + "}\n"))
		require.ErrorContains(t, err, "worker.max_age", v)
	}
	c, err = Parse([]byte(good + "worker: {max_age: 24h}\n"))
	require.NoError(t, err)
	require.Equal(t, "24h0m0s", c.Worker.MaxAge.String())
}

func TestPreviousKeysValidated(t *testing.T) {
	withPrev := func(keys string) string {
		return strings.Replace(good, "    mode: mrk\n", "    mode: mrk\n    previous_keys: ["+keys+"]\n", 1)
	}
	c, err := Parse([]byte(withPrev(`"arn:aws:kms:eu-west-1:111122223333:key/0f0f0f0f-1111-2222-3333-444444444444"`)))
	require.NoError(t, err)
	require.Len(t, c.Regions[1].PreviousKeys, 1)
	for keys, want := range map[string]string{
		`"nope"`: "regions[1].previous_keys[0]",
		`"arn:aws:kms:us-east-1:111122223333:key/x"`:                                    "not eu-west-1",
		`"arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef"`: "current key",
		`"arn:aws:kms:eu-west-1:1:key/x", "arn:aws:kms:eu-west-1:1:key/x"`:              "listed twice",
	} {
		_, err := Parse([]byte(withPrev(keys)))
		require.ErrorContains(t, err, want, keys)
	}
}

// Decode errors name the field and what it takes, one problem per line, with no Go type names.
func TestDecodeErrorsAreHuman(t *testing.T) {
	bad := good + `worker:
  grace: 30
  visibility: soon
  concurrency: many
  retries: 3
`
	bad = strings.Replace(bad, "kms_rate: 200", "kms_rate: fast", 1)
	bad = strings.Replace(bad, `policy: {verify: "sample:10%"}`, `policy: {required: us-east-1, verify: all}`, 1)
	_, err := Parse([]byte(bad))
	require.Error(t, err)
	var ce *Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, []string{
		`line 15: regions[2].kms_rate: "fast" is not a number, e.g. 200 or 0.5`,
		`line 16: policy.required: "us-east-1" is not a list; write [a, b] or one "- item" per line`,
		`line 18: worker.grace: "30" is not a duration; use a number with a unit, e.g. 30s, 2m or 1h30m`,
		`line 19: worker.visibility: "soon" is not a duration; use a number with a unit, e.g. 30s, 2m or 1h30m`,
		`line 20: worker.concurrency: "many" is not a whole number, e.g. 16`,
		`line 21: worker.retries: unknown field; the fields here are attempts, concurrency, dynamodb_timeout, grace, kms_timeout, max_age, sqs_timeout, visibility`,
	}, ce.Problems)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 6, "one problem per line")
	for _, l := range lines {
		require.True(t, strings.HasPrefix(l, "config: line "), l)
		for _, goName := range []string{"time.Duration", "float64", "[]string", "!!", "config.", "unmarshal"} {
			require.NotContains(t, l, goName)
		}
	}

	_, err = Parse([]byte("home_region: [us-east-1]\n"))
	require.EqualError(t, err, "config: line 1: home_region: a list is not text; write a single value (quote it if needed)")
	_, err = Parse([]byte("regions: us-east-1\n"))
	require.ErrorContains(t, err, `line 1: regions: "us-east-1" is not a list`)
	_, err = Parse([]byte("home_region: a: b\n"))
	require.ErrorContains(t, err, "config: not valid YAML: mapping values are not allowed")
}

// Validation problems are listed one per line too, and Load names the file.
func TestValidationOnePerLine(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/envdr.yaml"
	require.NoError(t, os.WriteFile(p, []byte(strings.Replace(strings.Replace(good, "table: envdr-records", "", 1), "mode: independent", "mode: fast", 1)), 0o600))
	_, err := Load(p)
	require.Error(t, err)
	require.Equal(t, "config "+p+": table: missing; set it to the DynamoDB records table name\n"+
		"config "+p+": regions[2].mode: \"fast\" for region ap-southeast-2; use mrk or independent", err.Error())
}

// mrk_wrap: shared records the source wrap's bytes as every mrk region's wrap; only each region's
// verification proves them there, so it is refused with any verify policy but all (issue 20).
func TestSharedWrapNeedsVerifyAll(t *testing.T) {
	for _, verify := range []string{"none", "sample:10%"} {
		cfg := strings.Replace(good, `policy: {verify: "sample:10%"}`, `policy: {verify: "`+verify+`"}`, 1) + "mrk_wrap: shared\n"
		_, err := Parse([]byte(cfg))
		require.ErrorContains(t, err, "mrk_wrap", verify)
		require.ErrorContains(t, err, "policy.verify: all", verify)
	}
	cfg := strings.Replace(good, `policy: {verify: "sample:10%"}`, `policy: {verify: all}`, 1) + "mrk_wrap: shared\n"
	_, err := Parse([]byte(cfg))
	require.NoError(t, err)
}

// scrub: {budget, period} (issue 25), with ENVDR_SCRUB_BUDGET and ENVDR_SCRUB_PERIOD.
func TestScrubConfig(t *testing.T) {
	c, err := Parse([]byte(good + "scrub: {budget: 5%, period: 7d}\n"))
	require.NoError(t, err)
	b, err := c.Scrub.BudgetFraction()
	require.NoError(t, err)
	require.InDelta(t, 0.05, b, 1e-12)
	p, err := c.Scrub.PeriodDuration()
	require.NoError(t, err)
	require.Equal(t, 7*24*time.Hour, p)

	off, err := Parse([]byte(good))
	require.NoError(t, err)
	b, err = off.Scrub.BudgetFraction()
	require.NoError(t, err)
	require.Zero(t, b, "off by default")

	for _, bad := range []string{"scrub: {budget: 80%}", "scrub: {budget: lots}", "scrub: {period: 7x}", "scrub: {period: 10s}"} {
		_, err := Parse([]byte(good + bad + "\n"))
		require.ErrorContains(t, err, "scrub.", bad)
	}
	t.Setenv("ENVDR_SCRUB_BUDGET", "2%")
	t.Setenv("ENVDR_SCRUB_PERIOD", "36h")
	e, err := Parse([]byte(good))
	require.NoError(t, err)
	b, _ = e.Scrub.BudgetFraction()
	p, _ = e.Scrub.PeriodDuration()
	require.InDelta(t, 0.02, b, 1e-12)
	require.Equal(t, 36*time.Hour, p)
}
