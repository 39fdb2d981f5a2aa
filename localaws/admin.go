package localaws

import (
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

	"github.com/envdr/envdr/localaws/admin"
	"github.com/envdr/envdr/localaws/iam"
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
//	                                      (S3 replication takes the same lag and jitter)
//	PUT  /replication/skew/{region}?skew=D  offset the region's write clock (last writer wins)
//	GET  /s3                              S3: buckets by region, replication per direction
//	                                      (replicated, conflicts, pending, latency), notifications
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
	mux.HandleFunc("GET /s3", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.Stack.S3().Status()) })
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

// AdminClient is the admin endpoint's client; it lives in localaws/admin so that envdr's
// `local` commands reach the stand-in without linking it.
type AdminClient = admin.Client

// NewAdminClient returns a client for the admin endpoint at baseURL.
func NewAdminClient(baseURL string) *AdminClient { return admin.NewClient(baseURL) }
