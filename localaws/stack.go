// Package localaws is envdr's three-region AWS stand-in on loopback: per region, its own ports
// for KMS (our own server, package kms), SQS (fauxqs) and DynamoDB (DynamoDB Local), so that one
// region can be lost (its ports refuse connections) while the others keep working.
//
// fauxqs and DynamoDB Local each serve every region from one process; small per-region reverse
// proxies in front of them give every region endpoints of its own. fauxqs keeps each region's
// queues apart, and the SQS proxy lets a region reach only its own. DynamoDB Local keeps one
// database per region (no -sharedDb); GlobalTables replicates between them with a lag and last
// writer wins, as global tables do.
//
// `envdr local serve` runs the stack for developers and drills (fixed ports, local/envdr.yaml);
// package localtest runs one per test on ephemeral ports in front of the same backends.
package localaws

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws/admin"
	"github.com/envdr/envdr/localaws/iam"
)

// Defaults of the stand-in.
const (
	// HomeRegion holds the multi-Region primary key and the queue.
	HomeRegion = "us-east-1"
	// AccessKey and SecretKey are the envdr-admin identity's fixed credentials, written into
	// local/envdr.yaml: callers that choose no profile act as the admin (Allow * on *).
	AccessKey = iam.AdminAccessKey
	SecretKey = iam.AdminSecretKey
)

// DefaultRegions are the three regions of the stand-in; the first is the home region.
var DefaultRegions = []string{"us-east-1", "eu-west-1", "ap-southeast-2"}

// ErrUnknownRegion is returned for a region the stack does not serve.
var ErrUnknownRegion = errors.New("localaws: unknown region")

// Service names, as in SigV4 credential scopes (defined in localaws/admin, the admin wire).
const (
	ServiceKMS      = admin.ServiceKMS
	ServiceSQS      = admin.ServiceSQS
	ServiceDynamoDB = admin.ServiceDynamoDB
	ServiceSTS      = admin.ServiceSTS
	ServiceS3       = admin.ServiceS3
)

// Services lists the per-region services in a fixed order.
var Services = admin.Services

// RegionPorts fixes one region's ports; 0 picks an ephemeral port.
type RegionPorts struct {
	KMS      int `json:"kms"`
	SQS      int `json:"sqs"`
	DynamoDB int `json:"dynamodb"`
	S3       int `json:"s3"`
}

// StackOptions configures NewStack.
type StackOptions struct {
	// Regions served; DefaultRegions if empty.
	Regions []string
	// KMS returns the KMS handler of a region (kms.Service.Handler).
	KMS func(region string) http.Handler
	// Backends are the shared SQS and DynamoDB emulators.
	Backends Backends
	// Ports per region; missing regions or zero ports get ephemeral ports.
	Ports map[string]RegionPorts
	// IAM verifies every request's signature and holds the identity policies the SQS and
	// DynamoDB endpoints evaluate (the KMS handler evaluates its own, with the key policies).
	// Nil: a fresh iam.New(), where only the admin may do anything.
	IAM *iam.IAM
}

// Stack is the set of per-region endpoints. Down/Up cut and restore one region.
type Stack struct {
	regions []string
	eps     map[string]map[string]*endpoint // region -> service -> endpoint
	tr      *http.Transport
	global  *GlobalTables
	faults  *faultTable // gray failures per region and service; kept across Down/Up
	iam     *iam.IAM
	calls   callCounter // SQS, DynamoDB and S3 requests by region and operation
	s3      *S3
}

