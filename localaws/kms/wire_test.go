package kms

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/stretchr/testify/require"
)

// rawCall posts a JSON 1.1 request the way the SDK does, for checks below the SDK.
func rawCall(t *testing.T, url, target, auth, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), http.MethodPost, url+"/", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	if target != "" {
		req.Header.Set("X-Amz-Target", target)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(data, &out), string(data))
	return resp.StatusCode, resp.Header, out
}

const authUSEast1 = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"

// AWS JSON 1.1 protocol: errors are HTTP 4xx/5xx with a JSON body whose
// __type names the exception and message explains it; responses are
// application/x-amz-json-1.1 and carry a request ID.
func TestWireErrorShape(t *testing.T) {
	t.Parallel()
	b := setup(t)
	url := b.urls["us-east-1"]
	status, hdr, out := rawCall(t, url, "TrentService.DescribeKey", authUSEast1, `{"KeyId":"alias/none"}`)
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "application/x-amz-json-1.1", hdr.Get("Content-Type"))
	require.NotEmpty(t, hdr.Get("X-Amzn-RequestId"))
	require.Equal(t, "NotFoundException", out["__type"])
	require.Contains(t, out["message"], "alias/none")

	status, _, out = rawCall(t, url, "TrentService.NoSuchOperation", authUSEast1, `{}`)
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "UnknownOperationException", out["__type"])

	status, _, out = rawCall(t, url, "TrentService.DescribeKey", authUSEast1, `{"KeyId":`)
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "SerializationException", out["__type"])

	status, _, out = rawCall(t, url, "TrentService.ListKeys", "", `{}`)
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "MissingAuthenticationTokenException", out["__type"])

	status, _, out = rawCall(t, url, "TrentService.ListKeys", authUSEast1, `{}`)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, false, out["Truncated"])

	// Internal errors are 500 KMSInternalException, which the SDK retries.
	svc2, err := NewService(Options{Regions: []string{"us-east-1"}})
	require.NoError(t, err)
	h := svc2.Handler("us-east-1")
	require.NoError(t, svc2.Close())
	rec := httptest.NewRecorder()
	req, _ := http.NewRequest(http.MethodPost, "/", strings.NewReader(`{}`))
	req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	req.Header.Set("Authorization", authUSEast1)
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	require.Contains(t, rec.Body.String(), `"__type":"KMSInternalException"`)
}

// Signature Version 4: the credential scope names the Region the client
// signs for. An endpoint refuses a request scoped to another Region, which
// catches a client pointed at the wrong Region's endpoint.
func TestSigV4ScopeRegionEnforced(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.createKey(t, "us-east-1", false)
	wrong := newClient("eu-west-1", b.urls["us-east-1"], true) // signs for eu-west-1, talks to us-east-1
	_, err := wrong.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: k.KeyId})
	requireCode(t, err, "InvalidSignatureException")
	_, err = b.c("us-east-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: k.KeyId})
	require.NoError(t, err)

	status, _, out := rawCall(t, b.urls["us-east-1"], "TrentService.ListKeys",
		"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00", `{}`)
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "InvalidSignatureException", out["__type"])
}

// KMS API Reference, common errors: ThrottlingException (HTTP 400) when the
// request rate is too high. The per-Region limit is a test hook; counters
// count every call per Region and operation, throttled ones too.
func TestRateLimitAndCounters(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{noRetry: true})
	k := b.createKey(t, "us-east-1", false)
	b.svc.ResetCounters()
	// A burst of one and a refill every 100 s: all but the first call are throttled.
	b.svc.SetRateLimit("eu-west-1", 0.01)

	// The limit is per Region: us-east-1 is not throttled.
	for i := 0; i < 20; i++ {
		_, err := b.c("us-east-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("p")})
		require.NoError(t, err)
	}
	var throttled int
	for i := 0; i < 20; i++ {
		_, err := b.c("eu-west-1").ListKeys(ctx(t), &awskms.ListKeysInput{})
		if err != nil {
			requireCode(t, err, "ThrottlingException")
			throttled++
		}
	}
	require.Equal(t, 19, throttled)

	cnt := b.svc.Counters()
	require.Equal(t, int64(20), cnt["us-east-1"]["Encrypt"])
	require.Zero(t, cnt["us-east-1"]["Throttled"])
	require.Equal(t, int64(20), cnt["eu-west-1"]["ListKeys"])
	require.Equal(t, int64(throttled), cnt["eu-west-1"]["Throttled"])

	// A throttled call through a default (retrying) client eventually lands;
	// removing the limit stops throttling at once.
	b.svc.SetRateLimit("eu-west-1", 0)
	for i := 0; i < 20; i++ {
		_, err := b.c("eu-west-1").ListKeys(ctx(t), &awskms.ListKeysInput{})
		require.NoError(t, err)
	}
	// Counters returns a copy; ResetCounters zeroes them.
	cnt["eu-west-1"]["ListKeys"] = 999
	require.Equal(t, int64(40), b.svc.Counters()["eu-west-1"]["ListKeys"])
	b.svc.ResetCounters()
	require.Empty(t, b.svc.Counters())

	// The SDK's standard retryer classifies the error as throttling, so it backs off.
	b.svc.SetRateLimit("ap-southeast-2", 0.01)
	_, err := b.c("ap-southeast-2").ListKeys(ctx(t), &awskms.ListKeysInput{})
	require.NoError(t, err)
	_, err = b.c("ap-southeast-2").ListKeys(ctx(t), &awskms.ListKeysInput{})
	requireCode(t, err, "ThrottlingException")
	require.Equal(t, aws.TrueTernary, retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err))
}

// The daemon calls KMS from many goroutines: concurrent cryptographic and
// management calls across Regions stay correct (run with -race).
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.mrk(t)
	ec := map[string]string{"envdr:id": "conc"}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 12; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			from := testRegions[g%3]
			to := testRegions[(g+1)%3]
			for i := 0; i < 25; i++ {
				gd, err := b.c(from).GenerateDataKey(ctx(t), &awskms.GenerateDataKeyInput{KeyId: p.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
				if err != nil {
					errs <- err
					return
				}
				re, err := b.c(to).ReEncrypt(ctx(t), &awskms.ReEncryptInput{CiphertextBlob: gd.CiphertextBlob, SourceEncryptionContext: ec,
					DestinationKeyId: p.KeyId, DestinationEncryptionContext: ec})
				if err != nil {
					errs <- err
					return
				}
				dec, err := b.c(to).Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: re.CiphertextBlob, EncryptionContext: ec})
				if err != nil {
					errs <- err
					return
				}
				if string(dec.Plaintext) != string(gd.Plaintext) {
					errs <- errors.New("plaintext mismatch")
					return
				}
				switch {
				case g == 0 && i%5 == 0:
					_, err = b.c("us-east-1").RotateKeyOnDemand(ctx(t), &awskms.RotateKeyOnDemandInput{KeyId: p.KeyId})
				case g == 1:
					_, err = b.c(from).CreateKey(ctx(t), &awskms.CreateKeyInput{})
				case g == 2:
					_, err = b.c(from).DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	cnt := b.svc.Counters()
	var gdk int64
	for _, r := range testRegions {
		gdk += cnt[r]["GenerateDataKey"]
	}
	require.Equal(t, int64(12*25), gdk)
	lr, err := b.c("eu-west-1").ListKeyRotations(ctx(t), &awskms.ListKeyRotationsInput{KeyId: p.KeyId})
	require.NoError(t, err)
	require.Len(t, lr.Rotations, 5)
}
