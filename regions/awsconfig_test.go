package regions_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// awsEnv clears every environment variable that would pick credentials or config other than the
// ones a test sets.
func awsEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for _, k := range []string{"AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CA_BUNDLE"} {
		t.Setenv(k, "")
		require.NoError(t, os.Unsetenv(k))
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// A credential endpoint (the ECS task role's, or EKS Pod Identity's agent) that fails once and
// then answers: the SDK's retries get the credentials. With NopRetryer passed to
// LoadDefaultConfig (before issue 21) the first 500 was final.
func TestCredentialFetchRetries(t *testing.T) {
	awsEnv(t)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, `{"code":"InternalError","message":"agent restarting"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"AccessKeyId":"AKIATASKROLE","SecretAccessKey":"s","Token":"t","Expiration":"` +
			time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`))
	}))
	defer srv.Close()
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", srv.URL+"/v1/credentials")

	ac, err := regions.AWSConfig(context.Background(), &config.Config{}, config.Region{Name: "us-east-1"}, nil)
	require.NoError(t, err)
	c, err := ac.Credentials.Retrieve(context.Background())
	require.NoError(t, err, "a credential endpoint failing once must be retried")
	require.Equal(t, "AKIATASKROLE", c.AccessKeyID)
	require.Equal(t, int32(2), calls.Load())
}

// caBundle writes a self-signed CA certificate as PEM and returns its path.
func caBundle(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "envdr test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return p
}

type countingClient struct {
	next aws.HTTPClient
	n    *atomic.Int32
}

func (c countingClient) Do(r *http.Request) (*http.Response, error) { c.n.Add(1); return c.next.Do(r) }

// With AWS_CA_BUNDLE set and a config without a local: section (as on AWS), New builds every
// region, and a caller's wrapper (the drill's guard) sees each API call: before issue 21 a
// caller's own HTTP client failed with "unable to add custom RootCAs HTTPClient".
func TestCABundleWithWrappedClient(t *testing.T) {
	awsEnv(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIATEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	t.Setenv("AWS_CA_BUNDLE", caBundle(t))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_, _ = w.Write([]byte(`{"KeyMetadata":{"KeyId":"k","Arn":"arn:aws:kms:us-east-1:111122223333:key/k","KeyState":"Enabled"}}`))
	}))
	defer srv.Close()
	cfg := &config.Config{HomeRegion: "us-east-1", Table: "t", Regions: []config.Region{
		{Name: "us-east-1", Key: "arn:aws:kms:us-east-1:111122223333:key/k", Mode: config.ModeIndependent,
			Endpoints: config.Endpoints{KMS: srv.URL}},
	}}
	var n atomic.Int32
	topo, err := regions.New(context.Background(), cfg, regions.Options{
		WrapHTTPClient: func(next aws.HTTPClient) aws.HTTPClient { return countingClient{next: next, n: &n} },
	})
	require.NoError(t, err)
	r, err := topo.HomeRegion()
	require.NoError(t, err)
	_, err = r.DescribeKey(context.Background())
	require.NoError(t, err)
	require.Equal(t, int32(1), n.Load(), "the wrapper sees the API call")
}
