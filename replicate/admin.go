package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Readiness tracks which required regions have answered; /readyz is 200 once all have.
type Readiness struct {
	mu       sync.Mutex
	required []string
	answered map[string]time.Time
	running  bool
}

// NewReadiness starts with no region answered.
func NewReadiness(required []string) *Readiness {
	return &Readiness{required: required, answered: map[string]time.Time{}}
}

// Answered records that region answered (a successful call).
func (r *Readiness) Answered(region string) {
	r.mu.Lock()
	r.answered[region] = time.Now()
	r.mu.Unlock()
}

// SetRunning marks the consumer as running (or stopping).
func (r *Readiness) SetRunning(v bool) {
	r.mu.Lock()
	r.running = v
	r.mu.Unlock()
}

// Status returns whether the daemon is ready and what is missing.
func (r *Readiness) Status() (ready bool, missing []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, reg := range r.required {
		if _, ok := r.answered[reg]; !ok {
			missing = append(missing, reg)
		}
	}
	return r.running && len(missing) == 0, missing
}

// AdminServer serves /healthz, /readyz and /metrics.
type AdminServer struct {
	srv *http.Server
	ln  net.Listener
}

// StartAdmin listens on addr and serves the admin endpoints until Close.
func StartAdmin(addr string, m *Metrics, ready *Readiness) (*AdminServer, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, missing := ready.Status()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": ok, "regions_not_answered": missing})
	})
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &AdminServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener was closed under us; nothing to report to
		}
	}()
	return s, nil
}

// Addr is the address actually listened on (useful with port 0).
func (s *AdminServer) Addr() string { return s.ln.Addr().String() }

// Close shuts the server down.
func (s *AdminServer) Close(ctx context.Context) error { return s.srv.Shutdown(ctx) }
