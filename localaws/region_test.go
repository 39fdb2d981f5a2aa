package localaws_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
)

// clients of one region, without SDK retries so a lost region fails at once.
type clients struct {
	kms *kms.Client
	sqs *sqs.Client
	ddb *dynamodb.Client
}

func regionClients(env *localtest.Env, region string) clients {
	return regionClientsAs(env, region, "")
}

// regionClientsAs signs as role ("" for the admin). The keys carry the rendered key policies:
// a key is used by the role they name (the daemon encrypts and decrypts, the producer generates
// data keys), never by the admin, who only manages it.
func regionClientsAs(env *localtest.Env, region, role string) clients {
	cfg := env.AWSConfig(region)
	if role != "" {
		cfg = env.AWSConfigAs(region, role)
	}
	cfg.RetryMaxAttempts = 1
	return clients{kms: kms.NewFromConfig(cfg), sqs: sqs.NewFromConfig(cfg), ddb: localaws.NewDynamoDB(cfg)}
}

var encCtx = map[string]string{"envdr:id": "env-1"}

func key(id string) map[string]ddbtypes.AttributeValue {
	return map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: id}}
}

// touch makes one KMS, SQS and DynamoDB call in a region and returns their errors.
func touch(ctx context.Context, env *localtest.Env, c clients, region string) []error {
	_, kerr := c.kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(env.Keys[region].MRK)})
	q, _ := env.Queues(region)
	_, serr := c.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(q)})
	_, derr := c.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(env.Config.Table), Key: key("probe")})
	return []error{kerr, serr, derr}
}

func TestRegionLossAndRestore(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	const lost = "eu-west-1"
	c := map[string]clients{}
	for _, r := range env.Regions {
		c[r] = regionClients(env, r)
	}
	lostQueue, lostDLQ := env.Queues(lost)

	// State in the region about to be lost: a ciphertext under its MRK replica and its
	// independent key, a message sent through its SQS endpoint, an item written through its
	// DynamoDB endpoint.
	daemon := map[string]*kms.Client{}
	for _, r := range env.Regions {
		daemon[r] = regionClientsAs(env, r, iam.RoleDaemon).kms
	}
	mrkCT, err := daemon[lost].Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(env.Keys[lost].MRK), Plaintext: []byte("dek-1"), EncryptionContext: encCtx})
	require.NoError(t, err)
	indCT, err := daemon[lost].Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(env.Keys[lost].Independent), Plaintext: []byte("dek-2"), EncryptionContext: encCtx})
	require.NoError(t, err)
	_, err = c[lost].sqs.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(lostQueue), MessageBody: aws.String("event-1")})
	require.NoError(t, err)
	_, err = c[lost].ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(env.Config.Table), Item: map[string]ddbtypes.AttributeValue{
		"id": &ddbtypes.AttributeValueMemberS{Value: "rec-1"}, "v": &ddbtypes.AttributeValueMemberS{Value: "written in " + lost},
	}})
	require.NoError(t, err)
	env.Settle() // the item has left for the other regions (with jitter, later than the sleep below)

	// A long poll in flight when the region goes: its connection is cut, it does not hang.
	inflight := make(chan error, 1)
	go func() {
		_, err := c[lost].sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(lostDLQ), WaitTimeSeconds: 20,
		})
		inflight <- err
	}()
	time.Sleep(300 * time.Millisecond) // let the poll reach the server; only speeds up the check below

	env.Down(lost)
	require.False(t, env.Stack.IsUp(lost))
	select {
	case err := <-inflight:
		require.Error(t, err, "long poll in flight survived the region loss")
	case <-time.After(10 * time.Second):
		t.Fatal("long poll in flight still running 10s after the region was lost")
	}

	for i, err := range touch(ctx, env, c[lost], lost) {
		require.Error(t, err, "call %d in the lost region", i)
		require.True(t, errors.Is(err, syscall.ECONNREFUSED), "call %d in the lost region: want connection refused, got %v", i, err)
	}
	_, err = daemon[lost].Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: mrkCT.CiphertextBlob, EncryptionContext: encCtx, KeyId: aws.String(env.Keys[lost].MRK)})
	require.True(t, errors.Is(err, syscall.ECONNREFUSED), "Decrypt in the lost region: %v", err)

	// The other regions work, and the MRK ciphertext made in the lost region opens with the
	// replica elsewhere (what envdr relies on).
	for _, r := range env.Regions {
		if r == lost {
			continue
		}
		for i, err := range touch(ctx, env, c[r], r) {
			require.NoError(t, err, "call %d in %s while %s is down", i, r, lost)
		}
		out, err := daemon[r].Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: mrkCT.CiphertextBlob, EncryptionContext: encCtx, KeyId: aws.String(env.Keys[r].MRK)})
		require.NoError(t, err, "decrypt the %s MRK ciphertext in %s", lost, r)
		require.Equal(t, []byte("dek-1"), out.Plaintext)
	}
	g, err := c["ap-southeast-2"].ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(env.Config.Table), Key: key("rec-1"), ConsistentRead: aws.Bool(true)})
	require.NoError(t, err)
	require.NotEmpty(t, g.Item, "item written through %s not readable elsewhere", lost)

	// Restored: same endpoints, state intact.
	env.Up(lost)
	require.True(t, env.Stack.IsUp(lost))
	for i, err := range touch(ctx, env, c[lost], lost) {
		require.NoError(t, err, "call %d in %s after restore", i, lost)
	}
	for ct, want := range map[*kms.EncryptOutput]string{mrkCT: "dek-1", indCT: "dek-2"} {
		out, err := daemon[lost].Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: ct.CiphertextBlob, EncryptionContext: encCtx, KeyId: ct.KeyId})
		require.NoError(t, err)
		require.Equal(t, want, string(out.Plaintext))
	}
	g, err = c[lost].ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(env.Config.Table), Key: key("rec-1"), ConsistentRead: aws.Bool(true)})
	require.NoError(t, err)
	require.Equal(t, &ddbtypes.AttributeValueMemberS{Value: "written in " + lost}, g.Item["v"])
	m, err := c[lost].sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(lostQueue), WaitTimeSeconds: 2})
	require.NoError(t, err)
	require.Len(t, m.Messages, 1)
	require.Equal(t, "event-1", aws.ToString(m.Messages[0].Body))
}

