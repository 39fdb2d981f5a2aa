package localaws_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
)

// s3Event is the part of S3's event message the tests read.
type s3Event struct {
	Records []struct {
		EventVersion string `json:"eventVersion"`
		EventSource  string `json:"eventSource"`
		AWSRegion    string `json:"awsRegion"`
		EventTime    string `json:"eventTime"`
		EventName    string `json:"eventName"`
		S3           struct {
			SchemaVersion   string `json:"s3SchemaVersion"`
			ConfigurationID string `json:"configurationId"`
			Bucket          struct {
				Name string `json:"name"`
				ARN  string `json:"arn"`
			} `json:"bucket"`
			Object struct {
				Key       string `json:"key"`
				Size      int64  `json:"size"`
				ETag      string `json:"eTag"`
				VersionID string `json:"versionId"`
				Sequencer string `json:"sequencer"`
			} `json:"object"`
		} `json:"s3"`
	} `json:"Records"`
	// s3:TestEvent
	Service, Event, Bucket string
}

// receiveEvents reads region's events queue until it holds n S3 events (test events are
// returned too, and counted) or the deadline passes; it deletes what it read.
func receiveEvents(t *testing.T, env *localtest.Env, region string, n int, within time.Duration) []s3Event {
	t.Helper()
	q, _ := env.Queues(region)
	c := sqs.NewFromConfig(env.AWSConfig(region))
	var out []s3Event
	deadline := time.Now().Add(within)
	for len(out) < n && time.Now().Before(deadline) {
		res, err := c.ReceiveMessage(ctxT(t), &sqs.ReceiveMessageInput{QueueUrl: aws.String(q), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		require.NoError(t, err)
		for _, m := range res.Messages {
			var e s3Event
			require.NoError(t, json.Unmarshal([]byte(aws.ToString(m.Body)), &e), aws.ToString(m.Body))
			out = append(out, e)
			_, err := c.DeleteMessage(ctxT(t), &sqs.DeleteMessageInput{QueueUrl: aws.String(q), ReceiptHandle: m.ReceiptHandle})
			require.NoError(t, err)
		}
	}
	return out
}

// objectEvents drops test events.
func objectEvents(evs []s3Event) []s3Event {
	var out []s3Event
	for _, e := range evs {
		if len(e.Records) > 0 {
			out = append(out, e)
		}
	}
	return out
}

func TestS3PutGetMultipartAndNotifications(t *testing.T) {
	t.Parallel()
	env := localtest.NewWith(t, localtest.Options{S3: true})
	ctx := ctxT(t)
	const region = "eu-west-1"
	bucket := env.Bucket(region)
	require.True(t, strings.HasPrefix(bucket, "envdr-data-eu-west-1-"), bucket)
	require.NotEmpty(t, env.Config.Regions[1].Endpoints.S3)

	// Setting the notification configuration sent s3:TestEvent to the region's queue.
	evs := receiveEvents(t, env, region, 1, 10*time.Second)
	require.Len(t, evs, 1)
	require.Equal(t, "s3:TestEvent", evs[0].Event)
	require.Equal(t, "Amazon S3", evs[0].Service)
	require.Equal(t, bucket, evs[0].Bucket)

	c := env.S3As(region, iam.RoleAdmin)
	body := []byte("hello, envelope")
	put, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("dir/a b+c.env"),
		Body: bytes.NewReader(body), ContentType: aws.String("application/x-envdr"), Metadata: map[string]string{"envdr-id": "e1"}})
	require.NoError(t, err)
	require.Len(t, aws.ToString(put.VersionId), 32)

	got, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("dir/a b+c.env")})
	require.NoError(t, err)
	data, _ := io.ReadAll(got.Body)
	got.Body.Close()
	require.Equal(t, body, data)
	require.Equal(t, aws.ToString(put.VersionId), aws.ToString(got.VersionId))
	require.Equal(t, "e1", got.Metadata["envdr-id"])
	require.Equal(t, s3types.ReplicationStatusPending, got.ReplicationStatus, "replication configured to the other regions")

	// A ranged GET of the header bytes (what the daemon does).
	rng, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("dir/a b+c.env"), Range: aws.String("bytes=0-4")})
	require.NoError(t, err)
	data, _ = io.ReadAll(rng.Body)
	rng.Body.Close()
	require.Equal(t, "hello", string(data))

	// Multipart: two parts of 5 MiB and a tail.
	part := make([]byte, 5<<20)
	_, _ = rand.Read(part)
	mp, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("big.env")})
	require.NoError(t, err)
	var parts []s3types.CompletedPart
	for i, p := range [][]byte{part, part, []byte("tail")} {
		up, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String("big.env"), UploadId: mp.UploadId,
			PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(p)})
		require.NoError(t, err)
		parts = append(parts, s3types.CompletedPart{ETag: up.ETag, PartNumber: aws.Int32(int32(i + 1))})
	}
	done, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("big.env"),
		UploadId: mp.UploadId, MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts}})
	require.NoError(t, err)
	require.NotEmpty(t, aws.ToString(done.VersionId))
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("big.env")})
	require.NoError(t, err)
	require.Equal(t, int64(10<<20+4), aws.ToInt64(head.ContentLength))

	// A copy notifies as ObjectCreated:Copy.
	_, err = c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(bucket), Key: aws.String("copy.env"), CopySource: aws.String(bucket + "/dir/a%20b%2Bc.env")})
	require.NoError(t, err)

	evs = objectEvents(receiveEvents(t, env, region, 3, 15*time.Second))
	require.Len(t, evs, 3)
	byKey := map[string]s3Event{}
	for _, e := range evs {
		require.Len(t, e.Records, 1)
		r := e.Records[0]
		require.Equal(t, "2.1", r.EventVersion)
		require.Equal(t, "aws:s3", r.EventSource)
		require.Equal(t, region, r.AWSRegion)
		require.Equal(t, "1.0", r.S3.SchemaVersion)
		require.Equal(t, localaws.NotificationID, r.S3.ConfigurationID)
		require.Equal(t, bucket, r.S3.Bucket.Name)
		require.Equal(t, "arn:aws:s3:::"+bucket, r.S3.Bucket.ARN)
		require.NotEmpty(t, r.S3.Object.Sequencer)
		_, err := time.Parse("2006-01-02T15:04:05.000Z", r.EventTime)
		require.NoError(t, err)
		byKey[r.S3.Object.Key] = e
	}
	// The key is URL-encoded as a form value, "/" kept.
	put1 := byKey["dir/a+b%2Bc.env"].Records
	require.Len(t, put1, 1, "keys: %v", byKey)
	require.Equal(t, "ObjectCreated:Put", put1[0].EventName)
	require.Equal(t, int64(len(body)), put1[0].S3.Object.Size)
	require.Equal(t, aws.ToString(put.VersionId), put1[0].S3.Object.VersionID)
	require.Equal(t, strings.Trim(aws.ToString(put.ETag), `"`), put1[0].S3.Object.ETag)
	require.Equal(t, "ObjectCreated:CompleteMultipartUpload", byKey["big.env"].Records[0].EventName)
	require.Equal(t, int64(10<<20+4), byKey["big.env"].Records[0].S3.Object.Size)
	require.Equal(t, "ObjectCreated:Copy", byKey["copy.env"].Records[0].EventName)

	// Calls are counted by operation.
	calls := env.Stack.Calls()[region]
	require.GreaterOrEqual(t, calls["s3:PutObject"], int64(1))
	require.Equal(t, int64(3), calls["s3:UploadPart"])
	require.Equal(t, int64(1), calls["s3:CompleteMultipartUpload"])
}

