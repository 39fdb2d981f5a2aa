package kms

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/stretchr/testify/require"
)

// State survives a restart: a new Service over the same Dir has the same
// keys, material versions, replicas, aliases, states, rotation settings and
// policies, so ciphertexts made before the restart decrypt after it.
func TestRestartPersistence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	svc1, err := NewService(Options{Dir: dir, Regions: testRegions, ReplicaCreating: -1})
	require.NoError(t, err)
	b1 := &bundle{svc: svc1, urls: map[string]string{}, clients: map[string]*awskms.Client{}}
	for _, r := range testRegions {
		srv := httptestServer(t, svc1, r)
		b1.urls[r] = srv
		b1.clients[r] = newClient(r, srv, false)
	}
	p := b1.mrk(t)
	single := b1.createKey(t, "eu-west-1", false)
	ec := map[string]string{"envdr:id": "persist"}
	before, err := b1.c("us-east-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: p.KeyId, Plaintext: []byte("v1"), EncryptionContext: ec})
	require.NoError(t, err)
	_, err = b1.c("us-east-1").RotateKeyOnDemand(ctx(t), &awskms.RotateKeyOnDemandInput{KeyId: p.KeyId})
	require.NoError(t, err)
	after, err := b1.c("us-east-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: p.KeyId, Plaintext: []byte("v2"), EncryptionContext: ec})
	require.NoError(t, err)
	singleCT, err := b1.c("eu-west-1").Encrypt(ctx(t), &awskms.EncryptInput{KeyId: single.KeyId, Plaintext: []byte("s")})
	require.NoError(t, err)
	_, err = b1.c("eu-west-1").CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/keep"), TargetKeyId: single.KeyId})
	require.NoError(t, err)
	_, err = b1.c("us-east-1").EnableKeyRotation(ctx(t), &awskms.EnableKeyRotationInput{KeyId: p.KeyId, RotationPeriodInDays: aws.Int32(120)})
	require.NoError(t, err)
	_, err = b1.c("ap-southeast-2").DisableKey(ctx(t), &awskms.DisableKeyInput{KeyId: p.KeyId})
	require.NoError(t, err)
	_, err = b1.c("eu-west-1").PutKeyPolicy(ctx(t), &awskms.PutKeyPolicyInput{KeyId: single.KeyId, Policy: aws.String(persistedPolicy)})
	require.NoError(t, err)
	require.NoError(t, svc1.Close())

	// The state file is private and no temporary file is left behind.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	fi, err := os.Stat(filepath.Join(dir, stateFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	b2 := setup(t, setupOpts{dir: dir})
	for _, r := range []string{"us-east-1", "eu-west-1"} {
		for _, ct := range [][]byte{before.CiphertextBlob, after.CiphertextBlob} {
			_, err := b2.c(r).Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: ct, EncryptionContext: ec})
			require.NoError(t, err, r)
		}
	}
	dec, err := b2.c("eu-west-1").Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: singleCT.CiphertextBlob, KeyId: aws.String("alias/keep")})
	require.NoError(t, err)
	require.Equal(t, []byte("s"), dec.Plaintext)
	_, err = b2.c("ap-southeast-2").Decrypt(ctx(t), &awskms.DecryptInput{CiphertextBlob: before.CiphertextBlob, EncryptionContext: ec})
	requireAPIError[*types.DisabledException](t, err)
	st, err := b2.c("eu-west-1").GetKeyRotationStatus(ctx(t), &awskms.GetKeyRotationStatusInput{KeyId: p.KeyId})
	require.NoError(t, err)
	require.True(t, st.KeyRotationEnabled)
	require.Equal(t, int32(120), *st.RotationPeriodInDays)
	d, err := b2.c("us-east-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: p.KeyId})
	require.NoError(t, err)
	require.Len(t, d.KeyMetadata.MultiRegionConfiguration.ReplicaKeys, 2)
	require.Equal(t, *p.CreationDate, *d.KeyMetadata.CreationDate)
	gp, err := b2.c("eu-west-1").GetKeyPolicy(ctx(t), &awskms.GetKeyPolicyInput{KeyId: single.KeyId})
	require.NoError(t, err)
	require.Equal(t, persistedPolicy, *gp.Policy)

	// The restarted service keeps persisting.
	_, err = b2.c("us-east-1").CreateKey(ctx(t), &awskms.CreateKeyInput{})
	require.NoError(t, err)
	svc3, err := NewService(Options{Dir: dir})
	require.NoError(t, err)
	defer svc3.Close()
	svc3.mu.RLock()
	n := len(svc3.st.Regions["us-east-1"].Keys)
	svc3.mu.RUnlock()
	require.Equal(t, 2, n)
}

func httptestServer(t *testing.T, svc *Service, region string) string {
	t.Helper()
	srv := httptest.NewServer(svc.Handler(region))
	t.Cleanup(srv.Close)
	return srv.URL
}

// A damaged state file or one from another account is an error at start,
// never silently replaced by an empty state.
func TestLoadErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, stateFile), []byte("{not json"), 0o600))
	_, err := NewService(Options{Dir: dir})
	require.ErrorContains(t, err, "parse")

	dir2 := t.TempDir()
	svc, err := NewService(Options{Dir: dir2, Account: "444455556666", Regions: []string{"us-east-1"}})
	require.NoError(t, err)
	b := &bundle{svc: svc, clients: map[string]*awskms.Client{"us-east-1": newClient("us-east-1", httptestServer(t, svc, "us-east-1"), false)}}
	k := b.createKey(t, "us-east-1", false)
	require.Equal(t, "arn:aws:kms:us-east-1:444455556666:key/"+*k.KeyId, *k.Arn)
	require.NoError(t, svc.Close())
	_, err = NewService(Options{Dir: dir2})
	require.ErrorContains(t, err, "account")

	_, err = NewService(Options{Regions: []string{"bad region"}})
	require.ErrorContains(t, err, "invalid region")
}

// Concurrent mutations each persist; whatever order the snapshots are written
// in, the file on disk ends with all of them (run with -race).
func TestConcurrentMutationsPersist(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := setup(t, setupOpts{dir: dir})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := testRegions[g%3]
			for i := 0; i < 5; i++ {
				k, err := b.c(r).CreateKey(ctx(t), &awskms.CreateKeyInput{})
				if err != nil {
					errs <- err
					return
				}
				name := fmt.Sprintf("alias/g%d-%d", g, i)
				if _, err := b.c(r).CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: &name, TargetKeyId: k.KeyMetadata.KeyId}); err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	svc2, err := NewService(Options{Dir: dir})
	require.NoError(t, err)
	defer svc2.Close()
	keys, aliases := 0, 0
	for _, rs := range svc2.st.Regions {
		keys += len(rs.Keys)
		aliases += len(rs.Aliases)
	}
	require.Equal(t, 40, keys)
	require.Equal(t, 40, aliases)
}

// persistedPolicy is a key policy that survives a restart as written.
const persistedPolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/envdr-operator"},"Action":"kms:DescribeKey","Resource":"*"}]}`