func TestEndpointRefusesRequestsSignedForAnotherRegion(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	// Clients signing for us-east-1 but pointed at eu-west-1's endpoints.
	cfg := localaws.AWSConfig("us-east-1", env.Endpoints("eu-west-1"), localaws.AccessKey, localaws.SecretKey)
	cfg.RetryMaxAttempts = 1
	c := clients{kms: kms.NewFromConfig(cfg), sqs: sqs.NewFromConfig(cfg), ddb: localaws.NewDynamoDB(cfg)}
	for i, err := range touch(ctx, env, c, "us-east-1") {
		var ae smithy.APIError
		require.True(t, errors.As(err, &ae), "call %d: want an API error, got %v", i, err)
		// SQS names a signature error SignatureDoesNotMatch; KMS and DynamoDB InvalidSignatureException.
		require.Contains(t, []string{"InvalidSignatureException", "SignatureDoesNotMatch"}, ae.ErrorCode(), "call %d: %v", i, err)
	}
	// The same clients signing for eu-west-1 are accepted.
	for i, err := range touch(ctx, env, regionClients(env, "eu-west-1"), "eu-west-1") {
		require.NoError(t, err, "call %d", i)
	}
}

func TestKMSCountersAndRateLimitThroughFixture(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	c := regionClientsAs(env, "ap-southeast-2", iam.RoleProducer)
	env.ResetCounters()
	for range 3 {
		_, err := c.kms.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(env.Keys["ap-southeast-2"].MRK), NumberOfBytes: aws.Int32(32), EncryptionContext: encCtx})
		require.NoError(t, err)
	}
	require.Equal(t, int64(3), env.Counters()["ap-southeast-2"]["GenerateDataKey"])
	require.Zero(t, env.Counters()["us-east-1"]["GenerateDataKey"])

	env.SetRateLimit("ap-southeast-2", 1)
	admin := regionClients(env, "ap-southeast-2").kms // the producer may not DescribeKey
	var throttled int
	for range 10 {
		_, err := admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(env.Keys["ap-southeast-2"].MRK)})
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "ThrottlingException" {
			throttled++
		} else {
			require.NoError(t, err)
		}
	}
	require.Greater(t, throttled, 0, "10 calls at a 1 req/s limit were never throttled")
	env.SetRateLimit("ap-southeast-2", 0)
	_, err := admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(env.Keys["ap-southeast-2"].MRK)})
	require.NoError(t, err)
}

