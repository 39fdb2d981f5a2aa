package localaws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/envdr/envdr/internal/localaws/iam"
)

// KMSHooks are the test hooks of the KMS stand-in the admin endpoint exposes
// (kms.Service implements them).
type KMSHooks interface {
	SetRateLimit(region string, rps float64)
	// SetClassRateLimit limits one quota class, "cryptographic" or "management".
	SetClassRateLimit(region, class string, rps float64)
	Counters() map[string]map[string]int64
	ResetCounters()
}

// Admin serves the stand-in's admin endpoint:
//
//	GET  /healthz                         the process is alive
//	GET  /readyz                          200 once resources are provisioned and the config written
//	GET  /regions                         every region: up or down, endpoints
//	POST /regions/{region}/down           lose a region (listeners and connections closed)
//	POST /regions/{region}/up             restore it on the same ports
//	GET  /kms/counters                    {region: {operation: calls}}
//	POST /kms/counters/reset              zero the counters
//	PUT  /kms/ratelimit/{region}?rps=N[&class=cryptographic|management]
//	                                      ThrottlingException past N requests/s in the region, per quota class
//	DELETE /kms/ratelimit/{region}        no rate limit
//	GET  /replication                     global tables: per direction lag, jitter, latency, conflicts
//	PUT  /replication/lag?lag=D[&jitter=J][&seed=N][&from=R1][&to=R2]
//	                                      set the replication lag (all pairs by default), and the
//	                                      jitter when given: each item waits D plus up to J;
//	                                      seed restarts the jitter's random source
//	PUT  /replication/skew/{region}?skew=D  offset the region's write clock (last writer wins)
//	GET  /faults                          active gray failures: {region: {service: fault}}
//	PUT  /faults/{region}?service=S&latency=D[±J]&error_rate=P&blackhole=true
//	                                      inject a gray failure (replaces the service's fault;
//	                                      without service: every service of the region)
//	                                      (or the same as a JSON body)
//	DELETE /faults/{region}[?service=S]   clear the region's faults (or one service's)
//	DELETE /faults                        clear every fault
//	GET  /iam/roles                       the roles: name, ARN, access key (no secrets)
//	GET  /iam/roles/{role}/policy         the role's identity policies (a JSON array)
//	PUT  /iam/roles/{role}/policy         replace them (a document or an array; [] for none)
//	POST /iam/simulate                    {"role","region","action","resource","context"}: allowed?
type Admin struct {
	Stack *Stack
	KMS   KMSHooks
	// IAM, when set, adds /iam/roles, /iam/roles/{role}/policy and /iam/simulate.
	IAM   *iam.IAM
	ready atomic.Bool
}

// SetReady marks the stand-in ready (answers /readyz).
func (a *Admin) SetReady() { a.ready.Store(true) }

