package kms

import (
	"net/http/httptest"
	"testing"

	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/stretchr/testify/require"
)

// Without a fixed Region list, any well-formed Region can hold replicas and
// is created on first use.
func TestOpenRegionSet(t *testing.T) {
	t.Parallel()
	svc, err := NewService(Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, svc.Close()) })
	b := &bundle{svc: svc, clients: map[string]*awskms.Client{}}
	for _, r := range []string{"us-west-2", "eu-central-1"} {
		srv := httptest.NewServer(svc.Handler(r))
		t.Cleanup(srv.Close)
		b.clients[r] = newClient(r, srv.URL, false)
	}
	p := b.createKey(t, "us-west-2", true)
	for _, r := range []string{"eu-central-1", "sa-east-1"} {
		_, err := b.c("us-west-2").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p.KeyId, ReplicaRegion: &r})
		require.NoError(t, err)
	}
	bad := "not-a-region"
	_, err = b.c("us-west-2").ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: p.KeyId, ReplicaRegion: &bad})
	requireCode(t, err, "ValidationException")
	d, err := b.c("eu-central-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
	require.NoError(t, err)
	require.Len(t, d.KeyMetadata.MultiRegionConfiguration.ReplicaKeys, 2)
}