func TestS3ReplicationLagAndDown(t *testing.T) {
	t.Parallel()
	env := localtest.NewWith(t, localtest.Options{S3: true})
	ctx := ctxT(t)
	env.SetLag(400 * time.Millisecond)
	src, dst, lost := "us-east-1", "eu-west-1", "ap-southeast-2"
	c := env.S3As(src, iam.RoleAdmin)
	env.Down(lost)

	put, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(env.Bucket(src)), Key: aws.String("k1"),
		Body: strings.NewReader("v1"), Metadata: map[string]string{"m": "1"}})
	require.NoError(t, err)
	written := time.Now()

	dc := env.S3As(dst, iam.RoleAdmin)
	// Not there before the lag.
	_, err = dc.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(env.Bucket(dst)), Key: aws.String("k1")})
	var nf *s3types.NotFound
	require.True(t, errors.As(err, &nf), "replica before the lag: %v", err)

	var got *s3.GetObjectOutput
	require.Eventually(t, func() bool {
		got, err = dc.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(env.Bucket(dst)), Key: aws.String("k1")})
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(written), 350*time.Millisecond)
	data, _ := io.ReadAll(got.Body)
	got.Body.Close()
	require.Equal(t, "v1", string(data))
	require.Equal(t, s3types.ReplicationStatusReplica, got.ReplicationStatus)
	require.Equal(t, aws.ToString(put.VersionId), aws.ToString(got.VersionId), "a replica keeps the version ID")
	require.Equal(t, "1", got.Metadata["m"])

	// The replica notified in its own region.
	evs := objectEvents(receiveEvents(t, env, dst, 2, 10*time.Second)) // the test event, then the replica's
	require.Len(t, evs, 1)
	require.Equal(t, dst, evs[0].Records[0].AWSRegion)
	require.Equal(t, env.Bucket(dst), evs[0].Records[0].S3.Bucket.Name)

	// The lost region refuses connections; its replica waits, and the source stays PENDING.
	_, err = env.S3As(lost, iam.RoleAdmin).ListBuckets(ctx, &s3.ListBucketsInput{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "connection refused")
	h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(env.Bucket(src)), Key: aws.String("k1")})
	require.NoError(t, err)
	require.Equal(t, s3types.ReplicationStatusPending, h.ReplicationStatus)
	require.Equal(t, 1, env.Stack.S3().Pending())

	env.Up(lost)
	env.Settle()
	h, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(env.Bucket(src)), Key: aws.String("k1")})
	require.NoError(t, err)
	require.Equal(t, s3types.ReplicationStatusCompleted, h.ReplicationStatus)
	lc := env.S3As(lost, iam.RoleAdmin)
	_, err = lc.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(env.Bucket(lost)), Key: aws.String("k1")})
	require.NoError(t, err)

	// A replica is not replicated again, and deletes do not replicate.
	for _, st := range env.Stack.S3().ReplicationStats() {
		if st.From == src {
			require.Equal(t, int64(1), st.Replicated, "%+v", st)
		} else {
			require.Zero(t, st.Replicated, "%+v", st)
		}
	}
	_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(env.Bucket(src)), Key: aws.String("k1")})
	require.NoError(t, err)
	time.Sleep(600 * time.Millisecond)
	_, err = dc.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(env.Bucket(dst)), Key: aws.String("k1")})
	require.NoError(t, err, "a delete is not replicated")
}

