package localaws

import (
	"maps"
	"net/http"
	"strings"
	"sync"
)

// callCounter counts the SQS and DynamoDB requests a stack's endpoints receive, by region and
// operation (the JSON protocols name it in X-Amz-Target: "DynamoDB_20120810.GetItem",
// "AmazonSQS.ReceiveMessage"; the SQS query protocol in the Action parameter).
type callCounter struct {
	mu sync.Mutex
	n  map[string]map[string]int64
}

func (c *callCounter) middleware(region, service string, next http.Handler) http.Handler {
	return c.middlewareOp(region, service, func(r *http.Request) string {
		op := r.Header.Get("X-Amz-Target")
		if i := strings.LastIndexByte(op, '.'); i >= 0 {
			op = op[i+1:]
		}
		if op == "" {
			op = r.URL.Query().Get("Action")
		}
		return op
	}, next)
}

// middlewareOp counts requests by the operation opOf names (S3's REST requests name theirs by
// method, path and query).
func (c *callCounter) middlewareOp(region, service string, opOf func(*http.Request) string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := opOf(r)
		c.mu.Lock()
		if c.n == nil {
			c.n = map[string]map[string]int64{}
		}
		if c.n[region] == nil {
			c.n[region] = map[string]int64{}
		}
		c.n[region][service+":"+op]++
		c.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (c *callCounter) snapshot() map[string]map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return copyNested(c.n)
}

// copyNested copies a two-level map (region -> name -> value).
func copyNested[V any](m map[string]map[string]V) map[string]map[string]V {
	out := make(map[string]map[string]V, len(m))
	for r, inner := range m {
		out[r] = maps.Clone(inner)
	}
	return out
}

func (c *callCounter) reset() {
	c.mu.Lock()
	c.n = nil
	c.mu.Unlock()
}
