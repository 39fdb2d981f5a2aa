package kms

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"
)

var testRegions = []string{"us-east-1", "eu-west-1", "ap-southeast-2"}

// bundle is what a test gets from setup: a service, its per-region servers
// and unmodified SDK clients pointed at them.
type bundle struct {
	svc     *Service
	urls    map[string]string
	clients map[string]*awskms.Client
}

type setupOpts struct {
	dir     string
	noRetry bool
	regions []string
	// creating and updating are Options.ReplicaCreating and Options.Updating; 0 here means
	// none (-1), so the existing tests use replicas at once.
	creating, updating time.Duration
}

func setup(t *testing.T, o ...setupOpts) *bundle {
	t.Helper()
	var opt setupOpts
	if len(o) > 0 {
		opt = o[0]
	}
	if opt.regions == nil {
		opt.regions = testRegions
	}
	if opt.creating == 0 {
		opt.creating = -1
	}
	if opt.updating == 0 {
		opt.updating = -1
	}
	// Replicas usable at once unless a test asks for the Creating period.
	svc, err := NewService(Options{Dir: opt.dir, Regions: opt.regions, ReplicaCreating: opt.creating, Updating: opt.updating})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, svc.Close()) })
	b := &bundle{svc: svc, urls: map[string]string{}, clients: map[string]*awskms.Client{}}
	for _, r := range opt.regions {
		srv := httptest.NewServer(svc.Handler(r))
		t.Cleanup(srv.Close)
		b.urls[r] = srv.URL
		b.clients[r] = newClient(r, srv.URL, opt.noRetry)
	}
	return b
}

func newClient(region, url string, noRetry bool) *awskms.Client {
	cfg := aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
	}
	if noRetry {
		cfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
	}
	return awskms.NewFromConfig(cfg, func(o *awskms.Options) { o.BaseEndpoint = aws.String(url) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func (b *bundle) c(region string) *awskms.Client { return b.clients[region] }

// createKey makes a symmetric key in region and returns its metadata.
func (b *bundle) createKey(t *testing.T, region string, multi bool) *types.KeyMetadata {
	t.Helper()
	out, err := b.c(region).CreateKey(ctx(t), &awskms.CreateKeyInput{MultiRegion: aws.Bool(multi), Description: aws.String("test key")})
	require.NoError(t, err)
	return out.KeyMetadata
}

// mrk makes a multi-Region primary in us-east-1 replicated to the other test regions.
func (b *bundle) mrk(t *testing.T) *types.KeyMetadata {
	t.Helper()
	p := b.createKey(t, "us-east-1", true)
	for _, r := range []string{"eu-west-1", "ap-southeast-2"} {
		_, err := b.c("us-east-1").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p.KeyId, ReplicaRegion: aws.String(r)})
		require.NoError(t, err)
	}
	return p
}

// requireAPIError asserts err is the SDK's typed error T, which proves the
// wire form (__type) is what the SDK expects.
func requireAPIError[T error](t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	var target T
	require.True(t, errors.As(err, &target), "want %T, got %v", target, err)
}

// requireCode asserts a generic API error code (for errors the SDK does not model).
func requireCode(t *testing.T, err error, code string) {
	t.Helper()
	require.Error(t, err)
	var ae smithy.APIError
	require.True(t, errors.As(err, &ae), "want API error %s, got %v", code, err)
	require.Equal(t, code, ae.ErrorCode(), "error: %v", err)
}