func TestS3RegionIsolationAndIAM(t *testing.T) {
	t.Parallel()
	env := localtest.NewWith(t, localtest.Options{S3: true})
	ctx := ctxT(t)
	east, west := "us-east-1", "eu-west-1"

	// Another region's bucket through this region's endpoint: 301 PermanentRedirect naming the
	// bucket's region.
	_, err := env.S3As(west, iam.RoleAdmin).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(env.Bucket(east)), Key: aws.String("x"), Body: strings.NewReader("x")})
	ae := requireCode(t, err, "PermanentRedirect")
	var re interface{ HTTPStatusCode() int }
	require.True(t, errors.As(err, &re))
	require.Equal(t, http.StatusMovedPermanently, re.HTTPStatusCode())
	_ = ae

	// Signed for another region than the endpoint's: AuthorizationHeaderMalformed.
	cfg := env.AWSConfig(east)
	cfg.Region = west
	_, err = localaws.NewS3Client(cfg).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(env.Bucket(east)), Key: aws.String("x")})
	ae = requireCode(t, err, "AuthorizationHeaderMalformed")
	require.Contains(t, ae.ErrorMessage(), "the region 'eu-west-1' is wrong; expecting 'us-east-1'")

	// The nobody role may do nothing.
	_, err = env.S3As(east, iam.RoleNobody).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(env.Bucket(east)), Key: aws.String("x"), Body: strings.NewReader("x")})
	requireDenied(t, err, "AccessDenied", iam.RoleNobody, "s3:PutObject", "arn:aws:s3:::"+env.Bucket(east)+"/x")

	// An unknown key and a wrong secret.
	bad := env.AWSConfig(east)
	bad.Credentials = aws.NewCredentialsCache(credentialsProvider("AKIAUNKNOWN000000000", "x"))
	_, err = localaws.NewS3Client(bad).ListBuckets(ctx, &s3.ListBucketsInput{})
	requireCode(t, err, "InvalidAccessKeyId")
	bad.Credentials = aws.NewCredentialsCache(credentialsProvider(localaws.AccessKey, "wrong"))
	_, err = localaws.NewS3Client(bad).ListBuckets(ctx, &s3.ListBucketsInput{})
	requireCode(t, err, "SignatureDoesNotMatch")

	// Faults: an injected S3 fault answers S3's retryable 5xx (after the SDK's retries).
	require.NoError(t, env.Stack.SetFault(east, "s3", localaws.Fault{ErrorRate: 1}))
	_, err = env.S3As(east, iam.RoleAdmin).ListBuckets(ctx, &s3.ListBucketsInput{})
	var api smithy.APIError
	require.True(t, errors.As(err, &api), "%v", err)
	require.Contains(t, []string{"InternalError", "SlowDown"}, api.ErrorCode())
	require.NoError(t, env.Stack.ClearFaults(east, "s3"))

	// ListBuckets lists this stack's buckets (every region's), not other tests'.
	lb, err := env.S3As(east, iam.RoleAdmin).ListBuckets(ctx, &s3.ListBucketsInput{})
	require.NoError(t, err)
	var names []string
	for _, b := range lb.Buckets {
		names = append(names, aws.ToString(b.Name))
	}
	require.ElementsMatch(t, []string{env.Bucket(east), env.Bucket(west), env.Bucket("ap-southeast-2")}, names)

	// Not emulated: a clear 501, not a silent success.
	_, err = env.S3As(east, iam.RoleAdmin).GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(env.Bucket(east))})
	requireCode(t, err, "NotImplemented")
}