// Handler returns the admin HTTP handler.
func (a *Admin) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, map[string]bool{"ok": true}) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready: provisioning", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, map[string]bool{"ready": true})
	})
	if a.IAM != nil {
		a.IAM.Register(mux)
	}
	mux.HandleFunc("GET /regions", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.Stack.Status()) })
	mux.HandleFunc("POST /regions/{region}/{action}", func(w http.ResponseWriter, r *http.Request) {
		region := r.PathValue("region")
		var err error
		switch r.PathValue("action") {
		case "down":
			err = a.Stack.Down(region)
		case "up":
			err = a.Stack.Up(region)
		default:
			http.Error(w, "action must be down or up", http.StatusNotFound)
			return
		}
		if err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, ErrUnknownRegion) {
				code = http.StatusNotFound
			}
			http.Error(w, err.Error(), code)
			return
		}
		writeJSON(w, a.Stack.Status()[region])
	})
	mux.HandleFunc("GET /kms/counters", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.KMS.Counters()) })
	mux.HandleFunc("POST /kms/counters/reset", func(w http.ResponseWriter, r *http.Request) {
		a.KMS.ResetCounters()
		writeJSON(w, map[string]bool{"reset": true})
	})
	mux.HandleFunc("PUT /kms/ratelimit/{region}", func(w http.ResponseWriter, r *http.Request) {
		region := r.PathValue("region")
		if _, ok := a.Stack.eps[region]; !ok {
			http.Error(w, fmt.Sprintf("unknown region %q", region), http.StatusNotFound)
			return
		}
		rps, err := strconv.ParseFloat(r.URL.Query().Get("rps"), 64)
		if err != nil || rps < 0 {
			http.Error(w, "rps must be a number >= 0 (0 removes the limit)", http.StatusBadRequest)
			return
		}
		switch class := r.URL.Query().Get("class"); class {
		case "":
			a.KMS.SetRateLimit(region, rps)
		case "cryptographic", "management":
			a.KMS.SetClassRateLimit(region, class, rps)
		default:
			http.Error(w, "class must be cryptographic or management (or absent: both)", http.StatusBadRequest)
			return
		}
		writeJSON(w, map[string]any{"region": region, "rps": rps})
	})
	mux.HandleFunc("DELETE /kms/ratelimit/{region}", func(w http.ResponseWriter, r *http.Request) {
		region := r.PathValue("region")
		if _, ok := a.Stack.eps[region]; !ok {
			http.Error(w, fmt.Sprintf("unknown region %q", region), http.StatusNotFound)
			return
		}
		a.KMS.SetRateLimit(region, 0)
		writeJSON(w, map[string]any{"region": region, "rps": 0})
	})
	mux.HandleFunc("GET /replication", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.Stack.GlobalTables().Stats()) })
	mux.HandleFunc("PUT /replication/lag", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		lag, err := time.ParseDuration(q.Get("lag"))
		if err != nil {
			http.Error(w, "lag must be a duration such as 250ms or 2s", http.StatusBadRequest)
			return
		}
		jitter := time.Duration(-1) // absent: unchanged
		if v := q.Get("jitter"); v != "" {
			if jitter, err = time.ParseDuration(v); err != nil || jitter < 0 {
				http.Error(w, "jitter must be a duration >= 0 such as 100ms", http.StatusBadRequest)
				return
			}
		}
		var seed uint64
		if v := q.Get("seed"); v != "" {
			if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
				http.Error(w, "seed must be an unsigned integer", http.StatusBadRequest)
				return
			}
		}
		// All checked before any is set: a bad request changes nothing.
		g := a.Stack.GlobalTables()
		err = g.SetLag(q.Get("from"), q.Get("to"), lag)
		if err == nil && jitter >= 0 {
			err = g.SetJitter(q.Get("from"), q.Get("to"), jitter)
		}
		if err == nil && q.Has("seed") {
			g.SetSeed(seed)
		}
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, ErrUnknownRegion) {
				code = http.StatusNotFound
			}
			http.Error(w, err.Error(), code)
			return
		}
		writeJSON(w, a.Stack.GlobalTables().Stats())
	})
	mux.HandleFunc("PUT /replication/skew/{region}", func(w http.ResponseWriter, r *http.Request) {
		region := r.PathValue("region")
		skew, err := time.ParseDuration(r.URL.Query().Get("skew"))
		if err != nil {
			http.Error(w, "skew must be a duration such as 300ms or -300ms", http.StatusBadRequest)
			return
		}
		if err := a.Stack.GlobalTables().SetSkew(region, skew); err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, ErrUnknownRegion) {
				code = http.StatusNotFound
			}
			http.Error(w, err.Error(), code)
			return
		}
		writeJSON(w, a.Stack.Status()[region])
	})
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.Stack.Faults()) })
	mux.HandleFunc("PUT /faults/{region}", func(w http.ResponseWriter, r *http.Request) {
		region := r.PathValue("region")
		q, err := faultParams(r)
		if err != nil {
			writeFaultError(w, err)
			return
		}
		f, err := faultFromQuery(q)
		if err == nil && f.IsZero() {
			err = fmt.Errorf("%w: nothing to inject: give latency, error_rate or blackhole (DELETE clears)", ErrBadFault)
		}
		if err == nil {
			err = a.Stack.SetFault(region, q.Get("service"), f)
		}
		if err != nil {
			writeFaultError(w, err)
			return
		}
		writeJSON(w, a.Stack.Faults()[region])
	})
	mux.HandleFunc("DELETE /faults", func(w http.ResponseWriter, r *http.Request) {
		for _, region := range a.Stack.Regions() {
			_ = a.Stack.ClearFaults(region, "")
		}
		writeJSON(w, a.Stack.Faults())
	})
	mux.HandleFunc("DELETE /faults/{region}", func(w http.ResponseWriter, r *http.Request) {
		region := r.PathValue("region")
		if err := a.Stack.ClearFaults(region, r.URL.Query().Get("service")); err != nil {
			writeFaultError(w, err)
			return
		}
		writeJSON(w, a.Stack.Faults()[region])
	})
	return mux
}

