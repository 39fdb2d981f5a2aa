// Command healthcheck probes envdr's admin endpoint for container health checks. The runtime
// image is distroless (no shell, no curl), so ECS's CMD health check runs this static binary.
//
//	healthcheck [URL]   exit 0 if GET URL answers 2xx within 3 s (default http://127.0.0.1:9090/healthz)
package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

const defaultURL = "http://127.0.0.1:9090/healthz"

func main() {
	url := defaultURL
	if len(os.Args) > 1 {
		url = os.Args[1]
	}
	if err := probe(url, 3*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

// probe returns nil if GET url answers 2xx within timeout.
func probe(url string, timeout time.Duration) error {
	c := http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
