package sim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
)

// `envdr open --region R` is the CLI's own code (package main): the simulation runs the envdr
// binary, built once from this tree, against the world's regions served on loopback sockets
// (the same handlers, the same losses and faults), with a config naming those endpoints.

var cliBin struct {
	once sync.Once
	path string
	err  error
}

// envdrBinary builds cmd/envdr once per test process (ENVDR_SIM_BIN names a prebuilt one).
func envdrBinary() (string, error) {
	cliBin.once.Do(func() {
		if p := os.Getenv("ENVDR_SIM_BIN"); p != "" {
			cliBin.path = p
			return
		}
		dir, err := os.MkdirTemp("", "envdr-sim-bin-")
		if err != nil {
			cliBin.err = err
			return
		}
		cliBin.path = filepath.Join(dir, "envdr")
		out, err := exec.Command("go", "build", "-o", cliBin.path, "github.com/envdr/envdr/cmd/envdr").CombinedOutput()
		if err != nil {
			cliBin.err = fmt.Errorf("build envdr: %v: %s", err, out)
		}
	})
	return cliBin.path, cliBin.err
}

// sockets serves the world's endpoints on loopback, one listener per service and region.
type sockets struct {
	srvs []*http.Server
	urls map[string]string // service|region -> base URL
}

func (w *world) serveSockets() (*sockets, error) {
	s := &sockets{urls: map[string]string{}}
	for _, r := range Regions {
		for _, svc := range []string{"kms", "dynamodb"} {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				s.close()
				return nil, err
			}
			sess := &session{n: w.net, name: "socket"}
			host := svc + "." + r + ".sim"
			h := http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
				out := req.Clone(req.Context())
				out.URL.Scheme, out.URL.Host, out.Host = "http", host, host
				out.RequestURI = ""
				resp, err := sess.Do(out)
				if err != nil {
					// A lost region: drop the connection, as a refused or reset one looks.
					if hj, ok := rw.(http.Hijacker); ok {
						if c, _, err := hj.Hijack(); err == nil {
							_ = c.Close()
							return
						}
					}
					rw.WriteHeader(http.StatusBadGateway)
					return
				}
				defer resp.Body.Close()
				for k, vs := range resp.Header {
					for _, v := range vs {
						rw.Header().Add(k, v)
					}
				}
				rw.WriteHeader(resp.StatusCode)
				_, _ = io.Copy(rw, resp.Body)
			})
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = srv.Serve(ln) }()
			s.srvs = append(s.srvs, srv)
			s.urls[svc+"|"+r] = "http://" + ln.Addr().String()
		}
	}
	return s, nil
}

// config is c with the sockets' endpoints.
func (s *sockets) config(c0 *config.Config) *config.Config {
	c := *c0
	c.Regions = append([]config.Region(nil), c.Regions...)
	for i := range c.Regions {
		n := c.Regions[i].Name
		c.Regions[i].Endpoints = config.Endpoints{KMS: s.urls["kms|"+n], DynamoDB: s.urls["dynamodb|"+n]}
	}
	return &c
}

func (s *sockets) close() {
	for _, srv := range s.srvs {
		_ = srv.Close()
	}
}

// openCLI runs `envdr open --region region` on envelope e and checks what it says.
func (w *world) openCLI(ctx context.Context, e *sealed, region, dir string) error {
	bin, err := envdrBinary()
	if err != nil {
		return err
	}
	acked := w.ackedNow()[e.hdr.RecordID()]
	healthy := w.isHealthyRequired(region)
	socks, err := w.serveSockets()
	if err != nil {
		return err
	}
	defer socks.close()
	cfgPath := filepath.Join(dir, "envdr.yaml")
	if err := localaws.WriteConfig(cfgPath, socks.config(w.config())); err != nil {
		return err
	}
	in := filepath.Join(dir, "open-"+short(e.hdr.RecordID())+".envdr")
	if err := os.WriteFile(in, e.data, 0o600); err != nil {
		return err
	}
	out := in + "." + region + ".out"
	_ = os.Remove(out)
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, "--config", cfgPath, "--log-level", "debug", "open", "--region", region, in, out)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "ENVDR_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	runErr := cmd.Run()
	_, _ = w.logs.Write(stderr.Bytes()) // the CLI's output is scanned for secrets too (I6)
	w.mu.Lock()
	w.stats.Opens++
	w.mu.Unlock()
	got, readErr := os.ReadFile(out)
	switch {
	case runErr == nil && (readErr != nil || !bytes.Equal(got, e.plain)):
		w.addOpenFail(fmt.Sprintf("envdr open --region %s of envelope %s exited 0 but did not write its plaintext", region, short(e.hdr.RecordID())))
	case runErr != nil && acked && healthy:
		w.addOpenFail(fmt.Sprintf("envdr open --region %s could not open acknowledged envelope %s: %s", region, short(e.hdr.RecordID()),
			strings.TrimSpace(lastLine(stderr.String()))))
	}
	return nil
}

func (w *world) addOpenFail(s string) {
	w.mu.Lock()
	w.openFails = append(w.openFails, s)
	w.mu.Unlock()
}

// isHealthyRequired reports whether region is required, up and without a KMS fault.
func (w *world) isHealthyRequired(region string) bool {
	req := false
	for _, r := range w.config().Policy.Required {
		req = req || r == region
	}
	w.net.mu.Lock()
	defer w.net.mu.Unlock()
	f := w.net.faults[region+"|kms"]
	return req && !w.net.down[region] && !w.net.down[region+"|kms"] && f.errRate == 0 && f.throttle == 0 && f.latency == 0
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "envdr: error") {
			return lines[i]
		}
	}
	return lines[len(lines)-1]
}
