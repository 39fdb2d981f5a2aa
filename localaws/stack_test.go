package localaws

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/stretchr/testify/require"
)

// These tests need no emulators: fake backends stand behind the stack.

func fakeBackend(t *testing.T, name string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, name+" "+r.Host)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func fakeStack(t *testing.T) *Stack {
	kms := func(region string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "kms "+region) })
	}
	s, err := NewStack(StackOptions{KMS: kms, Backends: Backends{SQS: fakeBackend(t, "sqs").URL, DynamoDB: fakeBackend(t, "ddb").URL}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// signedPost posts "{}" signed by the SDK's SigV4 signer as the admin for region and service
// (unsigned when region is empty).
func signedPost(t *testing.T, c *http.Client, url, region, service string) (*http.Response, string, error) {
	return signedPostAs(t, c, url, region, service, AccessKey, SecretKey)
}

func signedPostAs(t *testing.T, c *http.Client, url, region, service, ak, sk string) (*http.Response, string, error) {
	return signedPostAt(t, c, url, region, service, ak, sk, time.Now())
}

func signedPostAt(t *testing.T, c *http.Client, url, region, service, ak, sk string, at time.Time) (*http.Response, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
	require.NoError(t, err)
	req.Header.Set("X-Amz-Target", "AmazonSQS.ListQueues")
	if region != "" {
		sum := sha256.Sum256([]byte("{}"))
		require.NoError(t, v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: ak, SecretAccessKey: sk},
			req, hex.EncodeToString(sum[:]), service, region, at))
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b), nil
}

