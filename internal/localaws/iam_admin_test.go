package localaws_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/localtest"
)

// The admin endpoint's /iam API: list roles (no secrets), replace a role's policy, simulate.
func TestAdminIAMEndpoints(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}}
	do := func(method, path, body string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, method, env.Admin+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	code, body := do(http.MethodGet, "/iam/roles", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "arn:aws:iam::111122223333:role/envdr-daemon")
	require.NotContains(t, body, "secret")

	q, _ := env.Queues("us-east-1")
	qarn := localaws.QueueARN("us-east-1", q)
	simulate := func(action string) map[string]any {
		b, _ := json.Marshal(map[string]string{"role": iam.RoleProducer, "region": "us-east-1", "action": action, "resource": qarn})
		code, body := do(http.MethodPost, "/iam/simulate", string(b))
		require.Equal(t, http.StatusOK, code, body)
		var out map[string]any
		require.NoError(t, json.Unmarshal([]byte(body), &out))
		return out
	}
	require.Equal(t, true, simulate("sqs:SendMessage")["allowed"])
	denied := simulate("sqs:DeleteMessage")
	require.Equal(t, false, denied["allowed"])
	require.Contains(t, denied["message"], "is not authorized to perform: sqs:DeleteMessage on resource: "+qarn)

	// Replace the producer's policy with a broken one: no SendMessage. The SDK call fails.
	code, body = do(http.MethodPut, "/iam/roles/envdr-producer/policy",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:GenerateDataKey","Resource":"*"}]}`)
	require.Equal(t, http.StatusOK, code, body)
	_, err := sqs.NewFromConfig(env.AWSConfigAs("us-east-1", iam.RoleProducer)).SendMessage(ctx,
		&sqs.SendMessageInput{QueueUrl: aws.String(q), MessageBody: aws.String("x")})
	requireDenied(t, err, "AccessDenied", iam.RoleProducer, "sqs:SendMessage", qarn)
	code, body = do(http.MethodGet, "/iam/roles/envdr-producer/policy", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "kms:GenerateDataKey")

	// Bad input is refused, not half-applied.
	code, _ = do(http.MethodPut, "/iam/roles/envdr-producer/policy", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condtion":{}}]}`)
	require.Equal(t, http.StatusBadRequest, code)
	// A policy the stand-in cannot evaluate exactly is refused, naming the operator; the role
	// keeps its policy.
	code, body = do(http.MethodPut, "/iam/roles/envdr-producer/policy",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"BinaryEquals":{"aws:SourceIp":"AA=="}}}]}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, `condition operator "BinaryEquals" is not supported`)
	code, body = do(http.MethodGet, "/iam/roles/envdr-producer/policy", "")
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, body, "BinaryEquals")
	code, _ = do(http.MethodPut, "/iam/roles/envdr-nosuch/policy", `[]`)
	require.Equal(t, http.StatusNotFound, code)
}
