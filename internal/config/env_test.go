package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// yamlPaths lists the YAML path of every leaf field of t (list indexes as N), skipping local.
func yamlPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "local" {
			continue
		}
		path := prefix + name
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Struct && ft.String() != "time.Duration":
			out = append(out, yamlPaths(ft, path+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, yamlPaths(ft.Elem(), path+".N.")...)
		default:
			out = append(out, path)
		}
	}
	return out
}

// Every config field (but the stand-in's local section) has an ENVDR_ override named after its
// YAML path: the library reads the tags, and this catches a field added without one.
func TestEveryFieldHasAnEnvOverride(t *testing.T) {
	var want []string
	for _, p := range yamlPaths(reflect.TypeOf(Config{}), "") {
		want = append(want, EnvPrefix+strings.ToUpper(strings.ReplaceAll(p, ".", "_")))
	}
	require.ElementsMatch(t, want, EnvNames())
	require.Contains(t, EnvNames(), "ENVDR_REGIONS_N_ENDPOINTS_STS")
	require.Greater(t, len(want), 20)
}

func TestEnvOverridesEveryKind(t *testing.T) {
	for k, v := range map[string]string{
		"ENVDR_WORKER_MAX_AGE":               "2h",
		"ENVDR_WORKER_GRACE":                 "45s",
		"ENVDR_REGIONS_2_KMS_RATE":           "250.5",
		"ENVDR_REGIONS_1_ENDPOINTS_KMS":      "http://127.0.0.1:9999",
		"ENVDR_REGIONS_0_PREVIOUS_KEYS":      "arn:aws:kms:us-east-1:111122223333:key/old-1, arn:aws:kms:us-east-1:111122223333:key/old-2",
		"ENVDR_POLICY_QUORUM":                "2",
		"ENVDR_POLICY_REQUIRED":              "us-east-1",
		"ENVDR_TRUSTED_KEYS":                 "arn:aws:kms:eu-west-1:111122223333:key/extra",
		"ENVDR_CONCURRENCY":                  "99", // legacy name ...
		"ENVDR_WORKER_CONCURRENCY":           "7",  // ... the new one wins
		"ENVDR_VERIFY":                       "none",
		"ENVDR_LOCAL_ADMIN":                  "http://127.0.0.1:1", // not a config override: local has none
		"ENVDR_SOMETHING_ELSE_ENTIRELY":      "ignored",
		"ENVDR_REGIONS_1_QUEUE_URL":          "https://sqs.eu-west-1.amazonaws.com/111122223333/q-eu",
		"ENVDR_REGIONS_0_ENDPOINTS_STS":      "http://127.0.0.1:9998",
		"ENVDR_HOME_REGION":                  "us-east-1",
		"ENVDR_REGIONS_2_MODE":               "mrk",
		"ENVDR_REGIONS_2_KEY":                "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-other",
		"ENVDR_REGIONS_0_NAME":               "us-east-1",
		"ENVDR_WORKER_VISIBILITY":            "90s",
		"ENVDR_WORKER_ATTEMPTS":              "3",
		"ENVDR_DLQ_URL":                      "https://sqs.us-east-1.amazonaws.com/111122223333/dlq2",
		"ENVDR_QUEUE_URL":                    "https://sqs.us-east-1.amazonaws.com/111122223333/q2",
		"ENVDR_TABLE":                        "t2",
		"ENVDR_REGIONS_1_DLQ_URL":            "https://sqs.eu-west-1.amazonaws.com/111122223333/dlq-eu",
		"ENVDR_REGIONS_1_ENDPOINTS_SQS":      "http://127.0.0.1:9997",
		"ENVDR_REGIONS_1_ENDPOINTS_DYNAMODB": "http://127.0.0.1:9996",
	} {
		t.Setenv(k, v)
	}
	c, err := Parse([]byte(good))
	require.NoError(t, err)
	require.Equal(t, "2h0m0s", c.Worker.MaxAge.String())
	require.Equal(t, "45s", c.Worker.Grace.String())
	require.Equal(t, 250.5, c.Regions[2].KMSRate)
	require.Equal(t, "http://127.0.0.1:9999", c.Regions[1].Endpoints.KMS)
	require.Equal(t, []string{"arn:aws:kms:us-east-1:111122223333:key/old-1", "arn:aws:kms:us-east-1:111122223333:key/old-2"}, c.Regions[0].PreviousKeys)
	require.Equal(t, 2, c.Policy.Quorum)
	require.Equal(t, []string{"us-east-1"}, c.Policy.Required)
	require.Equal(t, 7, c.Worker.Concurrency)
	require.Equal(t, VerifyNone, c.Policy.Verify)
	require.Nil(t, c.Local, "no override creates the stand-in section (its fake credentials)")
	require.Equal(t, "t2", c.Table)
	require.Equal(t, "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-other", c.Regions[2].Key)
	// What the overrides did not name is as in the file.
	require.Equal(t, "eu-west-1", c.Regions[1].Name)
	require.Equal(t, ModeMRK, c.Regions[1].Mode)
	_, err = yaml.Marshal(c)
	require.NoError(t, err)
}

// A bad override names the variable and what it wants, never a Go type; several, one line each.
func TestEnvOverrideErrorsAreHuman(t *testing.T) {
	t.Setenv("ENVDR_WORKER_GRACE", "30")
	t.Setenv("ENVDR_REGIONS_1_KMS_RATE", "fast")
	t.Setenv("ENVDR_REGIONS_7_KEY", "arn:aws:kms:us-east-1:111122223333:key/x")
	_, err := Parse([]byte(good))
	require.Error(t, err)
	msg := err.Error()
	require.Contains(t, msg, `ENVDR_WORKER_GRACE="30": want a number with a unit, e.g. 30s`)
	require.Contains(t, msg, `ENVDR_REGIONS_1_KMS_RATE="fast": want a number`)
	require.Contains(t, msg, "ENVDR_REGIONS_7_KEY: regions[7] does not exist (the config lists 3 regions)")
	require.Len(t, strings.Split(strings.TrimSpace(msg), "\n"), 3, msg)
	for _, goType := range []string{"float64", "time.Duration", "int64", "parse error on field"} {
		require.NotContains(t, msg, goType)
	}
}
