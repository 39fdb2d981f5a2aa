package localaws

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
)

func TestParseLatency(t *testing.T) {
	for _, tc := range []struct {
		in          string
		lat, jitter time.Duration
		wantErr     bool
	}{
		{in: "1s", lat: time.Second},
		{in: "200ms±50ms", lat: 200 * time.Millisecond, jitter: 50 * time.Millisecond},
		{in: "200ms+-50ms", lat: 200 * time.Millisecond, jitter: 50 * time.Millisecond},
		{in: " 2s ± 1s ", lat: 2 * time.Second, jitter: time.Second},
		{in: "0s", lat: 0},
		{in: "fast", wantErr: true},
		{in: "1", wantErr: true},
		{in: "-1s", wantErr: true},
		{in: "1s±", wantErr: true},
		{in: "1s±-5ms", wantErr: true},
		{in: "", wantErr: true},
	} {
		lat, jit, err := ParseLatency(tc.in)
		if tc.wantErr {
			require.ErrorIs(t, err, ErrBadFault, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.lat, lat, tc.in)
		require.Equal(t, tc.jitter, jit, tc.in)
	}
}

func TestParseErrorRate(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{in: "0.3", want: 0.3},
		{in: "30%", want: 0.3},
		{in: "100%", want: 1},
		{in: "0", want: 0},
		{in: "1", want: 1},
		{in: "12.5 %", want: 0.125},
		{in: "1.5", wantErr: true},
		{in: "150%", wantErr: true},
		{in: "-0.1", wantErr: true},
		{in: "half", wantErr: true},
		{in: "", wantErr: true},
	} {
		got, err := ParseErrorRate(tc.in)
		if tc.wantErr {
			require.ErrorIs(t, err, ErrBadFault, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.InDelta(t, tc.want, got, 1e-12, tc.in)
	}
}

func TestFaultStringJSONAndValidate(t *testing.T) {
	f := Fault{Latency: 200 * time.Millisecond, Jitter: 50 * time.Millisecond, ErrorRate: 0.3, Blackhole: true}
	require.Equal(t, "blackhole, latency 200ms±50ms, error-rate 30%", f.String())
	require.Equal(t, "none", Fault{}.String())
	b, err := json.Marshal(f)
	require.NoError(t, err)
	require.JSONEq(t, `{"latency":"200ms","jitter":"50ms","error_rate":0.3,"blackhole":true}`, string(b))
	var back Fault
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, f, back)

	require.NoError(t, f.Validate())
	for _, bad := range []Fault{{Latency: -1}, {ErrorRate: 1.1}, {ErrorRate: -0.1}, {Jitter: time.Second}} {
		require.ErrorIs(t, bad.Validate(), ErrBadFault, "%+v", bad)
	}
}

func TestFaultDelayJitter(t *testing.T) {
	f := Fault{Latency: 200 * time.Millisecond, Jitter: 50 * time.Millisecond}
	for _, tc := range []struct {
		random float64
		want   time.Duration
	}{{0, 150 * time.Millisecond}, {0.5, 200 * time.Millisecond}, {0.75, 225 * time.Millisecond}} {
		require.Equal(t, tc.want, faultDelay(f, func() float64 { return tc.random }), "random %v", tc.random)
	}
	// Jitter larger than the latency never makes a negative wait.
	require.Equal(t, time.Duration(0), faultDelay(Fault{Latency: 10 * time.Millisecond, Jitter: time.Second}, func() float64 { return 0 }))
	require.Equal(t, time.Second, faultDelay(Fault{Latency: time.Second}, func() float64 { panic("no jitter: no random draw") }))
}

// faultHarness is the middleware in front of a handler that counts what it served.
type faultHarness struct {
	t      *faultTable
	served atomic.Int64
	srv    *httptest.Server
}

func newFaultHarness(t *testing.T, service string) *faultHarness {
	h := &faultHarness{t: newFaultTable()}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.served.Add(1)
		_, _ = io.WriteString(w, "served "+string(b))
	})
	h.srv = httptest.NewServer(h.t.middleware("eu-west-1", service, next))
	t.Cleanup(func() { h.t.close(); h.srv.Close() })
	return h
}

