package sigv4_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/localaws/sigv4"
)

const (
	akid   = "AKIDEXAMPLE"
	secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
)

func secrets(k string) (string, bool) {
	if k == akid {
		return secret, true
	}
	return "", false
}

// The "get-vanilla" case of AWS's SigV4 test suite, as in the example of
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html:
// the canonical request, string to sign and signature are the published ones.
func TestAWSTestSuiteGetVanilla(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "http://example.amazonaws.com/", nil)
	r.Header.Set("X-Amz-Date", "20150830T123600Z")
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
	cr := sigv4.CanonicalRequest(r, nil, []string{"host", "x-amz-date"})
	require.Equal(t, "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", cr)
	now, _ := time.Parse(sigv4.TimeFormat, "20150830T123600Z")
	v, err := sigv4.Verify(r, nil, "us-east-1", "service", secrets, now)
	require.Nil(t, err)
	require.Equal(t, akid, v.AccessKey)
}

// signed is a KMS-like POST signed by the SDK's own signer, received as a server sees it
// (Host promoted to r.Host, a header the transport adds after signing).
func signed(t *testing.T, region, service, key, sec string, at time.Time, body []byte) *http.Request {
	t.Helper()
	out, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:24670/", bytes.NewReader(body))
	require.NoError(t, err)
	out.Header.Set("Content-Type", "application/x-amz-json-1.1")
	out.Header.Set("X-Amz-Target", "TrentService.GenerateDataKey")
	sum := sha256.Sum256(body)
	require.NoError(t, v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: key, SecretAccessKey: sec},
		out, hex.EncodeToString(sum[:]), service, region, at))
	in := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:24670/", bytes.NewReader(body))
	for k, v := range out.Header {
		in.Header[k] = v
	}
	in.Header.Set("Accept-Encoding", "gzip") // added by the transport, not signed
	return in
}

func TestVerify(t *testing.T) {
	now := time.Now()
	body := []byte(`{"KeyId":"alias/x"}`)
	cases := []struct {
		name    string
		req     *http.Request
		body    []byte
		kind    sigv4.Kind
		message string
	}{
		{name: "good", req: signed(t, "us-east-1", "kms", akid, secret, now, body), body: body},
		{name: "clock within 14 min", req: signed(t, "us-east-1", "kms", akid, secret, now.Add(-14*time.Minute), body), body: body},
		{name: "wrong secret", req: signed(t, "us-east-1", "kms", akid, "not-the-secret", now, body), body: body, kind: sigv4.Mismatch, message: "does not match"},
		{name: "body changed after signing", req: signed(t, "us-east-1", "kms", akid, secret, now, body), body: []byte(`{"KeyId":"alias/y"}`), kind: sigv4.Mismatch},
		{name: "unknown key", req: signed(t, "us-east-1", "kms", "AKIDUNKNOWN", secret, now, body), body: body, kind: sigv4.UnknownKey, message: "security token included in the request is invalid"},
		{name: "16 min old", req: signed(t, "us-east-1", "kms", akid, secret, now.Add(-16*time.Minute), body), body: body, kind: sigv4.Expired, message: "Signature expired"},
		{name: "16 min ahead", req: signed(t, "us-east-1", "kms", akid, secret, now.Add(16*time.Minute), body), body: body, kind: sigv4.Expired, message: "not yet current"},
		{name: "other region", req: signed(t, "eu-west-1", "kms", akid, secret, now, body), body: body, kind: sigv4.WrongScope, message: "region"},
		{name: "other service", req: signed(t, "us-east-1", "sqs", akid, secret, now, body), body: body, kind: sigv4.WrongScope, message: "service"},
		{name: "unsigned", req: httptest.NewRequest(http.MethodPost, "/", nil), kind: sigv4.Missing},
	}
	tampered := signed(t, "us-east-1", "kms", akid, secret, now, body)
	tampered.Header.Set("X-Amz-Target", "TrentService.Decrypt")
	cases = append(cases, struct {
		name    string
		req     *http.Request
		body    []byte
		kind    sigv4.Kind
		message string
	}{name: "signed header changed", req: tampered, body: body, kind: sigv4.Mismatch})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := sigv4.Verify(c.req, c.body, "us-east-1", "kms", secrets, now)
			if c.kind == 0 {
				require.Nil(t, err)
				require.Equal(t, akid, v.AccessKey)
				return
			}
			require.NotNil(t, err)
			require.Equal(t, c.kind, err.Kind, err.Message)
			require.True(t, strings.Contains(err.Message, c.message), err.Message)
		})
	}
}