func credentialsProvider(ak, sk string) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(ak, sk, "")
}

// TestS3AWSCLI uploads with the aws CLI (botocore), as an independent client: a small PutObject
// (sent with Expect: 100-continue) and a multipart upload, both notified and replicated.
func TestS3AWSCLI(t *testing.T) {
	t.Parallel()
	aws1, err := exec.LookPath("aws")
	if err != nil {
		t.Skip("no aws CLI on PATH")
	}
	env := localtest.NewWith(t, localtest.Options{S3: true})
	const region = "us-east-1"
	dir := t.TempDir()
	small := filepath.Join(dir, "small.env")
	require.NoError(t, os.WriteFile(small, []byte("small"), 0o600))
	big := filepath.Join(dir, "big.env")
	data := make([]byte, 9<<20) // above the CLI's 8 MiB multipart threshold
	_, _ = rand.Read(data)
	require.NoError(t, os.WriteFile(big, data, 0o600))
	cfg := filepath.Join(dir, "config")
	require.NoError(t, os.WriteFile(cfg, []byte("[default]\ns3 =\n  addressing_style = path\n"), 0o600))
	for _, f := range []string{small, big} {
		cmd := exec.Command(aws1, "--endpoint-url", env.Endpoints(region).S3, "--region", region, "--only-show-errors",
			"s3", "cp", f, "s3://"+env.Bucket(region)+"/cli/"+filepath.Base(f))
		cmd.Env = append(os.Environ(), "AWS_SHARED_CREDENTIALS_FILE="+env.CredentialsPath, "AWS_PROFILE="+iam.RoleAdmin,
			"AWS_CONFIG_FILE="+cfg, "AWS_CA_BUNDLE=", "AWS_EC2_METADATA_DISABLED=true")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	evs := objectEvents(receiveEvents(t, env, region, 3, 15*time.Second))
	names := map[string]string{}
	for _, e := range evs {
		names[e.Records[0].S3.Object.Key] = e.Records[0].EventName
	}
	require.Equal(t, map[string]string{"cli/small.env": "ObjectCreated:Put", "cli/big.env": "ObjectCreated:CompleteMultipartUpload"}, names)
	env.Settle()
	got, err := env.S3As("ap-southeast-2", iam.RoleAdmin).GetObject(ctxT(t), &s3.GetObjectInput{Bucket: aws.String(env.Bucket("ap-southeast-2")), Key: aws.String("cli/big.env")})
	require.NoError(t, err)
	back, _ := io.ReadAll(got.Body)
	got.Body.Close()
	require.True(t, bytes.Equal(data, back), "the replica holds the uploaded bytes")
}

// TestS3RenderedRoles: the policies `envdr policy render` generates for a config with buckets,
// as the stand-in attaches them, on every region's bucket: producers put but never read,
// daemons read (the header range) but never write, operators, drills and game days read and
// list, rewrap and nobody have no S3 at all; no role deletes.
func TestS3RenderedRoles(t *testing.T) {
	t.Parallel()
	env := localtest.NewWith(t, localtest.Options{S3: true})
	ctx := ctxT(t)
	for _, region := range env.Regions {
		bucket := env.Bucket(region)
		key := "roles/" + region + ".env"
		obj := "arn:aws:s3:::" + bucket + "/" + key
		as := func(role string) *s3.Client { return env.S3As(region, role) }
		put := func(role string) error {
			_, err := as(role).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader("ENVDR header and body")})
			return err
		}
		get := func(role string, rng string) error {
			in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
			if rng != "" {
				in.Range = aws.String(rng)
			}
			out, err := as(role).GetObject(ctx, in)
			if err == nil {
				out.Body.Close()
			}
			return err
		}
		list := func(role string) error {
			_, err := as(role).ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("roles/")})
			return err
		}
		// Producers upload (a multipart upload too, and abort it); they never read or list.
		require.NoError(t, put(iam.RoleProducer), region)
		mp, err := as(iam.RoleProducer).CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key + ".mp")})
		require.NoError(t, err, region)
		_, err = as(iam.RoleProducer).AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key + ".mp"), UploadId: mp.UploadId})
		require.NoError(t, err, region)
		requireDenied(t, get(iam.RoleProducer, ""), "AccessDenied", iam.RoleProducer, "s3:GetObject", obj)
		requireDenied(t, list(iam.RoleProducer), "AccessDenied", iam.RoleProducer, "s3:ListBucket", "arn:aws:s3:::"+bucket)

		// The daemon reads the header range (and a version the event names); it never writes.
		require.NoError(t, get(iam.RoleDaemon, "bytes=0-5"), region)
		h, err := as(iam.RoleAdmin).HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		require.NoError(t, err)
		_, err = as(iam.RoleDaemon).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), VersionId: h.VersionId, Range: aws.String("bytes=0-5")})
		require.NoError(t, err, "GetObject of the event's version")
		requireDenied(t, put(iam.RoleDaemon), "AccessDenied", iam.RoleDaemon, "s3:PutObject", obj)

		// Operators, drills and game days read and list; only game days also upload.
		for _, role := range []string{iam.RoleOperator, iam.RoleDrill, iam.RoleGameday} {
			require.NoError(t, get(role, ""), "%s %s", role, region)
			require.NoError(t, list(role), "%s %s", role, region)
		}
		requireDenied(t, put(iam.RoleOperator), "AccessDenied", iam.RoleOperator, "s3:PutObject", obj)
		requireDenied(t, put(iam.RoleDrill), "AccessDenied", iam.RoleDrill, "s3:PutObject", obj)
		require.NoError(t, put(iam.RoleGameday), region)

		// A missing key: 404 with ListBucket (operator), 403 without it (daemon), as S3 does.
		_, err = as(iam.RoleOperator).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("roles/missing")})
		requireCode(t, err, "NoSuchKey")
		_, err = as(iam.RoleDaemon).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("roles/missing")})
		requireDenied(t, err, "AccessDenied", iam.RoleDaemon, "s3:ListBucket", "arn:aws:s3:::"+bucket)

		// No S3 at all for rewrap, failover and nobody; nobody deletes.
		for _, role := range []string{iam.RoleRewrap, iam.RoleFailover, iam.RoleNobody} {
			requireDenied(t, get(role, ""), "AccessDenied", role, "s3:GetObject", obj)
		}
		for _, role := range []string{iam.RoleProducer, iam.RoleDaemon, iam.RoleOperator, iam.RoleDrill, iam.RoleGameday} {
			_, err := as(role).DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
			requireDenied(t, err, "AccessDenied", role, "s3:DeleteObject", obj)
		}
	}
}

