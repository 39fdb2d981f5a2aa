package config

import (
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
	require.Equal(t, 16, c.Worker.Concurrency)
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
		"unknown field":         {good + "extra: 1\n", "field extra not found"},
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