// faultParams returns a PUT /faults request's parameters: the query, over those of an optional
// JSON body {"service": "kms", "latency": "200ms±50ms", "jitter": "50ms", "error_rate": 0.3 or
// "30%", "blackhole": true}.
func faultParams(r *http.Request) (url.Values, error) {
	q := r.URL.Query()
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil || len(strings.TrimSpace(string(body))) == 0 {
		return q, nil
	}
	var b struct {
		Service   string          `json:"service"`
		Latency   string          `json:"latency"`
		Jitter    string          `json:"jitter"`
		ErrorRate json.RawMessage `json:"error_rate"`
		Blackhole *bool           `json:"blackhole"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("%w: JSON body: %v", ErrBadFault, err)
	}
	out := url.Values{}
	set := func(k, v string) {
		if v != "" {
			out.Set(k, v)
		}
	}
	set("service", b.Service)
	set("latency", b.Latency)
	set("jitter", b.Jitter)
	if len(b.ErrorRate) > 0 {
		var str string
		if json.Unmarshal(b.ErrorRate, &str) != nil {
			str = string(b.ErrorRate)
		}
		set("error_rate", str)
	}
	if b.Blackhole != nil {
		out.Set("blackhole", strconv.FormatBool(*b.Blackhole))
	}
	for k, v := range q { // the query wins
		out[k] = v
	}
	return out, nil
}

// faultFromQuery reads latency (D, D±J or D+-J), jitter, error_rate (0.3 or 30%) and
// blackhole (true/false) from a PUT /faults query.
func faultFromQuery(q url.Values) (Fault, error) {
	var f Fault
	var err error
	if v := q.Get("latency"); v != "" {
		if f.Latency, f.Jitter, err = ParseLatency(v); err != nil {
			return f, err
		}
	}
	if v := q.Get("jitter"); v != "" {
		if f.Jitter, err = time.ParseDuration(v); err != nil || f.Jitter < 0 {
			return f, fmt.Errorf("%w: jitter %q: want a duration >= 0", ErrBadFault, v)
		}
	}
	if v := q.Get("error_rate"); v != "" {
		if f.ErrorRate, err = ParseErrorRate(v); err != nil {
			return f, err
		}
	}
	if v := q.Get("blackhole"); v != "" {
		if f.Blackhole, err = strconv.ParseBool(v); err != nil {
			return f, fmt.Errorf("%w: blackhole %q: want true or false", ErrBadFault, v)
		}
	}
	return f, f.Validate()
}

func writeFaultError(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	if errors.Is(err, ErrUnknownRegion) {
		code = http.StatusNotFound
	}
	http.Error(w, err.Error(), code)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// AdminClient talks to a running stand-in's admin endpoint (the config's local.admin).
type AdminClient struct {
	BaseURL string
	HTTP    *http.Client
}

// NewAdminClient returns a client for the admin endpoint at baseURL.
func NewAdminClient(baseURL string) *AdminClient {
	return &AdminClient{
		BaseURL: strings.TrimRight(baseURL, "/"),
		HTTP:    &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}},
	}
}

func (c *AdminClient) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("local stand-in admin %s: %w (is `make local-up` running?)", c.BaseURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("local stand-in admin %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// Ready reports whether the stand-in answers /readyz.
func (c *AdminClient) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/readyz", nil)
}

// Status returns every region's state.
func (c *AdminClient) Status(ctx context.Context) (map[string]RegionStatus, error) {
	var out map[string]RegionStatus
	return out, c.do(ctx, http.MethodGet, "/regions", &out)
}

// Down loses a region.
func (c *AdminClient) Down(ctx context.Context, region string) error {
	return c.do(ctx, http.MethodPost, "/regions/"+region+"/down", nil)
}

// Up restores a region.
func (c *AdminClient) Up(ctx context.Context, region string) error {
	return c.do(ctx, http.MethodPost, "/regions/"+region+"/up", nil)
}

// Counters returns the KMS call counters, region -> operation -> calls.
func (c *AdminClient) Counters(ctx context.Context) (map[string]map[string]int64, error) {
	var out map[string]map[string]int64
	return out, c.do(ctx, http.MethodGet, "/kms/counters", &out)
}

// ResetCounters zeroes the KMS call counters.
func (c *AdminClient) ResetCounters(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/kms/counters/reset", nil)
}

// SetRateLimit limits a region's KMS to rps requests per second; 0 removes the limit.
func (c *AdminClient) SetRateLimit(ctx context.Context, region string, rps float64) error {
	if rps == 0 {
		return c.do(ctx, http.MethodDelete, "/kms/ratelimit/"+region, nil)
	}
	return c.do(ctx, http.MethodPut, "/kms/ratelimit/"+region+"?rps="+strconv.FormatFloat(rps, 'f', -1, 64), nil)
}

// Replication returns the global tables' counters per direction.
func (c *AdminClient) Replication(ctx context.Context) ([]PairStats, error) {
	var out []PairStats
	return out, c.do(ctx, http.MethodGet, "/replication", &out)
}

// SetLag sets the replication lag from one region to another ("" for every region).
func (c *AdminClient) SetLag(ctx context.Context, from, to string, lag time.Duration) error {
	q := url.Values{"lag": {lag.String()}}
	if from != "" {
		q.Set("from", from)
	}
	if to != "" {
		q.Set("to", to)
	}
	return c.do(ctx, http.MethodPut, "/replication/lag?"+q.Encode(), nil)
}

// SetLagJitter sets the replication lag and jitter from one region to another ("" for every
// region): each change waits lag plus a random share of jitter, drawn per item. A non-nil seed
// restarts the jitter's random source from it (a reproducible schedule).
func (c *AdminClient) SetLagJitter(ctx context.Context, from, to string, lag, jitter time.Duration, seed *uint64) error {
	q := url.Values{"lag": {lag.String()}, "jitter": {jitter.String()}}
	if seed != nil {
		q.Set("seed", strconv.FormatUint(*seed, 10))
	}
	if from != "" {
		q.Set("from", from)
	}
	if to != "" {
		q.Set("to", to)
	}
	return c.do(ctx, http.MethodPut, "/replication/lag?"+q.Encode(), nil)
}

// SetSkew offsets region's write clock by skew (negative: behind).
func (c *AdminClient) SetSkew(ctx context.Context, region string, skew time.Duration) error {
	return c.do(ctx, http.MethodPut, "/replication/skew/"+url.PathEscape(region)+"?skew="+url.QueryEscape(skew.String()), nil)
}

// Faults returns the active gray failures, region -> service -> fault.
func (c *AdminClient) Faults(ctx context.Context) (map[string]map[string]Fault, error) {
	var out map[string]map[string]Fault
	return out, c.do(ctx, http.MethodGet, "/faults", &out)
}

// SetFault injects f into region's service ("": every service of the region), replacing what
// was there, and returns the region's faults afterwards.
func (c *AdminClient) SetFault(ctx context.Context, region, service string, f Fault) (map[string]Fault, error) {
	q := url.Values{}
	if service != "" {
		q.Set("service", service)
	}
	if f.Latency > 0 {
		q.Set("latency", f.Latency.String())
	}
	if f.Jitter > 0 {
		q.Set("jitter", f.Jitter.String())
	}
	if f.ErrorRate > 0 {
		q.Set("error_rate", strconv.FormatFloat(f.ErrorRate, 'f', -1, 64))
	}
	if f.Blackhole {
		q.Set("blackhole", "true")
	}
	var out map[string]Fault
	return out, c.do(ctx, http.MethodPut, "/faults/"+url.PathEscape(region)+"?"+q.Encode(), &out)
}

// ClearFaults removes region's faults (of one service, or all with service "").
func (c *AdminClient) ClearFaults(ctx context.Context, region, service string) error {
	path := "/faults/" + url.PathEscape(region)
	if service != "" {
		path += "?service=" + url.QueryEscape(service)
	}
	return c.do(ctx, http.MethodDelete, path, nil)
}