func TestStackRoutesAndGuardsRegions(t *testing.T) {
	s := fakeStack(t)
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	ep, err := s.Endpoints("eu-west-1")
	require.NoError(t, err)

	_, body, err := signedPost(t, c, ep.KMS, "eu-west-1", "kms")
	require.NoError(t, err)
	require.Equal(t, "kms eu-west-1", body)
	// The proxy keeps the client's Host: fauxqs builds queue URLs from it.
	_, body, err = signedPost(t, c, ep.SQS, "eu-west-1", "sqs")
	require.NoError(t, err)
	require.Equal(t, "sqs "+strings.TrimPrefix(ep.SQS, "http://"), body)

	// Each service's code and HTTP status for requests signed wrongly: KMS and DynamoDB answer
	// 400, SQS 403 (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html).
	for _, tc := range []struct {
		url, region, service, ak, sk, code string
		status                             int
	}{
		{ep.DynamoDB, "us-east-1", "dynamodb", AccessKey, SecretKey, "InvalidSignatureException", 400},
		{ep.DynamoDB, "eu-west-1", "kms", AccessKey, SecretKey, "InvalidSignatureException", 400}, // right region, wrong service
		{ep.DynamoDB, "", "", AccessKey, SecretKey, "MissingAuthenticationTokenException", 400},
		{ep.DynamoDB, "eu-west-1", "dynamodb", "AKIAUNKNOWN000000000", SecretKey, "UnrecognizedClientException", 400},
		{ep.DynamoDB, "eu-west-1", "dynamodb", AccessKey, "wrong-secret", "InvalidSignatureException", 400},
		{ep.KMS, "eu-west-1", "kms", "AKIAUNKNOWN000000000", SecretKey, "UnrecognizedClientException", 400},
		{ep.KMS, "eu-west-1", "kms", AccessKey, "wrong-secret", "InvalidSignatureException", 400},
		{ep.KMS, "us-east-1", "kms", AccessKey, SecretKey, "InvalidSignatureException", 400},
		{ep.SQS, "eu-west-1", "sqs", "AKIAUNKNOWN000000000", SecretKey, "InvalidClientTokenId", 403},
		{ep.SQS, "eu-west-1", "sqs", AccessKey, "wrong-secret", "SignatureDoesNotMatch", 403},
		{ep.SQS, "us-east-1", "sqs", AccessKey, SecretKey, "SignatureDoesNotMatch", 403},
	} {
		resp, body, err := signedPostAs(t, c, tc.url, tc.region, tc.service, tc.ak, tc.sk)
		require.NoError(t, err)
		require.Equal(t, tc.status, resp.StatusCode, body)
		var e struct {
			Type string `json:"__type"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &e), body)
		_, code, _ := strings.Cut(e.Type, "#")
		if code == "" {
			code = e.Type
		}
		require.Equal(t, tc.code, code, body)
	}

	// X-Amz-Date more than 15 minutes off: "Signature expired", in each service's code.
	for _, tc := range []struct {
		url, code string
		status    int
	}{{ep.KMS, "InvalidSignatureException", 400}, {ep.DynamoDB, "InvalidSignatureException", 400}, {ep.SQS, "SignatureDoesNotMatch", 403}} {
		svc := map[string]string{ep.KMS: "kms", ep.DynamoDB: "dynamodb", ep.SQS: "sqs"}[tc.url]
		resp, body, err := signedPostAt(t, c, tc.url, "eu-west-1", svc, AccessKey, SecretKey, time.Now().Add(-16*time.Minute))
		require.NoError(t, err)
		require.Equal(t, tc.status, resp.StatusCode, body)
		require.Contains(t, body, tc.code)
		require.Contains(t, body, "Signature expired")
	}

	_, err = s.Endpoints("mars-north-1")
	require.ErrorIs(t, err, ErrUnknownRegion)
	require.ErrorIs(t, s.Down("mars-north-1"), ErrUnknownRegion)
}

func TestStackDownRefusesAndCutsConnectionsUpRestores(t *testing.T) {
	s := fakeStack(t)
	ep, err := s.Endpoints("ap-southeast-2")
	require.NoError(t, err)
	before, err := s.Endpoints("ap-southeast-2")
	require.NoError(t, err)

	// An open keep-alive connection to the region's KMS.
	conn, err := net.Dial("tcp", strings.TrimPrefix(ep.KMS, "http://"))
	require.NoError(t, err)
	defer conn.Close()

	require.NoError(t, s.Down("ap-southeast-2"))
	require.False(t, s.IsUp("ap-southeast-2"))
	require.True(t, s.IsUp("us-east-1"))
	require.False(t, s.Status()["ap-southeast-2"].Up)

	// The open connection is closed by the server.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = conn.Read(make([]byte, 1))
	require.Error(t, err)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "connection still open after Down")

	// New connections are refused on every service of the region, not elsewhere.
	for _, u := range []string{ep.KMS, ep.SQS, ep.DynamoDB} {
		_, err := net.DialTimeout("tcp", strings.TrimPrefix(u, "http://"), time.Second)
		require.True(t, errors.Is(err, syscall.ECONNREFUSED), "%s: %v", u, err)
	}
	us, _ := s.Endpoints("us-east-1")
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(us.KMS, "http://"), time.Second)
	require.NoError(t, err)
	_ = c.Close()

	// Down twice is fine; Up restores the same ports.
	require.NoError(t, s.Down("ap-southeast-2"))
	require.NoError(t, s.Up("ap-southeast-2"))
	require.NoError(t, s.Up("ap-southeast-2"))
	after, err := s.Endpoints("ap-southeast-2")
	require.NoError(t, err)
	require.Equal(t, before, after)
	_, body, err := signedPost(t, &http.Client{Transport: &http.Transport{Proxy: nil}}, after.KMS, "ap-southeast-2", "kms")
	require.NoError(t, err)
	require.Equal(t, "kms ap-southeast-2", body)
}

func TestPortLayout(t *testing.T) {
	p := PortLayout(DefaultBasePort, DefaultRegions)
	require.Equal(t, 24660, p.Admin)
	require.Equal(t, 24661, p.Fauxqs)
	require.Equal(t, 24662, p.DynamoDB)
	require.Equal(t, RegionPorts{KMS: 24670, SQS: 24671, DynamoDB: 24672, S3: 24673}, p.Regions["us-east-1"])
	require.Equal(t, RegionPorts{KMS: 24680, SQS: 24681, DynamoDB: 24682, S3: 24683}, p.Regions["eu-west-1"])
	require.Equal(t, RegionPorts{KMS: 24690, SQS: 24691, DynamoDB: 24692, S3: 24693}, p.Regions["ap-southeast-2"])
}
