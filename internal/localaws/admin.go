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
//	GET  /replication                     global tables: per direction lag, latency, conflicts
//	PUT  /replication/lag?lag=D[&from=R1][&to=R2]   set the replication lag (all pairs by default)
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
		if err := a.Stack.GlobalTables().SetLag(q.Get("from"), q.Get("to"), lag); err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, ErrUnknownRegion) {
				code = http.StatusNotFound
			}
			http.Error(w, err.Error(), code)
			return
		}
		writeJSON(w, a.Stack.GlobalTables().Stats())
	})
	return mux
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
