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

// handSigned is a request signed over exactly the headers in signedHeaders (lower case, sorted),
// with the package's own canonical request: a correct signature, whatever it leaves out.
func handSigned(t *testing.T, service string, at time.Time, body []byte, signedHeaders []string, mutate func(*http.Request)) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:24670/", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/x-amz-json-1.1")
	r.Header.Set("X-Amz-Target", "TrentService.Decrypt")
	r.Header.Set("X-Amz-Date", at.UTC().Format(sigv4.TimeFormat))
	if mutate != nil {
		mutate(r)
	}
	a := sigv4.Auth{AccessKey: akid, Date: at.UTC().Format("20060102"), Region: "us-east-1", Service: service, SignedHeaders: signedHeaders}
	date := r.Header.Get("X-Amz-Date")
	if date == "" {
		d, err := http.ParseTime(r.Header.Get("Date"))
		require.NoError(t, err)
		date = d.UTC().Format(sigv4.TimeFormat)
	}
	sig := sigv4.Sign(secret, a, sigv4.StringToSign(date, a.Scope(), sigv4.CanonicalRequest(r, body, signedHeaders)))
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+akid+"/"+a.Scope()+", SignedHeaders="+strings.Join(signedHeaders, ";")+", Signature="+sig)
	return r
}

// sdkSigned is signed by the SDK's signer over payloadHash (which it takes as given, as for
// UNSIGNED-PAYLOAD), with x-amz-content-sha256 sent and signed.
func sdkSigned(t *testing.T, service string, at time.Time, body []byte, payloadHash string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:24670/", bytes.NewReader(body))
	require.NoError(t, err)
	r.Header.Set("X-Amz-Target", "TrentService.Decrypt")
	r.Header.Set("X-Amz-Content-Sha256", payloadHash)
	require.NoError(t, v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret},
		r, payloadHash, service, "us-east-1", at))
	in := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:24670/", bytes.NewReader(body))
	in.Header = r.Header.Clone()
	return in
}