func (h *faultHarness) post(ctx context.Context, body string) (int, http.Header, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL, strings.NewReader(body))
	if err != nil {
		return 0, nil, "", err
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), err
}

func TestFaultMiddlewareErrors(t *testing.T) {
	for _, tc := range []struct {
		service      string
		status       int
		code, header string
		unavailable  bool
	}{
		{ServiceKMS, 500, "KMSInternalException", "KMSInternalException", false},
		{ServiceKMS, 503, "DependencyTimeoutException", "DependencyTimeoutException", true},
		{ServiceDynamoDB, 500, "com.amazonaws.dynamodb.v20120810#InternalServerError", "InternalServerError", false},
		{ServiceDynamoDB, 503, "com.amazonaws.dynamodb.v20120810#ServiceUnavailable", "ServiceUnavailable", true},
		{ServiceSQS, 500, "InternalFailure", "InternalFailure", false},
		{ServiceSQS, 503, "ServiceUnavailable", "ServiceUnavailable", true},
	} {
		t.Run(tc.service+"/"+tc.header, func(t *testing.T) {
			h := newFaultHarness(t, tc.service)
			// The first draw decides "fail" (< rate), the second 500 (>= 0.5) or 503 (< 0.5).
			draws := []float64{0.1, 0.9}
			if tc.unavailable {
				draws[1] = 0.2
			}
			i := 0
			h.t.float = func() float64 { v := draws[i%2]; i++; return v }
			h.t.set("eu-west-1", tc.service, Fault{ErrorRate: 0.3})
			status, hdr, body, err := h.post(context.Background(), "{}")
			require.NoError(t, err)
			require.Equal(t, tc.status, status)
			require.Equal(t, tc.header, hdr.Get("X-Amzn-ErrorType"))
			var e struct {
				Type    string `json:"__type"`
				Message string `json:"message"`
			}
			require.NoError(t, json.Unmarshal([]byte(body), &e), body)
			require.Equal(t, tc.code, e.Type)
			require.NotEmpty(t, e.Message)
			if tc.service == ServiceSQS {
				require.Equal(t, tc.header+";Receiver", hdr.Get("X-Amzn-Query-Error"))
			}
			require.Zero(t, h.served.Load(), "a failed request must not reach the service")

			// A draw at or above the rate is served.
			h.t.float = func() float64 { return 0.3 }
			status, _, body, err = h.post(context.Background(), "{}")
			require.NoError(t, err)
			require.Equal(t, 200, status)
			require.Equal(t, "served {}", body)
		})
	}
}

func TestFaultMiddlewareErrorRateShare(t *testing.T) {
	h := newFaultHarness(t, ServiceKMS)
	h.t.set("eu-west-1", ServiceKMS, Fault{ErrorRate: 0.3})
	failed := 0
	const n = 400
	for range n {
		status, _, _, err := h.post(context.Background(), "x")
		require.NoError(t, err)
		if status >= 500 {
			failed++
		}
	}
	// 30% of 400: mean 120, standard deviation ~9.2; ±50 is over 5 sigma.
	require.InDelta(t, 120, failed, 50)
	require.Equal(t, int64(n-failed), h.served.Load())
}

func TestFaultMiddlewareLatency(t *testing.T) {
	h := newFaultHarness(t, ServiceDynamoDB)
	h.t.set("eu-west-1", ServiceDynamoDB, Fault{Latency: 300 * time.Millisecond})
	start := time.Now()
	status, _, body, err := h.post(context.Background(), "slow")
	require.NoError(t, err)
	require.Equal(t, 200, status)
	require.Equal(t, "served slow", body)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)

	// A client that gives up during the wait is not served afterwards.
	h.t.set("eu-west-1", ServiceDynamoDB, Fault{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, _, err = h.post(ctx, "gone")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, int64(1), h.served.Load())
}