func TestAdminEndpoint(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	admin := &localaws.Admin{Stack: env.Stack, KMS: env.KMS}
	srv := httptest.NewServer(admin.Handler())
	t.Cleanup(srv.Close)
	ac := localaws.NewAdminClient(srv.URL)

	require.Error(t, ac.Ready(ctx), "ready before SetReady")
	admin.SetReady()
	require.NoError(t, ac.Ready(ctx))

	require.NoError(t, ac.Down(ctx, "ap-southeast-2"))
	st, err := ac.Status(ctx)
	require.NoError(t, err)
	require.False(t, st["ap-southeast-2"].Up)
	require.True(t, st["us-east-1"].Up)
	require.Equal(t, env.Endpoints("ap-southeast-2").KMS, st["ap-southeast-2"].Endpoints.KMS)
	errs := touch(ctx, env, regionClients(env, "ap-southeast-2"), "ap-southeast-2")
	require.True(t, errors.Is(errs[0], syscall.ECONNREFUSED), "%v", errs[0])
	require.NoError(t, ac.Up(ctx, "ap-southeast-2"))
	require.True(t, env.Stack.IsUp("ap-southeast-2"))
	require.Error(t, ac.Down(ctx, "mars-north-1"))

	env.ResetCounters()
	_, err = regionClients(env, "us-east-1").kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(env.Keys["us-east-1"].MRK)})
	require.NoError(t, err)
	n, err := ac.Counters(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), n["us-east-1"]["DescribeKey"])
	require.NoError(t, ac.ResetCounters(ctx))
	n, err = ac.Counters(ctx)
	require.NoError(t, err)
	require.Zero(t, n["us-east-1"]["DescribeKey"])

	require.NoError(t, ac.SetRateLimit(ctx, "us-east-1", 2.5))
	require.NoError(t, ac.SetRateLimit(ctx, "us-east-1", 0))
	require.Error(t, ac.SetRateLimit(ctx, "mars-north-1", 1))
}

// The config `make local-up` wrote loads with config.Load and describes a running stand-in.
func TestLocalUpConfig(t *testing.T) {
	t.Parallel()
	b := localtest.RequireBackends(t)
	path := filepath.Join(filepath.Dir(b.File), localaws.ConfigFile)
	cfg, err := config.Load(path)
	require.NoError(t, err)
	require.Equal(t, localaws.HomeRegion, cfg.HomeRegion)
	require.Equal(t, localaws.DefaultRegions, cfg.RegionNames())
	require.NotNil(t, cfg.Local)
	require.Equal(t, b.Admin, cfg.Local.Admin)
	require.NoError(t, localaws.NewAdminClient(cfg.Local.Admin).Ready(ctxT(t)))
	ctx := ctxT(t)
	for _, r := range cfg.Regions {
		require.Equal(t, config.ModeMRK, r.Mode)
		require.Contains(t, r.Key, ":key/mrk-")
		require.NotEmpty(t, r.Endpoints.KMS)
		awsCfg := localaws.AWSConfig(r.Name, r.Endpoints, cfg.Local.AccessKey, cfg.Local.SecretKey)
		md, err := kms.NewFromConfig(awsCfg).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(r.Key)})
		require.NoError(t, err, "region %s key %s", r.Name, r.Key)
		require.True(t, aws.ToBool(md.KeyMetadata.MultiRegion))
		ind, err := kms.NewFromConfig(awsCfg).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(localaws.AliasIndependent)})
		require.NoError(t, err, "region %s %s", r.Name, localaws.AliasIndependent)
		require.False(t, aws.ToBool(ind.KeyMetadata.MultiRegion))
		_, err = localaws.NewDynamoDB(awsCfg).DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(cfg.Table)})
		require.NoError(t, err, "region %s table %s", r.Name, cfg.Table)
	}
	_, err = sqs.NewFromConfig(localaws.AWSConfig(cfg.HomeRegion, cfg.Regions[0].Endpoints, cfg.Local.AccessKey, cfg.Local.SecretKey)).
		GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(cfg.DLQURL)})
	require.NoError(t, err)
}

// Re-running Provision (every `envdr local serve` start) reuses keys, queue and table, and
// re-enables keys a drill left disabled or pending deletion.
func TestProvisionReusesAndRepairs(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	euKMS := regionClients(env, "eu-west-1").kms
	apKMS := regionClients(env, "ap-southeast-2").kms
	_, err := euKMS.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(env.Keys["eu-west-1"].Independent)})
	require.NoError(t, err)
	_, err = apKMS.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(env.Keys["ap-southeast-2"].MRK), PendingWindowInDays: aws.Int32(7)})
	require.NoError(t, err)

	prov, err := localaws.Provision(ctx, localaws.ProvisionOptions{
		Regions:   env.Regions,
		Endpoints: env.Endpoints,
		Queue:     filepath.Base(env.Config.QueueURL),
		DLQ:       filepath.Base(env.Config.DLQURL),
		Table:     env.Config.Table,
	})
	require.NoError(t, err)
	require.Equal(t, env.Keys, prov.Keys)
	require.Equal(t, env.Config.QueueURL, prov.Config.QueueURL)
	require.Equal(t, env.Config.DLQURL, prov.Config.DLQURL)
	require.Equal(t, env.Config.Regions, prov.Config.Regions)

	for region, c := range map[string]*kms.Client{"eu-west-1": euKMS, "ap-southeast-2": apKMS} {
		for _, k := range []string{env.Keys[region].MRK, env.Keys[region].Independent} {
			md, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k)})
			require.NoError(t, err)
			require.Equal(t, "Enabled", string(md.KeyMetadata.KeyState), "%s %s", region, k)
		}
	}
}

