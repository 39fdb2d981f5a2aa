package localaws

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestProxyOutlivesBackendKeepAlive reproduces the cut SQS response (issue 14): a backend that
// closes idle keep-alive connections on its own timer, as fauxqs (Fastify, 72 s) does, hammered
// through the proxy with requests arriving just as that timer fires. With Go's default pool
// (connections kept 90 s, far longer than the backend keeps them) the proxy reused a connection
// the backend was closing: the POST was lost (502 "backend unreachable: EOF / connection reset
// / broken pipe", which httputil.ReverseProxy cannot retry for a POST) or, worse, the
// Transport closed the connection while the proxy was still copying a 200 response, and the
// client read "unexpected EOF" (for ReceiveMessage: messages already made invisible, left to
// their visibility timeout). The proxies now drop idle connections well before any backend
// does (backendIdleTimeout), so no request ever meets a closing connection.
//
// Times are scaled down: the backend here keeps idle connections 60 ms, the proxy 15 ms (in
// the stand-in 72 s and 2 s): the proxy's idle timer may fire up to 45 ms late on a loaded
// machine (at 30 ms and 10 ms it flaked under a load of 10 on 2 cores), and requests still
// arrive within ±4 ms of the backend's close. It hit the old 90 s pool only sometimes (the
// window is narrow); the cut responses the daemon saw had another cause, which
// regions/body_test.go reproduces deterministically (docs/LOCAL.md, "The cut SQS response"). Not a timing measurement: it counts failed requests, which must be none.
func TestProxyOutlivesBackendKeepAlive(t *testing.T) {
	const keepAlive = 60 * time.Millisecond
	old := backendIdleTimeout
	backendIdleTimeout = keepAlive / 4
	t.Cleanup(func() { backendIdleTimeout = old })

	body := `{"Messages":[` + strings.Repeat(`{"MessageId":"m","Body":"`+strings.Repeat("e", 400)+`"},`, 6) + `{}]}`
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		_, _ = io.WriteString(w, body)
	}))
	backend.Config.IdleTimeout = keepAlive // closes a connection idle this long, like Node's keepAliveTimeout
	backend.Start()
	t.Cleanup(backend.Close)
	u, err := url.Parse(backend.URL)
	require.NoError(t, err)
	tr := newBackendTransport()
	t.Cleanup(tr.CloseIdleConnections)
	// As in the stand-in: the region's SQS filter in front of the proxy (it buffers the body).
	front := httptest.NewServer(regionalQueues("us-east-1", newProxy(u, tr)))
	t.Cleanup(front.Close)

	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	t.Cleanup(client.CloseIdleConnections)
	var mu sync.Mutex
	failures := map[string]int{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 14))
			for range 60 {
				// Arrive around the moment the backend closes the connection this one last used.
				time.Sleep(keepAlive - 4*time.Millisecond + time.Duration(rng.Int64N(int64(8*time.Millisecond))))
				outcome := post(client, front.URL, body)
				if outcome != "" {
					mu.Lock()
					failures[outcome]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	require.Empty(t, failures, "requests lost or responses cut between the proxy and a backend closing idle connections")
}

// post sends one SQS-like POST and returns "" if the whole expected response came back, else
// what went wrong.
func post(c *http.Client, url, want string) string {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"QueueUrl":"http://sqs.us-east-1.localhost:1/000000000000/q"}`))
	req.Header.Set("X-Amz-Target", "AmazonSQS.ReceiveMessage")
	resp, err := c.Do(req)
	if err != nil {
		return "request: " + err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return fmt.Sprintf("status %d, body cut: %v", resp.StatusCode, err)
	case resp.StatusCode != http.StatusOK:
		return fmt.Sprintf("status %d: %s", resp.StatusCode, b)
	case string(b) != want:
		return "wrong body"
	}
	return ""
}