// NewStack listens on every region's endpoints (127.0.0.1 only).
func NewStack(opts StackOptions) (*Stack, error) {
	if opts.KMS == nil {
		return nil, errors.New("localaws: StackOptions.KMS is required")
	}
	sqsURL, err := url.Parse(opts.Backends.SQS)
	if err != nil || sqsURL.Host == "" {
		return nil, fmt.Errorf("localaws: bad SQS backend URL %q", opts.Backends.SQS)
	}
	ddbURL, err := url.Parse(opts.Backends.DynamoDB)
	if err != nil || ddbURL.Host == "" {
		return nil, fmt.Errorf("localaws: bad DynamoDB backend URL %q", opts.Backends.DynamoDB)
	}
	regions := opts.Regions
	if len(regions) == 0 {
		regions = DefaultRegions
	}
	// One transport for all proxies (newBackendTransport: idle connections dropped before the
	// backends drop them).
	tr := newBackendTransport()
	m := opts.IAM
	if m == nil {
		m = iam.New()
	}
	s := &Stack{regions: append([]string(nil), regions...), eps: map[string]map[string]*endpoint{}, tr: tr, iam: m, faults: newFaultTable()}
	s.global = NewGlobalTables(ddbURL, regions, s.IsUp, tr)
	s3URL := sqsURL // fauxqs serves S3 on its SQS port
	if opts.Backends.S3 != "" {
		if s3URL, err = url.Parse(opts.Backends.S3); err != nil || s3URL.Host == "" {
			return nil, fmt.Errorf("localaws: bad S3 backend URL %q", opts.Backends.S3)
		}
	}
	s.s3 = newS3(s3URL, tr, m, s.IsUp, s.global.Delay, regions)
	sqsProxy := newProxy(sqsURL, tr)
	// Faults wrap outside authentication: a blackholed or slow endpoint is slow for every
	// request, however it is signed.
	for _, r := range regions {
		p := opts.Ports[r]
		s.eps[r] = map[string]*endpoint{
			ServiceKMS: {region: r, service: ServiceKMS, port: p.KMS, hold: -1,
				handler: s.faults.middleware(r, ServiceKMS, kmsWithSTS(m, r, opts.KMS(r)))},
			ServiceSQS: {region: r, service: ServiceSQS, port: p.SQS, hold: -1,
				handler: s.calls.middleware(r, ServiceSQS, s.faults.middleware(r, ServiceSQS, m.Authenticate(r, ServiceSQS, sqsAuthError, regionalQueues(r, authorizeSQS(m, r, sqsProxy)))))},
			ServiceDynamoDB: {region: r, service: ServiceDynamoDB, port: p.DynamoDB, hold: -1,
				handler: s.calls.middleware(r, ServiceDynamoDB, s.faults.middleware(r, ServiceDynamoDB, m.Authenticate(r, ServiceDynamoDB, ddbAuthError, authorizeDynamoDB(m, r, s.global.Handler(r)))))},
			// The body limit comes before authentication, which buffers the body; a request
			// signed for another region is answered in S3's words before the signature check.
			ServiceS3: {region: r, service: ServiceS3, port: p.S3, hold: -1,
				handler: s.calls.middlewareOp(r, ServiceS3, s3OperationName, s.faults.middleware(r, ServiceS3, s3LimitBody(s3WrongRegion(r, m.Authenticate(r, ServiceS3, s3AuthError(r), s.s3.Handler(r))))))},
		}
	}
	for _, r := range regions {
		if err := s.Up(r); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Regions returns the served regions in order.
func (s *Stack) Regions() []string { return append([]string(nil), s.regions...) }

// Endpoints returns a region's endpoint URLs (stable across Down/Up).
func (s *Stack) Endpoints(region string) (config.Endpoints, error) {
	m, ok := s.eps[region]
	if !ok {
		return config.Endpoints{}, fmt.Errorf("%w %q", ErrUnknownRegion, region)
	}
	return config.Endpoints{
		KMS:      m[ServiceKMS].url(),
		SQS:      m[ServiceSQS].url(),
		DynamoDB: m[ServiceDynamoDB].url(),
		STS:      m[ServiceKMS].url(),
		S3:       m[ServiceS3].url(),
	}, nil
}

// Down closes a region's listeners and every open connection to them: clients get connection
// refused (new calls) or a reset (calls in flight), as when a region is unreachable.
func (s *Stack) Down(region string) error {
	m, ok := s.eps[region]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownRegion, region)
	}
	for _, svc := range Services {
		m[svc].down(true)
	}
	return nil
}

// Up listens again on a region's ports (the same ones as before Down).
func (s *Stack) Up(region string) error {
	m, ok := s.eps[region]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownRegion, region)
	}
	for _, svc := range Services {
		if err := m[svc].up(); err != nil {
			for _, o := range Services {
				m[o].down(true)
			}
			return err
		}
	}
	return nil
}