// Gray failures through the admin API, against the real KMS stand-in and backends: latency on
// one region's KMS slows its Decrypt by at least that much; a blackholed service holds calls
// until the client gives up; clearing restores it; other regions and services are untouched.
func TestGrayFailuresThroughAdmin(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	ac := localaws.NewAdminClient(env.Admin)
	const sick = "eu-west-1"
	c := regionClientsAs(env, sick, iam.RoleDaemon)
	keyID := env.Keys[sick].MRK
	enc, err := c.kms.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(keyID), Plaintext: make([]byte, 32), EncryptionContext: encCtx})
	require.NoError(t, err)

	got, err := ac.SetFault(ctx, sick, localaws.ServiceKMS, localaws.Fault{Latency: time.Second})
	require.NoError(t, err)
	require.Equal(t, map[string]localaws.Fault{"kms": {Latency: time.Second}}, got)
	start := time.Now()
	_, err = c.kms.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: encCtx})
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), time.Second, "Decrypt in %s with --latency 1s on its KMS", sick)
	// Only KMS of that region: its DynamoDB and SQS, and the other regions, answer as before.
	for i, err := range touch(ctx, env, regionClients(env, "us-east-1"), "us-east-1") {
		require.NoError(t, err, "us-east-1 call %d", i)
	}

	// A blackhole on the whole region: the call is held until the client's deadline.
	_, err = ac.SetFault(ctx, sick, "", localaws.Fault{Blackhole: true})
	require.NoError(t, err)
	all, err := ac.Faults(ctx)
	require.NoError(t, err)
	require.Len(t, all[sick], 4, "kms, sqs, dynamodb and s3")
	st, err := ac.Status(ctx)
	require.NoError(t, err)
	require.True(t, st[sick].Up, "a blackholed region still accepts connections")
	require.True(t, st[sick].Faults["dynamodb"].Blackhole)
	for i, call := range []func(context.Context) error{
		func(ctx context.Context) error {
			_, err := c.kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(keyID)})
			return err
		},
		func(ctx context.Context) error {
			_, err := c.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(env.Config.Table), Key: key("probe")})
			return err
		},
		func(ctx context.Context) error {
			_, err := c.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(env.Config.QueueURL)})
			return err
		},
	} {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err := call(cctx)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "call %d", i)
	}

	// Error rate 100% on DynamoDB only: typed, retryable server errors.
	_, err = ac.SetFault(ctx, sick, localaws.ServiceDynamoDB, localaws.Fault{ErrorRate: 1})
	require.NoError(t, err)
	_, err = c.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(env.Config.Table), Key: key("probe")})
	var ae smithy.APIError
	require.True(t, errors.As(err, &ae), "%v", err)
	require.Contains(t, []string{"InternalServerError", "ServiceUnavailable"}, ae.ErrorCode())

	// Clearing restores the region; faults survive a down/up of the region meanwhile.
	require.NoError(t, ac.Down(ctx, sick))
	require.NoError(t, ac.Up(ctx, sick))
	all, err = ac.Faults(ctx)
	require.NoError(t, err)
	require.Len(t, all[sick], 4, "faults survive local down/up (kms, sqs, dynamodb, s3)")
	require.NoError(t, ac.ClearFaults(ctx, sick, ""))
	all, err = ac.Faults(ctx)
	require.NoError(t, err)
	require.Empty(t, all)
	for i, err := range touch(ctx, env, c, sick) {
		require.NoError(t, err, "call %d after clear", i)
	}

	// Bad requests: unknown region (404), unknown service, nothing to inject, bad rate (400).
	_, err = ac.SetFault(ctx, "mars-north-1", "", localaws.Fault{Blackhole: true})
	require.ErrorContains(t, err, "404")
	_, err = ac.SetFault(ctx, sick, "ec2", localaws.Fault{Blackhole: true})
	require.ErrorContains(t, err, "unknown service")
	_, err = ac.SetFault(ctx, sick, "", localaws.Fault{})
	require.ErrorContains(t, err, "nothing to inject")
	_, err = ac.SetFault(ctx, sick, "", localaws.Fault{ErrorRate: 3})
	require.ErrorContains(t, err, "400")
}
