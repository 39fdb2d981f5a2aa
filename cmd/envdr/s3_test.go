package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/internal/s3fixture"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/regions"
)

// TestSealOpenS3 seals straight to s3://, refuses to overwrite, opens it back, falls over to
// another region's bucket replica when the bucket's own region is lost, and with --region reads
// that region's replica alone.
func TestSealOpenS3(t *testing.T) {
	env := localtest.New(t)
	s3f := s3fixture.New(t, env)
	roles := newRoleConfigs(t, env, nil)
	envdr := func(args ...string) (string, string, int) {
		return runSplit(t, append([]string{"--config", roles.path(args...)}, args...)...)
	}
	dir := t.TempDir()
	plain := bytes.Repeat([]byte("sealed straight to S3. "), 20000)
	in := filepath.Join(dir, "in.txt")
	require.NoError(t, os.WriteFile(in, plain, 0o600))
	uri := "s3://" + s3f.Bucket("us-east-1") + "/reports/a b+c.envdr"

	stdout, stderr, code := envdr("seal", "--output", "json", "--enqueue", "--context", "app=s3", in, uri)
	require.Equal(t, exitOK, code, stderr)
	var sealed sealResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &sealed), stdout)
	require.Equal(t, uri, sealed.Output)
	require.Equal(t, int64(len(plain)), sealed.PlaintextBytes)
	body, ok := s3f.Get("us-east-1", "reports/a b+c.envdr")
	require.True(t, ok, "the object is in the bucket")
	require.Equal(t, sealed.Bytes, int64(len(body)), "bytes counts what went up")
	hdr, err := envelope.ReadHeader(bytes.NewReader(body))
	require.NoError(t, err)
	require.Equal(t, sealed.ID, hdr.ID)

	// The event names the object.
	q, _ := env.Queues("us-east-1")
	msgs, err := sqs.NewFromConfig(env.AWSConfig("us-east-1")).ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(q), MaxNumberOfMessages: 10, WaitTimeSeconds: 2})
	require.NoError(t, err)
	require.NotEmpty(t, msgs.Messages)
	ev, err := envelope.DecodeEvent([]byte(aws.ToString(msgs.Messages[0].Body)))
	require.NoError(t, err)
	require.Equal(t, uri, ev.DataURI)

	// No overwrite without --force (usage, exit 2), with --force it is replaced.
	_, stderr, code = envdr("seal", in, uri)
	require.Equal(t, exitUsage, code, stderr)
	require.Contains(t, stderr, "exists: refusing to overwrite it")
	_, stderr, code = envdr("seal", "--force", "--id", "replaced-1", "--context", "app=s3", in, uri)
	require.Equal(t, exitOK, code, stderr)

	// Open streams it down and names the replica read.
	out := filepath.Join(dir, "out.txt")
	_, stderr, code = envdr("open", uri, out)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, stderr, "read from region us-east-1's replica")
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, plain, got)

	// Not replicated yet: --region eu-west-1 reads only eu-west-1's bucket, which lacks it.
	_, stderr, code = envdr("open", "--region", "eu-west-1", uri, filepath.Join(dir, "none.txt"))
	require.Equal(t, exitFailure, code, stderr)
	require.Contains(t, stderr, "s3://"+s3f.Bucket("eu-west-1")+"/reports/a b+c.envdr not there")
	require.NoFileExists(t, filepath.Join(dir, "none.txt"))

	// Replicated, and us-east-1 (KMS, SQS, DynamoDB and its S3 endpoint) lost.
	s3f.Replicate("us-east-1")
	env.Down("us-east-1")
	lost := *env.Config
	lost.Regions = append([]config.Region(nil), env.Config.Regions...)
	if s3f.Own {
		lost.Regions[0].Endpoints.S3 = "http://127.0.0.1:1" // fauxqs serves every region: lose us-east-1's by address
	}
	lostRoles := newRoleConfigs(t, env, &lost)
	envdrLost := func(args ...string) (string, string, int) {
		return runSplit(t, append([]string{"--config", lostRoles.path(args...)}, args...)...)
	}
	out2 := filepath.Join(dir, "out2.txt")
	stdout, stderr, code = envdrLost("open", "--output", "json", "--region-timeout", "2s", uri, out2)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, stderr, "region us-east-1's replica skipped")
	require.Contains(t, stderr, "read from region eu-west-1's replica s3://"+s3f.Bucket("eu-west-1")+"/reports/a b+c.envdr")
	var opened openResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &opened), stdout)
	require.Equal(t, "eu-west-1", opened.Replica.Region)
	require.Len(t, opened.ReplicaSkipped, 1)
	require.NotEqual(t, "us-east-1", opened.Region)
	got, err = os.ReadFile(out2)
	require.NoError(t, err)
	require.Equal(t, plain, got)

	_, stderr, code = envdrLost("open", "--region", "ap-southeast-2", uri, filepath.Join(dir, "out3.txt"))
	require.Equal(t, exitOK, code, stderr)
	got, err = os.ReadFile(filepath.Join(dir, "out3.txt"))
	require.NoError(t, err)
	require.Equal(t, plain, got)

	// Usage errors: a prefix is not an object.
	_, stderr, code = envdr("open", "s3://"+s3f.Bucket("us-east-1")+"/reports/", filepath.Join(dir, "x"))
	require.Equal(t, exitUsage, code, stderr)
}