// IsUp reports whether a region's endpoints are listening.
func (s *Stack) IsUp(region string) bool {
	m, ok := s.eps[region]
	if !ok {
		return false
	}
	return m[ServiceKMS].isUp()
}

// Calls returns the SQS, DynamoDB and S3 requests each region's endpoints received since the
// last ResetCalls, by region and operation ("dynamodb:GetItem", "sqs:ReceiveMessage",
// "s3:PutObject"). Benchmarks
// count the round trips of a run with it.
func (s *Stack) Calls() map[string]map[string]int64 { return s.calls.snapshot() }

// ResetCalls zeroes the counters of Calls.
func (s *Stack) ResetCalls() { s.calls.reset() }

// IAM is the identities and identity policies every endpoint authenticates and authorizes with.
func (s *Stack) IAM() *iam.IAM { return s.iam }

// GlobalTables is the replication between the regions' DynamoDB replicas (lag, counters).
func (s *Stack) GlobalTables() *GlobalTables { return s.global }

// S3 is the stand-in's S3: buckets by region, notifications, replication (counters).
func (s *Stack) S3() *S3 { return s.s3 }

// SetFault injects a gray failure into region's service ("" or "all": every service of the
// region), replacing what that service had. A zero Fault clears it. Faults stay across Down/Up.
func (s *Stack) SetFault(region, service string, f Fault) error {
	svcs, err := s.faultServices(region, service)
	if err != nil {
		return err
	}
	if err := f.Validate(); err != nil {
		return err
	}
	for _, svc := range svcs {
		s.faults.set(region, svc, f)
	}
	return nil
}

// ClearFaults removes region's faults: of one service, or of all ("" or "all").
func (s *Stack) ClearFaults(region, service string) error {
	return s.SetFault(region, service, Fault{})
}

// Faults returns the active faults, region -> service -> fault.
func (s *Stack) Faults() map[string]map[string]Fault { return s.faults.all() }

func (s *Stack) faultServices(region, service string) ([]string, error) {
	if _, ok := s.eps[region]; !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownRegion, region)
	}
	if service == "" || service == "all" {
		return Services, nil
	}
	for _, svc := range Services {
		if svc == service {
			return []string{svc}, nil
		}
	}
	return nil, fmt.Errorf("%w: unknown service %q (want kms, sqs, dynamodb or s3)", ErrBadFault, service)
}

// Close takes every region down for good.
func (s *Stack) Close() error {
	s.faults.close()
	for _, r := range s.regions {
		for _, e := range s.eps[r] {
			e.down(false)
		}
	}
	s.global.Close()
	s.s3.Close()
	s.tr.CloseIdleConnections()
	return nil
}

// RegionStatus and EndpointsJSON are the admin endpoint's wire types (localaws/admin).
type (
	RegionStatus  = admin.RegionStatus
	EndpointsJSON = admin.EndpointsJSON
)

// Status reports every region.
func (s *Stack) Status() map[string]RegionStatus {
	out := map[string]RegionStatus{}
	faults := s.faults.all()
	skew := s.global.Skew()
	for _, r := range s.regions {
		ep, _ := s.Endpoints(r)
		st := RegionStatus{Up: s.IsUp(r), Endpoints: EndpointsJSON(ep), Faults: faults[r]}
		if skew[r] != 0 {
			st.ClockSkew = skew[r].String()
		}
		out[r] = st
	}
	return out
}

// endpoint is one service's listener in one region.
type endpoint struct {
	region, service string
	handler         http.Handler

	mu   sync.Mutex
	port int // fixed after the first listen, so Up re-listens on the same port
	srv  *http.Server
	ln   net.Listener
	hold int // while down: a bound, non-listening socket that keeps the port ours; else -1
}

func (e *endpoint) url() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return fmt.Sprintf("http://127.0.0.1:%d", e.port)
}

func (e *endpoint) isUp() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.srv != nil
}