func TestFaultMiddlewareBlackhole(t *testing.T) {
	h := newFaultHarness(t, ServiceSQS)
	h.t.set("eu-west-1", ServiceSQS, Fault{Blackhole: true})

	// The client gives up: no answer, nothing served.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, _, err := h.post(ctx, "lost")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Zero(t, h.served.Load())

	// A held request is served, body intact, once the fault is cleared.
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, _, body, err := h.post(context.Background(), "held")
		done <- result{body, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("a blackholed request was answered: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	// Another fault of the same service that is still a blackhole keeps holding it.
	h.t.set("eu-west-1", ServiceSQS, Fault{Blackhole: true, ErrorRate: 0})
	select {
	case r := <-done:
		t.Fatalf("answered while still blackholed: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	h.t.set("eu-west-1", ServiceSQS, Fault{})
	select {
	case r := <-done:
		require.NoError(t, r.err)
		require.Equal(t, "served held", r.body)
	case <-time.After(10 * time.Second):
		t.Fatal("the held request was not served after the fault was cleared")
	}

	// Closing the table (the stand-in stops) releases held requests without an answer.
	h.t.set("eu-west-1", ServiceSQS, Fault{Blackhole: true})
	errc := make(chan error, 1)
	go func() {
		_, _, _, err := h.post(context.Background(), "at-close")
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	h.t.close()
	select {
	case err := <-errc:
		require.Error(t, err, "the connection is cut without an answer")
		require.Equal(t, int64(1), h.served.Load())
	case <-time.After(10 * time.Second):
		t.Fatal("closing the fault table did not release a held request")
	}
}

// The stack applies faults per region and service, keeps them across Down/Up, and the SDK
// clients see the injected errors as typed, retryable server errors.
func TestStackFaultsSDKRetryableAndScoped(t *testing.T) {
	s := fakeStack(t)
	ctx := context.Background()
	const sick = "ap-southeast-2"
	require.NoError(t, s.SetFault(sick, "", Fault{ErrorRate: 1}))
	require.Len(t, s.Faults()[sick], len(Services))
	require.ErrorIs(t, s.SetFault(sick, "ec2", Fault{ErrorRate: 1}), ErrBadFault)
	require.ErrorIs(t, s.SetFault("mars-north-1", "", Fault{ErrorRate: 1}), ErrUnknownRegion)
	require.ErrorIs(t, s.SetFault(sick, ServiceKMS, Fault{ErrorRate: 2}), ErrBadFault)

	// Down/Up keeps them.
	require.NoError(t, s.Down(sick))
	require.NoError(t, s.Up(sick))
	require.Len(t, s.Faults()[sick], len(Services))
	require.Len(t, s.Status()[sick].Faults, len(Services))
	require.Empty(t, s.Status()["us-east-1"].Faults)

	ep, err := s.Endpoints(sick)
	require.NoError(t, err)
	cfg := AWSConfig(sick, config.Endpoints(ep), AccessKey, SecretKey)
	cfg.RetryMaxAttempts = 1
	retryable := retry.NewStandard()

	_, err = kms.NewFromConfig(cfg).Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: []byte("x")})
	var kie *kmstypes.KMSInternalException
	var dte *kmstypes.DependencyTimeoutException
	require.True(t, errors.As(err, &kie) || errors.As(err, &dte), "%v", err)
	require.True(t, retryable.IsErrorRetryable(err), "%v", err)

	_, err = NewDynamoDB(cfg).GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("t"),
		Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "x"}}})
	var ise *ddbtypes.InternalServerError
	var ae smithy.APIError
	require.True(t, errors.As(err, &ise) || (errors.As(err, &ae) && ae.ErrorCode() == "ServiceUnavailable"), "%v", err)
	require.True(t, retryable.IsErrorRetryable(err), "%v", err)

	_, err = sqs.NewFromConfig(cfg).GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String("http://q/000000000000/q")})
	require.True(t, errors.As(err, &ae), "%v", err)
	require.Contains(t, []string{"InternalFailure", "ServiceUnavailable"}, ae.ErrorCode())
	require.Equal(t, smithy.FaultServer, ae.ErrorFault(), "%v", err)
	require.True(t, retryable.IsErrorRetryable(err), "%v", err)

	// Another region is untouched; clearing one service leaves the others.
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	other, err := s.Endpoints("us-east-1")
	require.NoError(t, err)
	resp, body, err := signedPost(t, c, other.KMS, "us-east-1", "kms")
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode, body)
	require.NoError(t, s.ClearFaults(sick, ServiceKMS))
	resp, body, err = signedPost(t, c, ep.KMS, sick, "kms")
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode, body)
	require.Len(t, s.Faults()[sick], len(Services)-1)
	require.NoError(t, s.ClearFaults(sick, ""))
	require.Empty(t, s.Faults())
}