// TestS3ReplicationLastWriterWins: two regions write one key; every bucket converges on the
// later write, the earlier one is discarded where it arrives late (a conflict); a version
// replaced before its lag passed is skipped, not delivered over its successor.
func TestS3ReplicationLastWriterWins(t *testing.T) {
	t.Parallel()
	env := localtest.NewWith(t, localtest.Options{S3: true})
	ctx := ctxT(t)
	env.SetLag(300 * time.Millisecond)
	put := func(region, key, body string) string {
		out, err := env.S3As(region, iam.RoleAdmin).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(env.Bucket(region)), Key: aws.String(key), Body: strings.NewReader(body)})
		require.NoError(t, err)
		return aws.ToString(out.VersionId)
	}
	read := func(region, key string) (string, string) {
		out, err := env.S3As(region, iam.RoleAdmin).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(env.Bucket(region)), Key: aws.String(key)})
		require.NoError(t, err, "%s %s", region, key)
		b, _ := io.ReadAll(out.Body)
		out.Body.Close()
		return string(b), aws.ToString(out.VersionId)
	}

	put("us-east-1", "k", "first")
	time.Sleep(20 * time.Millisecond)
	second := put("eu-west-1", "k", "second")
	put("us-east-1", "twice", "v1")
	v2 := put("us-east-1", "twice", "v2")
	env.Settle()
	for _, r := range env.Regions {
		body, ver := read(r, "k")
		require.Equal(t, "second", body, r)
		require.Equal(t, second, ver, r)
		if r != "us-east-1" {
			body, ver = read(r, "twice")
			require.Equal(t, "v2", body, r)
			require.Equal(t, v2, ver, r)
		}
	}
	var conflicts, superseded int64
	for _, st := range env.Stack.S3().ReplicationStats() {
		conflicts += st.Conflicts
		superseded += st.Superseded
	}
	require.Positive(t, conflicts, "us-east-1's older write reached eu-west-1 after eu-west-1's own")
	// v1 of "twice" is replaced at once, so it is skipped for both destinations. Under load,
	// us-east-1's "first" may also still be queued for ap-southeast-2 when eu-west-1's "second"
	// lands in us-east-1's bucket: skipped as superseded too (the source changed), not a bug.
	require.GreaterOrEqual(t, superseded, int64(2), "v1 of twice, once per destination")
	require.LessOrEqual(t, superseded, int64(3), "at most \"first\" for one more destination")
}

