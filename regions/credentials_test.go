package regions_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

type plainClient struct{}

func (plainClient) Do(*http.Request) (*http.Response, error) { return nil, http.ErrNotSupported }

// With the stand-in's config, a chosen profile wins over the config's admin keys, even with a
// caller's own HTTP client (drill's guard) that could not take a CA bundle; without one, the
// config's keys are used.
func TestLocalConfigCredentials(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	require.NoError(t, os.WriteFile(creds, []byte("[envdr-daemon]\naws_access_key_id = AKIADAEMON\naws_secret_access_key = s\n"), 0o600))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	cfg := &config.Config{Local: &config.Local{AccessKey: "AKIAADMIN", SecretKey: "x"}}
	rc := config.Region{Name: "us-east-1"}

	t.Setenv("AWS_PROFILE", "")
	ac, err := regions.AWSConfig(context.Background(), cfg, rc, plainClient{})
	require.NoError(t, err)
	c, err := ac.Credentials.Retrieve(context.Background())
	require.NoError(t, err)
	require.Equal(t, "AKIAADMIN", c.AccessKeyID)

	t.Setenv("AWS_PROFILE", "envdr-daemon")
	ac, err = regions.AWSConfig(context.Background(), cfg, rc, plainClient{})
	require.NoError(t, err)
	c, err = ac.Credentials.Retrieve(context.Background())
	require.NoError(t, err)
	require.Equal(t, "AKIADAEMON", c.AccessKeyID)
	require.Equal(t, plainClient{}, ac.HTTPClient)
}