// Closing the stack releases a request held by a blackhole.
func TestStackCloseReleasesBlackhole(t *testing.T) {
	s := fakeStack(t)
	require.NoError(t, s.SetFault("eu-west-1", ServiceKMS, Fault{Blackhole: true}))
	ep, err := s.Endpoints("eu-west-1")
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		_, _, err := signedPost(t, &http.Client{Transport: &http.Transport{Proxy: nil}}, ep.KMS, "eu-west-1", "kms")
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("a blackholed endpoint answered (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	require.NoError(t, s.Close())
	select {
	case err := <-errc:
		require.Error(t, err, "the connection ends without an answer")
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not release the held request")
	}
}

// The admin API takes a fault as query parameters or as a JSON body, and clears one region or
// everything.
func TestAdminFaultRoutes(t *testing.T) {
	s := fakeStack(t)
	srv := httptest.NewServer((&Admin{Stack: s}).Handler())
	t.Cleanup(srv.Close)
	do := func(method, path, body string) (int, string) {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := do(http.MethodPut, "/faults/eu-west-1?service=kms&latency=200ms%C2%B150ms", "")
	require.Equal(t, 200, code, body)
	require.Equal(t, Fault{Latency: 200 * time.Millisecond, Jitter: 50 * time.Millisecond}, s.Faults()["eu-west-1"][ServiceKMS])

	code, body = do(http.MethodPut, "/faults/ap-southeast-2", `{"service": "dynamodb", "error_rate": "30%", "blackhole": false}`)
	require.Equal(t, 200, code, body)
	require.Equal(t, Fault{ErrorRate: 0.3}, s.Faults()["ap-southeast-2"][ServiceDynamoDB])
	code, body = do(http.MethodPut, "/faults/ap-southeast-2", `{"latency": "1s", "error_rate": 0.1}`)
	require.Equal(t, 200, code, body)
	require.Len(t, s.Faults()["ap-southeast-2"], len(Services), "every service of the region: kms, sqs, dynamodb, s3")
	require.Equal(t, Fault{Latency: time.Second, ErrorRate: 0.1}, s.Faults()["ap-southeast-2"][ServiceSQS])

	for _, bad := range []struct{ path, body string }{
		{"/faults/eu-west-1", `{"latency": "soon"}`},
		{"/faults/eu-west-1", `{"color": "red"}`},
		{"/faults/eu-west-1?error_rate=2", ""},
		{"/faults/eu-west-1?blackhole=maybe", ""},
		{"/faults/eu-west-1", ""},
	} {
		code, body = do(http.MethodPut, bad.path, bad.body)
		require.Equal(t, 400, code, "%+v: %s", bad, body)
	}
	code, _ = do(http.MethodPut, "/faults/mars-north-1?blackhole=true", "")
	require.Equal(t, 404, code)

	code, body = do(http.MethodGet, "/faults", "")
	require.Equal(t, 200, code)
	var all map[string]map[string]Fault
	require.NoError(t, json.Unmarshal([]byte(body), &all))
	require.Equal(t, s.Faults(), all)

	code, _ = do(http.MethodDelete, "/faults/ap-southeast-2?service=sqs", "")
	require.Equal(t, 200, code)
	require.Len(t, s.Faults()["ap-southeast-2"], len(Services)-1)
	code, _ = do(http.MethodDelete, "/faults", "")
	require.Equal(t, 200, code)
	require.Empty(t, s.Faults())
}