// TestSealToS3ConstantMemory streams a 160 MiB envelope, generated on the fly, up as a multipart
// upload through seal's own S3 output, and checks that the heap never held more than a bounded
// number of parts (about (concurrency+1) part buffers and seal's chunk buffers), far below the
// object's size.
func TestSealToS3ConstantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 160 MiB; not in -short")
	}
	env := localtest.New(t)
	s3f := s3fixture.New(t, env)
	ctx := context.Background()
	topo, err := regions.New(ctx, env.ConfigAs(nil, iam.RoleProducer), regions.Options{})
	require.NoError(t, err)
	r, err := topo.Region("us-east-1")
	require.NoError(t, err)
	const size = 160 << 20
	uri := regions.S3URI{Bucket: s3f.Bucket("us-east-1"), Key: "big.envdr"}

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	o := startS3Output(ctx, r, uri, false)
	keys := &regions.Failover{Topology: topo, Order: []string{"us-east-1"}, Timeout: 10 * time.Second}
	hdr, err := envelope.Seal(ctx, o.count, io.LimitReader(zeroReader{}, size), keys, envelope.SealOptions{Jobs: 2})
	require.NoError(t, err)
	require.NoError(t, o.commit())
	close(stop)
	wg.Wait()

	grew := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("sealed %d MiB to %s: heap in use grew by at most %.1f MiB", size>>20, uri, float64(grew)/(1<<20))
	require.Less(t, grew, int64(64<<20), "memory must not grow with the object (160 MiB)")
	require.Greater(t, o.count.n, int64(size), "the whole envelope went up")

	// And it opens (as the operator): the stream round-trips.
	opTopo, err := regions.New(ctx, env.ConfigAs(nil, iam.RoleOperator), regions.Options{})
	require.NoError(t, err)
	r, err = opTopo.Region("us-east-1")
	require.NoError(t, err)
	obj, err := r.GetObject(ctx, uri.Bucket, uri.Key, "")
	require.NoError(t, err)
	defer obj.Body.Close()
	require.Equal(t, o.count.n, obj.Size)
	zc := &zeroCheck{t: t}
	opened, err := envelope.Open(ctx, zc, obj.Body, r, envelope.OpenOptions{})
	require.NoError(t, err)
	require.Equal(t, hdr.ID, opened.ID)
	require.Equal(t, int64(size), zc.n)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// zeroCheck checks that what open writes is all zeros.
type zeroCheck struct {
	t *testing.T
	n int64
}

func (z *zeroCheck) Write(p []byte) (int, error) {
	z.n += int64(len(p))
	for _, b := range p {
		if b != 0 {
			z.t.Fatal("opened data differs from what was sealed")
		}
	}
	return len(p), nil
}
