package localaws_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/kms"
	"github.com/envdr/envdr/localaws/localtest"
)

// Serve starts its own backends, provisions, writes a loadable config, and leaves nothing
// listening after it stops.
func TestServeLifecycle(t *testing.T) {
	t.Parallel()
	tools := localtest.ToolsDir(t)
	dir := t.TempDir()
	svc, err := kms.NewService(kms.Options{Dir: filepath.Join(dir, "kms"), Regions: localaws.DefaultRegions})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Close() })

	var base int
	var serveErr chan error
	var cancel context.CancelFunc
	ready := make(chan string, 1)
	// The fixed layout needs ~40 free ports; try a few random bases below the kernel's
	// ephemeral range (32768+) and clear of the default one.
	for attempt := 0; ; attempt++ {
		base = 21000 + 100*rand.IntN(100)
		var ctx context.Context
		ctx, cancel = context.WithCancel(context.Background())
		serveErr = make(chan error, 1)
		go func() {
			serveErr <- localaws.Serve(ctx, localaws.ServeOptions{
				Dir: dir, Tools: tools, BasePort: base, Regions: localaws.DefaultRegions,
				KMS: svc.Handler, KMSHooks: svc, Ready: func(p string) { ready <- p },
			})
		}()
		select {
		case p := <-ready:
			require.Equal(t, filepath.Join(dir, localaws.ConfigFile), p)
		case err := <-serveErr:
			cancel()
			if attempt < 3 && err != nil && strings.Contains(err.Error(), "in use") {
				continue
			}
			t.Fatalf("Serve: %v", err)
		case <-time.After(120 * time.Second):
			cancel()
			t.Fatal("Serve not ready after 120s")
		}
		break
	}
	t.Cleanup(cancel)

	cfg, err := config.Load(filepath.Join(dir, localaws.ConfigFile))
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("http://127.0.0.1:%d", base), cfg.Local.Admin)
	ports := localaws.PortLayout(base, localaws.DefaultRegions)
	eu, _ := cfg.Region("eu-west-1")
	require.Equal(t, fmt.Sprintf("http://127.0.0.1:%d", ports.Regions["eu-west-1"].KMS), eu.Endpoints.KMS)
	require.NoError(t, localaws.NewAdminClient(cfg.Local.Admin).Ready(context.Background()))
	_, err = os.Stat(filepath.Join(dir, "backends.json"))
	require.NoError(t, err)

	cancel()
	select {
	case err := <-serveErr:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not stop within 30s")
	}
	// Backends, proxies and admin are all gone.
	for _, p := range []int{ports.Admin, ports.Fauxqs, ports.DynamoDB, ports.Regions["us-east-1"].SQS} {
		_, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second)
		require.True(t, errors.Is(err, syscall.ECONNREFUSED), "port %d still answers after Serve stopped: %v", p, err)
	}
	_, err = os.Stat(filepath.Join(dir, "backends.json"))
	require.True(t, os.IsNotExist(err), "backends.json left behind")
}
