package localaws

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/envdr/envdr/localaws/admin"
)

// Gray failures: a region's service that is slow, fails part of its requests, or accepts
// requests and never answers — the partial failures a lost region (Stack.Down) does not cover.
// Faults are kept per region and service by the Stack (they survive Down/Up) and applied by a
// small middleware in front of each endpoint's handler.

// Fault, ErrBadFault, ParseLatency and ParseErrorRate live in localaws/admin, which envdr's
// admin client shares without linking the stand-in.
type Fault = admin.Fault

// ErrBadFault is returned for a fault that cannot be applied.
var ErrBadFault = admin.ErrBadFault

// ParseLatency parses "D" or "D±J" (see admin.ParseLatency).
func ParseLatency(s string) (latency, jitter time.Duration, err error) { return admin.ParseLatency(s) }

// ParseErrorRate parses "0.3" or "30%" (see admin.ParseErrorRate).
func ParseErrorRate(s string) (float64, error) { return admin.ParseErrorRate(s) }

// faultTable holds the active faults, region -> service -> fault. Every change closes the
// current changed channel, which wakes blackholed requests to look again.
type faultTable struct {
	mu      sync.Mutex
	m       map[string]map[string]Fault
	changed chan struct{}
	closed  chan struct{}
	once    sync.Once
	// float returns a uniform number in [0, 1) (tests replace it).
	float func() float64
}

func newFaultTable() *faultTable {
	return &faultTable{m: map[string]map[string]Fault{}, changed: make(chan struct{}), closed: make(chan struct{}), float: rand.Float64}
}

// set replaces the fault of region's service; a zero fault removes it.
func (t *faultTable) set(region, service string, f Fault) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.IsZero() {
		delete(t.m[region], service)
		if len(t.m[region]) == 0 {
			delete(t.m, region)
		}
	} else {
		if t.m[region] == nil {
			t.m[region] = map[string]Fault{}
		}
		t.m[region][service] = f
	}
	close(t.changed)
	t.changed = make(chan struct{})
}

// get returns region's service fault and the channel closed at the next change.
func (t *faultTable) get(region, service string) (Fault, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[region][service], t.changed
}

// all returns a copy of the active faults.
func (t *faultTable) all() map[string]map[string]Fault {
	t.mu.Lock()
	defer t.mu.Unlock()
	return copyNested(t.m)
}

// close releases every held request for good (the stand-in stops).
func (t *faultTable) close() { t.once.Do(func() { close(t.closed) }) }

func (t *faultTable) random() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.float()
}

// maxHeldBody bounds what a blackholed request's body is buffered to (the largest AWS request
// envdr sends is an SQS message of 256 KiB).
const maxHeldBody = 8 << 20

// middleware applies region's service faults in front of next. Without a fault a request goes
// straight through. With one: a blackhole reads the request and holds it; then the latency is
// waited; then a share of requests get a retryable server error; the rest are served.
func (t *faultTable) middleware(region, service string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, changed := t.get(region, service)
		if f.IsZero() {
			next.ServeHTTP(w, r)
			return
		}
		if f.Blackhole {
			// Read the whole request, as a server that accepted it would, and keep it so it
			// can still be served if the fault is cleared while the client waits.
			body, err := io.ReadAll(io.LimitReader(r.Body, maxHeldBody))
			if err != nil {
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			for f.Blackhole {
				select {
				case <-r.Context().Done(): // the client gave up, or the endpoint went down
					return
				case <-t.closed:
					panic(http.ErrAbortHandler) // cut the connection: still no answer
				case <-changed:
					f, changed = t.get(region, service)
				}
			}
		}
		if d := faultDelay(f, t.random); d > 0 {
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
			case <-r.Context().Done():
				timer.Stop()
				return
			case <-t.closed:
				timer.Stop()
				panic(http.ErrAbortHandler)
			}
		}
		if f.ErrorRate > 0 && t.random() < f.ErrorRate {
			writeServerError(w, service, t.random() < 0.5)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// faultDelay is the latency of one request: Latency plus uniform jitter in [-Jitter, +Jitter].
func faultDelay(f Fault, random func() float64) time.Duration {
	d := f.Latency
	if f.Jitter > 0 {
		d += time.Duration((2*random() - 1) * float64(f.Jitter))
	}
	return max(d, 0)
}

// writeServerError answers as the service does when it fails on its side, with an error every
// AWS SDK treats as retryable (5xx):
//
//   - KMS: KMSInternalException (500) and DependencyTimeoutException (503, "You can retry the
//     request"), as the KMS API reference lists them for every cryptographic operation
//     (https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html#API_Decrypt_Errors,
//     https://docs.aws.amazon.com/botocore/latest/reference/services/kms/client/exceptions/DependencyTimeoutException.html).
//   - DynamoDB: InternalServerError (500) and ServiceUnavailable (503), with DynamoDB's
//     namespaced __type (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html,
//     https://docs.aws.amazon.com/botocore/latest/reference/services/dynamodb/client/exceptions/InternalServerError.html).
//   - SQS (JSON protocol): InternalFailure (500) and ServiceUnavailable (503), the common errors
//     (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html),
//     with the x-amzn-query-error header the JSON protocol adds, fault "Receiver".
func writeServerError(w http.ResponseWriter, service string, unavailable bool) {
	status, code, ctype := http.StatusInternalServerError, "", "application/x-amz-json-1.0"
	switch service {
	case ServiceKMS:
		ctype = "application/x-amz-json-1.1"
		code = "KMSInternalException"
		if unavailable {
			status, code = http.StatusServiceUnavailable, "DependencyTimeoutException"
		}
	case ServiceDynamoDB:
		code = "com.amazonaws.dynamodb.v20120810#InternalServerError"
		if unavailable {
			status, code = http.StatusServiceUnavailable, "com.amazonaws.dynamodb.v20120810#ServiceUnavailable"
		}
	case ServiceS3:
		// S3's REST errors: InternalError (500) and SlowDown (503), both retried by the SDKs
		// (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
		code := "InternalError"
		status := http.StatusInternalServerError
		if unavailable {
			code, status = "SlowDown", http.StatusServiceUnavailable
		}
		writeS3Error(w, &http.Request{Method: http.MethodGet}, status, code,
			"envdr local stand-in: injected fault (envdr local fault): the service failed on its side; retry the request")
		return
	default: // SQS
		code = "InternalFailure"
		if unavailable {
			status, code = http.StatusServiceUnavailable, "ServiceUnavailable"
		}
		w.Header().Set("X-Amzn-Query-Error", code+";Receiver")
	}
	short := code[strings.LastIndexByte(code, '#')+1:]
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("X-Amzn-ErrorType", short)
	w.Header().Set("X-Amzn-RequestId", fmt.Sprintf("envdr-fault-%016x", rand.Uint64()))
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"__type":%q,"message":%q}`, code,
		"envdr local stand-in: injected fault (envdr local fault): the service failed on its side; retry the request")
}