// TestS3ReplicationJitterPerObject: with jitter each object leaves on its own, so a replica
// shows some of a batch before the rest; the seeded schedule is the global tables'.
func TestS3ReplicationJitterPerObject(t *testing.T) {
	t.Parallel()
	env := localtest.NewWith(t, localtest.Options{S3: true, Jitter: 1500 * time.Millisecond, Seed: 7})
	ctx := ctxT(t)
	env.SetLag(100 * time.Millisecond)
	src := env.S3As("us-east-1", iam.RoleAdmin)
	const n = 20
	for i := range n {
		_, err := src.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(env.Bucket("us-east-1")), Key: aws.String(fmt.Sprintf("batch/%02d", i)), Body: strings.NewReader("x")})
		require.NoError(t, err)
	}
	dst := env.S3As("eu-west-1", iam.RoleAdmin)
	partial := false
	require.Eventually(t, func() bool {
		out, err := dst.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(env.Bucket("eu-west-1")), Prefix: aws.String("batch/")})
		require.NoError(t, err)
		k := len(out.Contents)
		partial = partial || (k > 0 && k < n)
		return k == n
	}, 15*time.Second, 20*time.Millisecond)
	require.True(t, partial, "objects arrived one by one, not all at once")
	env.Settle() // the last copy may be listed before it is counted
	for _, st := range env.Stack.S3().ReplicationStats() {
		if st.From == "us-east-1" && st.To == "eu-west-1" {
			require.Equal(t, int64(n), st.Replicated)
			require.GreaterOrEqual(t, st.MaxLatencyMs, 100.0)
			require.LessOrEqual(t, st.MaxLatencyMs, 1600.0+2000, "lag plus at most the jitter (and a loaded machine's slack)")
		}
	}
}