func (e *endpoint) up() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		return nil
	}
	if e.hold >= 0 {
		_ = syscall.Close(e.hold)
		e.hold = -1
	}
	// Go sets SO_REUSEADDR, so the port can be taken again right after Down even with
	// connections in TIME_WAIT.
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", e.port))
	if err != nil {
		return fmt.Errorf("localaws: %s %s endpoint: %w", e.region, e.service, err)
	}
	e.port = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: e.handler, ReadHeaderTimeout: 10 * time.Second}
	e.srv, e.ln = srv, ln
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// down closes the listener and every connection. With hold, the port stays reserved until up:
// an ephemeral port (tests) could otherwise be handed to another socket while the region is
// down, and Up would fail. A bound socket that does not listen answers connects with a reset,
// so clients still see connection refused.
func (e *endpoint) down(hold bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		// Close, not Shutdown: a lost region does not let calls in flight finish.
		_ = e.srv.Close()
		// Serve may not have taken the listener yet (Down right after Up): close it here so
		// the port is free at once.
		_ = e.ln.Close()
		e.srv, e.ln = nil, nil
		if hold && e.port != 0 {
			e.hold = holdPort(e.port)
		}
	}
	if !hold && e.hold >= 0 {
		_ = syscall.Close(e.hold)
		e.hold = -1
	}
}

// holdPort binds 127.0.0.1:port without listening; -1 if that fails (the port is then merely
// free, which is fine for fixed ports).
func holdPort(port int) int {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	// SO_REUSEADDR, as the listener had: the connections Down just cut leave the port in
	// TIME_WAIT, and without it the bind fails, the port is left free, and a client's dial
	// can even connect to itself (an ephemeral source port equal to the port dialled).
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		_ = syscall.Close(fd)
		return -1
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		_ = syscall.Close(fd)
		return -1
	}
	return fd
}

// backendIdleTimeout is how long a pooled connection to a backend may stay idle before the
// proxies close it themselves. It must stay well below the keep-alive timeout of every backend:
// fauxqs (Fastify) closes a connection idle for 72 s, DynamoDB Local (Jetty) after 30 s, Node's
// own default is 5 s. With Go's default (90 s) the proxy kept connections the backend had
// already decided to close, and reusing one just as the backend closed it lost the request, or
// cut the response: see docs/LOCAL.md, "The cut SQS response". A var for the test only.
var backendIdleTimeout = 2 * time.Second

// newBackendTransport is the one transport of all proxies: pooled connections to the backends,
// closed by us before the backend would, and never an environment proxy (HTTP_PROXY must not
// capture loopback traffic).
func newBackendTransport() *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     backendIdleTimeout,
		DisableCompression:  true,
	}
}

// retryReused retries a request once on a fresh connection when it failed on a pooled one: the
// backend may close an idle connection at the very moment the proxy reuses it (its keep-alive
// timer and the proxy's idle timeout race, and on a loaded machine the proxy's timer fires
// late), which loses the request or cuts the response although the backend is fine. A fresh
// connection has no such race, so a failure on one is returned as it is. The body is buffered
// so it can be sent again (the stand-in's bodies are small: AWS caps them at a few MiB).
type retryReused struct{ next http.RoundTripper }

func (t retryReused) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	for attempt := 0; ; attempt++ {
		reused := false
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		r := req.Clone(httptrace.WithClientTrace(req.Context(), trace))
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			r.ContentLength = int64(len(body))
		}
		resp, err := t.next.RoundTrip(r)
		if err == nil || !reused || attempt > 0 || req.Context().Err() != nil {
			return resp, err
		}
	}
}

// newProxy forwards to a backend, keeping the client's Host header: fauxqs builds queue URLs
// from it, so the URLs it returns point at this region's SQS endpoint.
func newProxy(target *url.URL, tr http.RoundTripper) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
		Transport:     retryReused{tr},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return // the client went away (or the region went down)
			}
			writeAWSError(w, http.StatusBadGateway, "ServiceUnavailable",
				"envdr local stand-in: backend unreachable: "+err.Error())
		},
	}
}

// writeAWSError answers in the AWS JSON protocol's error shape, which every SDK client we use
// (KMS, SQS JSON, DynamoDB) decodes into a typed API error.
func writeAWSError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", code)
	w.Header().Set("X-Amzn-Query-Error", code+";Sender")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"__type":%q,"message":%q}`, code, msg)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
