// Package replicatetest runs envdr daemons (package replicate) in tests of the packages built
// around them.
package replicatetest

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/replicate"
)

// StopGrace is how long a daemon started by StartDaemon may finish its work when the test ends.
const StopGrace = 10 * time.Second

// StartDaemon makes the daemon of cfg with opts, starts it, and stops it (StopGrace) when the test
// ends. ctx is NewDaemon's and Start's.
func StartDaemon(t testing.TB, ctx context.Context, cfg *config.Config, log *zap.Logger, opts replicate.DaemonOptions) *replicate.Daemon {
	t.Helper()
	d, err := replicate.NewDaemon(ctx, cfg, log, opts)
	if err != nil {
		t.Fatalf("replicatetest: new daemon: %v", err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatalf("replicatetest: start daemon: %v", err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), StopGrace)
		defer cancel()
		d.Stop(c)
	})
	return d
}