// TestS3NotificationConfiguration: filters choose the events, a queue of another region or one
// that does not exist is refused, and the configuration reads back.
func TestS3NotificationConfiguration(t *testing.T) {
	t.Parallel()
	env := localtest.NewWith(t, localtest.Options{S3: true})
	ctx := ctxT(t)
	const region = "ap-southeast-2"
	bucket := env.Bucket(region)
	c := env.S3As(region, iam.RoleAdmin)
	q, _ := env.Queues(region)
	arn := localaws.QueueARN(region, q)
	receiveEvents(t, env, region, 1, 10*time.Second) // provisioning's test event

	set := func(queueARN string, filter *s3types.NotificationConfigurationFilter) error {
		_, err := c.PutBucketNotificationConfiguration(ctx, &s3.PutBucketNotificationConfigurationInput{Bucket: aws.String(bucket),
			NotificationConfiguration: &s3types.NotificationConfiguration{QueueConfigurations: []s3types.QueueConfiguration{{
				Id: aws.String("only-envdr"), QueueArn: aws.String(queueARN), Events: []s3types.Event{"s3:ObjectCreated:Put"}, Filter: filter}}}})
		return err
	}
	otherQ, _ := env.Queues("us-east-1")
	requireCode(t, set(localaws.QueueARN("us-east-1", otherQ), nil), "InvalidArgument")
	requireCode(t, set(strings.Replace(arn, "envdr-events", "no-such-queue", 1), nil), "InvalidArgument")
	require.NoError(t, set(arn, &s3types.NotificationConfigurationFilter{Key: &s3types.S3KeyFilter{FilterRules: []s3types.FilterRule{
		{Name: s3types.FilterRuleNamePrefix, Value: aws.String("in/")}, {Name: s3types.FilterRuleNameSuffix, Value: aws.String(".envdr")}}}}))
	got, err := c.GetBucketNotificationConfiguration(ctx, &s3.GetBucketNotificationConfigurationInput{Bucket: aws.String(bucket)})
	require.NoError(t, err)
	require.Len(t, got.QueueConfigurations, 1)
	require.Equal(t, arn, aws.ToString(got.QueueConfigurations[0].QueueArn))

	for _, k := range []string{"in/a.envdr", "out/b.envdr", "in/c.txt"} {
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(k), Body: strings.NewReader(k)})
		require.NoError(t, err)
	}
	_, err = c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(bucket), Key: aws.String("in/d.envdr"), CopySource: aws.String(bucket + "/in/a.envdr")})
	require.NoError(t, err) // ObjectCreated:Copy: not configured
	evs := receiveEvents(t, env, region, 3, 3*time.Second)
	require.Len(t, evs, 2, "the new configuration's test event and in/a.envdr's Put")
	require.Equal(t, "s3:TestEvent", evs[0].Event)
	require.Equal(t, "in/a.envdr", evs[1].Records[0].S3.Object.Key)
	require.Equal(t, "only-envdr", evs[1].Records[0].S3.ConfigurationID)
}

// TestS3ConditionalWrites: If-None-Match: * refuses an existing key (PutObject and
// CompleteMultipartUpload), If-Match writes only over the ETag named, as S3's conditional writes.
func TestS3ConditionalWrites(t *testing.T) {
	t.Parallel()
	env := localtest.NewWith(t, localtest.Options{S3: true})
	ctx := ctxT(t)
	bucket := env.Bucket("us-east-1")
	c := env.S3As("us-east-1", iam.RoleProducer)
	put := func(key, body string, opt func(*s3.PutObjectInput)) (*s3.PutObjectOutput, error) {
		in := &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(body)}
		if opt != nil {
			opt(in)
		}
		return c.PutObject(ctx, in)
	}
	first, err := put("once", "first", func(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") })
	require.NoError(t, err)
	_, err = put("once", "second", func(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") })
	requireCode(t, err, "PreconditionFailed")

	_, err = put("once", "third", func(in *s3.PutObjectInput) { in.IfMatch = aws.String(`"not-the-etag"`) })
	requireCode(t, err, "PreconditionFailed")
	_, err = put("once", "third", func(in *s3.PutObjectInput) { in.IfMatch = first.ETag })
	require.NoError(t, err)
	_, err = put("missing", "x", func(in *s3.PutObjectInput) { in.IfMatch = first.ETag })
	requireCode(t, err, "NoSuchKey")

	mp, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("once")})
	require.NoError(t, err)
	up, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String("once"), UploadId: mp.UploadId, PartNumber: aws.Int32(1), Body: strings.NewReader("mp")})
	require.NoError(t, err)
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("once"), UploadId: mp.UploadId,
		IfNoneMatch:     aws.String("*"),
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: []s3types.CompletedPart{{ETag: up.ETag, PartNumber: aws.Int32(1)}}}})
	requireCode(t, err, "PreconditionFailed")

	got, err := env.S3As("us-east-1", iam.RoleAdmin).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("once")})
	require.NoError(t, err)
	b, _ := io.ReadAll(got.Body)
	got.Body.Close()
	require.Equal(t, "third", string(b), "only the unconditional-enough writes landed")
}
