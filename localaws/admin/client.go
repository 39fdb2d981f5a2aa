package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to a running stand-in's admin endpoint (the config's local.admin).
type Client struct {
	BaseURL string
	HTTP    *http.Client
}

// NewClient returns a client for the admin endpoint at baseURL.
func NewClient(baseURL string) *Client {
	return &Client{
		BaseURL: strings.TrimRight(baseURL, "/"),
		HTTP:    &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}},
	}
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
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
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/readyz", nil)
}

// Status returns every region's state.
func (c *Client) Status(ctx context.Context) (map[string]RegionStatus, error) {
	var out map[string]RegionStatus
	return out, c.do(ctx, http.MethodGet, "/regions", &out)
}

// Down loses a region.
func (c *Client) Down(ctx context.Context, region string) error {
	return c.do(ctx, http.MethodPost, "/regions/"+region+"/down", nil)
}

// Up restores a region.
func (c *Client) Up(ctx context.Context, region string) error {
	return c.do(ctx, http.MethodPost, "/regions/"+region+"/up", nil)
}

// Counters returns the KMS call counters, region -> operation -> calls.
func (c *Client) Counters(ctx context.Context) (map[string]map[string]int64, error) {
	var out map[string]map[string]int64
	return out, c.do(ctx, http.MethodGet, "/kms/counters", &out)
}

// ResetCounters zeroes the KMS call counters.
func (c *Client) ResetCounters(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/kms/counters/reset", nil)
}

// SetRateLimit limits a region's KMS to rps requests per second; 0 removes the limit.
func (c *Client) SetRateLimit(ctx context.Context, region string, rps float64) error {
	if rps == 0 {
		return c.do(ctx, http.MethodDelete, "/kms/ratelimit/"+region, nil)
	}
	return c.do(ctx, http.MethodPut, "/kms/ratelimit/"+region+"?rps="+strconv.FormatFloat(rps, 'f', -1, 64), nil)
}

// Replication returns the global tables' counters per direction.
func (c *Client) Replication(ctx context.Context) ([]PairStats, error) {
	var out []PairStats
	return out, c.do(ctx, http.MethodGet, "/replication", &out)
}

// S3 returns the stand-in's S3: buckets, replication per direction, notifications. A stand-in
// from before S3 answers 404: an error.
func (c *Client) S3(ctx context.Context) (S3Status, error) {
	var out S3Status
	return out, c.do(ctx, http.MethodGet, "/s3", &out)
}

// SetLag sets the replication lag from one region to another ("" for every region).
func (c *Client) SetLag(ctx context.Context, from, to string, lag time.Duration) error {
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
func (c *Client) SetLagJitter(ctx context.Context, from, to string, lag, jitter time.Duration, seed *uint64) error {
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
func (c *Client) SetSkew(ctx context.Context, region string, skew time.Duration) error {
	return c.do(ctx, http.MethodPut, "/replication/skew/"+url.PathEscape(region)+"?skew="+url.QueryEscape(skew.String()), nil)
}

// Faults returns the active gray failures, region -> service -> fault.
func (c *Client) Faults(ctx context.Context) (map[string]map[string]Fault, error) {
	var out map[string]map[string]Fault
	return out, c.do(ctx, http.MethodGet, "/faults", &out)
}

// SetFault injects f into region's service ("": every service of the region), replacing what
// was there, and returns the region's faults afterwards.
func (c *Client) SetFault(ctx context.Context, region, service string, f Fault) (map[string]Fault, error) {
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
func (c *Client) ClearFaults(ctx context.Context, region, service string) error {
	path := "/faults/" + url.PathEscape(region)
	if service != "" {
		path += "?service=" + url.QueryEscape(service)
	}
	return c.do(ctx, http.MethodDelete, path, nil)
}
