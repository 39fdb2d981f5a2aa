package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.WriteHeader(http.StatusOK)
		case "/slow":
			time.Sleep(200 * time.Millisecond)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	require.NoError(t, probe(srv.URL+"/healthz", time.Second))
	require.ErrorContains(t, probe(srv.URL+"/readyz", time.Second), "503")
	require.Error(t, probe(srv.URL+"/slow", 50*time.Millisecond))
	require.Error(t, probe("http://127.0.0.1:1/healthz", time.Second))
}
