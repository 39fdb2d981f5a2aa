package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The simulated regions' endpoints: every request of the real SDK clients goes through a
// session's Do, in process, to the region's handler. No sockets, so thousands of schedules run
// in minutes; the clients, their serialisation and their retries are the real ones.

// endpoint is a simulated region endpoint's base URL.
func endpoint(service, region string) string { return "http://" + service + "." + region + ".sim" }

// fault is a region's gray failure, per service ("kms", "dynamodb").
type fault struct {
	errRate  float64       // share of requests answered with a retryable 5xx (KMS: also throttling)
	throttle float64       // KMS: share answered ThrottlingException
	latency  time.Duration // added before the answer
}

// network is the world's fabric: which regions are up, their faults, and the handlers.
type network struct {
	mu       sync.Mutex
	down     map[string]bool
	faults   map[string]fault // region|service
	handlers map[string]http.Handler
	rng      *rand.Rand
	rngMu    sync.Mutex
}

func newNetwork(seed uint64) *network {
	return &network{down: map[string]bool{}, faults: map[string]fault{}, handlers: map[string]http.Handler{},
		rng: rand.New(rand.NewPCG(seed, 0x5157))}
}

func (n *network) float() float64 {
	n.rngMu.Lock()
	defer n.rngMu.Unlock()
	return n.rng.Float64()
}

func (n *network) isUp(region string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.down[region]
}

func (n *network) setDown(region string, down bool) {
	n.mu.Lock()
	n.down[region] = down
	n.mu.Unlock()
}

func (n *network) setFault(region, service string, f fault) {
	n.mu.Lock()
	n.faults[region+"|"+service] = f
	n.mu.Unlock()
}

func (n *network) clearFaults() {
	n.mu.Lock()
	n.faults = map[string]fault{}
	n.mu.Unlock()
}

// session is one process's view of the network (a daemon, a verify run): killing it makes every
// later request fail as a dead process's would never be sent; a request already inside a handler
// completes (the server got it), but its caller no longer learns the answer.
type session struct {
	n    *network
	dead atomic.Bool
	name string
}

var errKilled = errors.New("sim: process killed")

// Do implements aws.HTTPClient.
func (s *session) Do(req *http.Request) (*http.Response, error) {
	if s.dead.Load() {
		return nil, errKilled
	}
	host := req.URL.Host // service.region.sim
	parts := strings.SplitN(host, ".", 3)
	if len(parts) != 3 || parts[2] != "sim" {
		return nil, fmt.Errorf("sim: no endpoint %s", host)
	}
	service, region := parts[0], parts[1]
	n := s.n
	n.mu.Lock()
	down := n.down[region] || n.down[region+"|"+service]
	f := n.faults[region+"|"+service]
	h := n.handlers[service+"|"+region]
	n.mu.Unlock()
	if down || h == nil {
		// As a lost region answers: connection refused.
		return nil, &netErr{err: fmt.Errorf("dial tcp %s: %w", host, syscall.ECONNREFUSED)}
	}
	if f.latency > 0 {
		t := time.NewTimer(f.latency)
		select {
		case <-req.Context().Done():
			t.Stop()
			return nil, req.Context().Err()
		case <-t.C:
		}
	}
	if f.throttle > 0 && n.float() < f.throttle {
		return answer(req, 400, "ThrottlingException", "Rate exceeded"), nil
	}
	if f.errRate > 0 && n.float() < f.errRate {
		return answer(req, 500, "InternalFailure", "sim: injected failure"), nil
	}
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		_ = req.Body.Close()
		body = b
	}
	r2 := req.Clone(context.WithoutCancel(req.Context()))
	r2.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r2)
	if s.dead.Load() {
		return nil, errKilled
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// answer is an AWS JSON-protocol error answer.
func answer(req *http.Request, status int, code, msg string) *http.Response {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", "application/x-amz-json-1.1")
	rec.Header().Set("X-Amzn-Errortype", code)
	rec.WriteHeader(status)
	_, _ = fmt.Fprintf(rec, `{"__type":%q,"message":%q}`, code, msg)
	resp := rec.Result()
	resp.Request = req
	return resp
}

// netErr is a connection error, as net.OpError is for a refused dial.
type netErr struct{ err error }

func (e *netErr) Error() string   { return e.err.Error() }
func (e *netErr) Unwrap() error   { return e.err }
func (e *netErr) Timeout() bool   { return false }
func (e *netErr) Temporary() bool { return false }