// What a signature must cover, from "Elements of an AWS API request signature" and "Create a
// signed AWS API request" (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html:
// "The host header must be included as a signed header. If you include a date or x-amz-date
// header, you must also include that header in the list of signed headers"), and where an
// unsigned payload is allowed: "UNSIGNED-PAYLOAD" is S3's
// (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html); every other
// service hashes the body, so such a request, or a body changed after signing, is a signature
// mismatch (InvalidSignatureException for KMS and DynamoDB, SignatureDoesNotMatch for SQS), and
// S3's x-amz-content-sha256 that is not the body's hash is XAmzContentSHA256Mismatch
// (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
func TestSignedHeadersAndPayload(t *testing.T) {
	now := time.Now()
	body := []byte(`{"CiphertextBlob":"AAAA"}`)
	sum := sha256.Sum256(body)
	bodyHash := hex.EncodeToString(sum[:])
	all := []string{"content-type", "host", "x-amz-date", "x-amz-target"}
	noDate := handSigned(t, "kms", now, body, all, nil)
	noDate.Header.Del("X-Amz-Date")
	cases := []struct {
		name    string
		service string
		req     *http.Request
		body    []byte
		kind    sigv4.Kind
		message string
	}{
		{"every required header signed", "kms", handSigned(t, "kms", now, body, all, nil), body, 0, ""},
		{"host not signed", "kms", handSigned(t, "kms", now, body, []string{"content-type", "x-amz-date", "x-amz-target"}, nil), body, sigv4.Incomplete, "'Host' or ':authority' must be a 'SignedHeader'"},
		{"x-amz-date not signed", "kms", handSigned(t, "kms", now, body, []string{"content-type", "host", "x-amz-target"}, nil), body, sigv4.Incomplete, "'X-Amz-Date' must be a 'SignedHeader'"},
		{"x-amz-target not signed", "kms", handSigned(t, "kms", now, body, []string{"content-type", "host", "x-amz-date"}, nil), body, sigv4.Incomplete, "'X-Amz-Target' must be a 'SignedHeader'"},
		{"Date instead of X-Amz-Date, signed", "kms", handSigned(t, "kms", now, body, []string{"date", "host", "x-amz-target"}, func(r *http.Request) {
			r.Header.Del("X-Amz-Date")
			r.Header.Set("Date", now.UTC().Format(http.TimeFormat))
		}), body, 0, ""},
		{"Date not signed", "kms", handSigned(t, "kms", now, body, []string{"host", "x-amz-target"}, func(r *http.Request) {
			r.Header.Del("X-Amz-Date")
			r.Header.Set("Date", now.UTC().Format(http.TimeFormat))
		}), body, sigv4.Incomplete, "'Date' must be a 'SignedHeader'"},
		{"no date at all", "kms", noDate, body, sigv4.Incomplete, "requires existence of either a 'X-Amz-Date' or a 'Date' header"},
		{"KMS: UNSIGNED-PAYLOAD is not accepted", "kms", sdkSigned(t, "kms", now, body, sigv4.UnsignedPayload), body, sigv4.Mismatch, "does not match"},
		{"DynamoDB: UNSIGNED-PAYLOAD is not accepted", "dynamodb", sdkSigned(t, "dynamodb", now, body, sigv4.UnsignedPayload), body, sigv4.Mismatch, "does not match"},
		{"SQS: UNSIGNED-PAYLOAD is not accepted", "sqs", sdkSigned(t, "sqs", now, body, sigv4.UnsignedPayload), body, sigv4.Mismatch, "does not match"},
		{"KMS: the body's hash signed", "kms", sdkSigned(t, "kms", now, body, bodyHash), body, 0, ""},
		{"KMS: body altered after signing, hash header kept", "kms", sdkSigned(t, "kms", now, body, bodyHash), []byte(`{"CiphertextBlob":"BBBB"}`), sigv4.Mismatch, "does not match"},
		{"S3: UNSIGNED-PAYLOAD is accepted", "s3", sdkSigned(t, "s3", now, body, sigv4.UnsignedPayload), body, 0, ""},
		{"S3: the body's hash", "s3", sdkSigned(t, "s3", now, body, bodyHash), body, 0, ""},
		{"S3: body not the hash sent", "s3", sdkSigned(t, "s3", now, body, bodyHash), []byte("other"), sigv4.PayloadMismatch, "x-amz-content-sha256"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := sigv4.Verify(c.req, c.body, "us-east-1", c.service, secrets, now)
			if c.kind == 0 {
				require.Nil(t, err, "%v", err)
				require.Equal(t, akid, v.AccessKey)
				return
			}
			require.NotNil(t, err)
			require.Equal(t, c.kind, err.Kind, err.Message)
			require.Contains(t, err.Message, c.message)
		})
	}
}

// TestS3KeyPathEncodedOnce: S3 signs the object key's path URI-encoded once (the SDK's S3
// signer sets DisableURIPathEscaping), every other service encodes the escaped path again; a
// key with a space verifies for S3 only as the S3 signer signed it.
func TestS3KeyPathEncodedOnce(t *testing.T) {
	now := time.Now()
	sign := func(disableEscaping bool) *http.Request {
		r, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:24673/bucket/dir/a%20b%2Bc.env", nil)
		require.NoError(t, err)
		r.Header.Set("X-Amz-Content-Sha256", sigv4.UnsignedPayload)
		require.NoError(t, v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = disableEscaping }).SignHTTP(context.Background(),
			aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret}, r, sigv4.UnsignedPayload, "s3", "us-east-1", now))
		in := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:24673/bucket/dir/a%20b%2Bc.env", nil)
		in.Header = r.Header.Clone()
		return in
	}
	_, err := sigv4.Verify(sign(true), nil, "us-east-1", "s3", secrets, now)
	require.Nil(t, err, "%v", err)
	_, err = sigv4.Verify(sign(false), nil, "us-east-1", "s3", secrets, now)
	require.NotNil(t, err, "a doubly encoded path is not S3's")
	require.Equal(t, sigv4.Mismatch, err.Kind)
}
