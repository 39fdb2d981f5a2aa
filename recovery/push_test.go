package recovery_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/recovery"
)

// A drill pushes its outcome to a Pushgateway; a failed drill leaves the last success out, so
// the gateway keeps the previous one and the staleness alert keeps counting from it.
func TestPushDrill(t *testing.T) {
	var mu sync.Mutex
	var bodies, paths, methods []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies, paths, methods = append(bodies, string(b)), append(paths, r.URL.Path), append(methods, r.Method)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	rep := &recovery.DrillReport{Lost: "eu-west-1", Passed: true, FinishedAt: time.Unix(1_800_000_000, 0), RTOSeconds: 2.5,
		RecoverablePercent: 100}
	require.NoError(t, recovery.PushDrill(context.Background(), srv.URL, rep))
	rep.Passed, rep.Unrecoverable, rep.RecoverablePercent = false, 3, 97
	require.NoError(t, recovery.PushDrill(context.Background(), srv.URL, rep))
	require.Equal(t, []string{"POST", "POST"}, methods, "POST replaces only the metrics pushed")
	require.Equal(t, "/metrics/job/envdr_drill/lost_region/eu-west-1", paths[0])
	// protobuf-delimited bodies: the metric names appear as plain strings
	require.Contains(t, bodies[0], "envdr_drill_last_success_timestamp_seconds")
	require.Contains(t, bodies[0], "envdr_drill_passed")
	require.NotContains(t, bodies[1], "envdr_drill_last_success_timestamp_seconds")
	require.True(t, strings.Contains(bodies[1], "envdr_drill_unrecoverable_records"))
	require.Error(t, recovery.PushDrill(context.Background(), "http://127.0.0.1:1", rep))
}
