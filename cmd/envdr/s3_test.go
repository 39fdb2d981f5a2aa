package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/internal/s3fixture"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
	"github.com/envdr/envdr/replicate/replicatetest"
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

// TestSealToS3ConstantMemory streams envelopes generated on the fly up as multipart uploads
// through seal's own S3 output, 40 MiB and then 200 MiB, and checks that the heap's peak did not
// grow with the object: a bounded number of parts ((concurrency+1) × part size) and seal's chunk
// buffers, whatever the size. The 200 MiB one is then opened back.
func TestSealToS3ConstantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 240 MiB; not in -short")
	}
	env := localtest.New(t)
	s3f := s3fixture.New(t, env)
	ctx := context.Background()
	topo, err := regions.New(ctx, env.ConfigAs(nil, iam.RoleProducer), regions.Options{})
	require.NoError(t, err)
	r, err := topo.Region("us-east-1")
	require.NoError(t, err)
	keys := &regions.Failover{Topology: topo, Order: []string{"us-east-1"}, Timeout: 10 * time.Second}

	// A low GC target keeps the heap close to what is live, so the peak measures the buffers
	// held rather than garbage not yet collected.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	seal := func(size int64, key string) (grew int64, sent int64, hdr *envelope.Header) {
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
		o := startS3Output(ctx, r, regions.S3URI{Bucket: s3f.Bucket("us-east-1"), Key: key}, false)
		hdr, err := envelope.Seal(ctx, o.count, io.LimitReader(zeroReader{}, size), keys, envelope.SealOptions{Jobs: 2})
		require.NoError(t, err)
		require.NoError(t, o.commit())
		close(stop)
		wg.Wait()
		require.Greater(t, o.count.n, size, "the whole envelope went up")
		grew = int64(peak.Load()) - int64(base.HeapInuse)
		t.Logf("sealed %d MiB to s3://%s/%s: heap in use grew by at most %.1f MiB", size>>20, s3f.Bucket("us-east-1"), key, float64(grew)/(1<<20))
		return grew, o.count.n, hdr
	}
	small, _, _ := seal(40<<20, "small.envdr")
	const size = 200 << 20
	big, sent, hdr := seal(size, "big.envdr")
	bound := int64((regions.DefaultConcurrency+1)*regions.DefaultPartSize) + 32<<20
	require.Less(t, big, bound, "the parts in flight and seal's buffers, not the object (200 MiB)")
	require.Less(t, big-small, int64(16<<20), "5x the data, about the same memory: %.1f MiB vs %.1f MiB", float64(big)/(1<<20), float64(small)/(1<<20))

	// And it opens (as the operator): the stream round-trips.
	opTopo, err := regions.New(ctx, env.ConfigAs(nil, iam.RoleOperator), regions.Options{})
	require.NoError(t, err)
	r, err = opTopo.Region("us-east-1")
	require.NoError(t, err)
	obj, err := r.GetObject(ctx, s3f.Bucket("us-east-1"), "big.envdr", "")
	require.NoError(t, err)
	defer obj.Body.Close()
	require.Equal(t, sent, obj.Size)
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

// TestS3DataPathDrill is issue 24's done-when at test scale: envelopes put by a plain S3 client
// (boto3's managed upload, as `aws s3 cp` does) and sealed straight to s3:// are all wrapped and
// verified in every region with no --enqueue (the S3 event source); with us-east-1 lost,
// open reads each from another region's replica, and drill --data all opens every replicated
// object and names the one not yet replicated. (make s3-demo runs it at 200+200.)
func TestS3DataPathDrill(t *testing.T) {
	env := localtest.New(t)
	s3f := s3fixture.New(t, env)
	roles := newRoleConfigs(t, env, nil)
	envdr := func(args ...string) (string, string, int) {
		return runSplit(t, append([]string{"--config", roles.path(args...)}, args...)...)
	}
	perKind := 4
	if v := os.Getenv("ENVDR_S3_DEMO_N"); v != "" { // make s3-demo: the 200 + 200
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "ENVDR_S3_DEMO_N")
		perKind = n
	}
	// The daemon runs from the start, as deployed: each object is protected as it lands.
	started := time.Now()
	d := replicatetest.StartDaemon(t, context.Background(), env.ConfigAs(nil, iam.RoleDaemon), zap.NewNop(), replicate.DaemonOptions{
		AdminAddr: "127.0.0.1:0", WaitTime: time.Second, RetryBase: time.Second})
	dir := t.TempDir()
	var ids []string
	bucket := s3f.Bucket("us-east-1")
	var keys, files []string
	plain := map[string][]byte{}
	for i := 0; i < perKind; i++ {
		p := []byte(strings.Repeat(fmt.Sprintf("object %d of the data path. ", i), 500+i))
		in := filepath.Join(dir, fmt.Sprintf("in-%d", i))
		require.NoError(t, os.WriteFile(in, p, 0o600))
		// Sealed straight to S3.
		k := fmt.Sprintf("sealed/%d.envdr", i)
		stdout, stderr, code := envdr("seal", "--context", "app=data", in, "s3://"+bucket+"/"+k)
		require.Equal(t, exitOK, code, stderr)
		keys, plain[k], ids = append(keys, k), p, append(ids, strings.TrimSpace(stdout))
		// Sealed to a file, uploaded by another client.
		f := filepath.Join(dir, fmt.Sprintf("cp-%d.envdr", i))
		stdout, stderr, code = envdr("seal", "--context", "app=data", in, f)
		require.Equal(t, exitOK, code, stderr)
		ids = append(ids, strings.TrimSpace(stdout))
		k = fmt.Sprintf("copied/%d.envdr", i)
		files, keys, plain[k] = append(files, f, k), append(keys, k), p
	}
	s3cp(t, env, "us-east-1", bucket, files...)
	for _, k := range keys {
		body, ok := s3f.Get("us-east-1", k)
		require.True(t, ok, k)
		s3f.Notify("us-east-1", k, int64(len(body)))
	}
	// One more, uploaded and notified but never replicated to the other buckets.
	late := filepath.Join(dir, "late.envdr")
	_, stderr, code := envdr("seal", "--context", "app=data", filepath.Join(dir, "in-0"), late)
	require.Equal(t, exitOK, code, stderr)
	s3cp(t, env, "us-east-1", bucket, late, "late/only-in-us-east-1.envdr")
	body, _ := s3f.Get("us-east-1", "late/only-in-us-east-1.envdr")
	s3f.Notify("us-east-1", "late/only-in-us-east-1.envdr", int64(len(body)))

	// The daemon protects them all from the notifications (no --enqueue anywhere).
	waitQueueEmpty(t, d, time.Duration(60+perKind)*time.Second)
	t.Logf("%d objects (%d sealed to s3://, %d put by boto3) protected from their notifications, no --enqueue: uploads and protection took %.1fs",
		2*perKind, perKind, perKind, time.Since(started).Seconds())
	logProtection(t, env, ids)
	stdout, stderr, code := envdr("verify", "--output", "json")
	require.Equal(t, exitOK, code, stderr)
	var vr struct {
		Records int64 `json:"records"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &vr), stdout)
	require.Equal(t, int64(2*perKind+1), vr.Records, "every object has a verified record")

	for _, k := range keys {
		s3f.Replicate("us-east-1", k)
	}
	env.Down("us-east-1")
	lost := *env.Config
	lost.Regions = append([]config.Region(nil), env.Config.Regions...)
	if s3f.Own {
		lost.Regions[0].Endpoints.S3 = "http://127.0.0.1:1"
	}
	lostRoles := newRoleConfigs(t, env, &lost)
	envdrLost := func(args ...string) (string, string, int) {
		return runSplit(t, append([]string{"--config", lostRoles.path(args...)}, args...)...)
	}
	openStart := time.Now()
	for _, k := range keys {
		out := filepath.Join(dir, "opened-"+strings.ReplaceAll(k, "/", "-"))
		_, stderr, code := envdrLost("open", "--region-timeout", "2s", "s3://"+bucket+"/"+k, out)
		require.Equal(t, exitOK, code, stderr)
		require.Contains(t, stderr, "read from region eu-west-1's replica")
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		require.Equal(t, plain[k], got, k)
	}

	t.Logf("%d objects opened from eu-west-1's replica with us-east-1 lost in %.1fs", len(keys), time.Since(openStart).Seconds())
	report := filepath.Join(dir, "drill")
	stdout, stderr, code = envdrLost("drill", "--lose", "us-east-1", "--data", "all", "--quiet", "--report", report)
	require.Equal(t, exitFindings, code, "the object never replicated is not recoverable: %s%s", stdout, stderr)
	require.Contains(t, stdout, "object late/only-in-us-east-1.envdr in eu-west-1: missing_object")
	for _, line := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(line, "data") || strings.HasPrefix(line, "  data ") {
			t.Log(line)
		}
	}
	js, err := os.ReadFile(report + ".json")
	require.NoError(t, err)
	rep, err := recovery.VerifyDrillReport(js)
	require.NoError(t, err)
	require.NotNil(t, rep.Data)
	d2 := rep.Data
	require.Equal(t, int64(2*perKind+1), d2.Objects)
	require.Equal(t, int64(2*perKind), d2.Recoverable, "every replicated object opened")
	require.Equal(t, int64(1), d2.Unrecoverable)
	require.Equal(t, int64(2), d2.MissingObjects, "the late object, missing from both survivors' replicas")
	require.Zero(t, d2.Failed)
	var want int64
	for _, k := range keys {
		want += int64(len(plain[k]))
	}
	require.Equal(t, 2*want, d2.BytesChecked, "each replicated object opened in both survivors")
	for _, r := range d2.Regions {
		require.Equal(t, int64(2*perKind), r.Opened, r.Region)
	}
	require.Greater(t, rep.Isolation.LostRegionRequests, int64(-1))
	require.Zero(t, rep.Isolation.LostRegionRequests, "nothing reached the lost region")
	md, err := os.ReadFile(report + ".md")
	require.NoError(t, err)
	require.Contains(t, string(md), "late/only-in-us-east-1.envdr")
	html, err := os.ReadFile(report + ".html")
	require.NoError(t, err)
	require.Contains(t, string(html), `id="data-regions"`)
	_, stderr, code = envdrLost("drill", "verify-report", report+".json")
	require.Equal(t, exitOK, code, stderr)

	// Sampled: 3 objects, each opened (or named) in both survivors.
	stdout, stderr, code = envdrLost("drill", "--lose", "us-east-1", "--data", "3", "--min-recoverable", "50", "--output", "json", "--quiet")
	require.Equal(t, exitOK, code, stderr)
	var sampled recovery.DrillReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &sampled))
	require.Equal(t, int64(3), sampled.Data.Checked)
	require.Equal(t, "3", sampled.Data.Requested)

	_, stderr, code = envdrLost("drill", "--lose", "us-east-1", "--data", "-1")
	require.Equal(t, exitUsage, code, stderr)

	// The report straight to S3 (a surviving region's bucket; never through the lost region),
	// refused over an existing one.
	s3report := "s3://" + s3f.Bucket("eu-west-1") + "/drills/lose-us-east-1"
	_, stderr, code = envdrLost("drill", "--lose", "us-east-1", "--quiet", "--report", s3report)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, stderr, "report: "+s3report+".json")
	js, ok := s3f.Get("eu-west-1", "drills/lose-us-east-1.json")
	require.True(t, ok)
	_, err = recovery.VerifyDrillReport(js)
	require.NoError(t, err)
	_, ok = s3f.Get("eu-west-1", "drills/lose-us-east-1.html")
	require.True(t, ok)
	_, stderr, code = envdrLost("drill", "--lose", "us-east-1", "--quiet", "--report", s3report)
	require.Equal(t, exitUsage, code, stderr)
	require.Contains(t, stderr, "exists: refusing to overwrite it")
}

// s3cp uploads FILE KEY pairs to region's bucket with boto3 (testdata/s3cp.py) as the producer.
func s3cp(t *testing.T, env *localtest.Env, region, bucket string, pairs ...string) {
	t.Helper()
	id, ok := env.IAM.Identity(iam.RoleProducer)
	require.True(t, ok)
	rc, _ := env.Config.Region(region)
	cmd := exec.Command("python3", append([]string{filepath.Join("testdata", "s3cp.py"), rc.Endpoints.S3, region, bucket}, pairs...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") { // this machine's AWS settings (a profile, a CA bundle) are not the stand-in's
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "AWS_ACCESS_KEY_ID="+id.AccessKey, "AWS_SECRET_ACCESS_KEY="+id.SecretKey)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "python3 with boto3 (preinstalled with the image's Python) uploads the files: %s", out)
}

// waitQueueEmpty waits until d's queue is empty twice in a row.
func waitQueueEmpty(t *testing.T, d *replicate.Daemon, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for empty := 0; empty < 2; {
		require.True(t, time.Now().Before(deadline), "queue not drained within %s", within)
		n, err := d.QueueDepth(context.Background())
		require.NoError(t, err)
		if n == 0 {
			empty++
		} else {
			empty = 0
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logProtection logs the protection time of the records (from the object's event time, their
// created_at, to the last region's verification): p50, p95 and max.
func logProtection(t *testing.T, env *localtest.Env, ids []string) {
	t.Helper()
	topo, err := regions.New(context.Background(), env.Config, regions.Options{})
	require.NoError(t, err)
	r, err := topo.Region("us-east-1")
	require.NoError(t, err)
	store := replicate.NewStore(env.Config.Table, "us-east-1", r.DynamoDB(), env.Config.RegionNames())
	var secs []float64
	for _, id := range ids {
		rec, err := store.Get(context.Background(), id)
		require.NoError(t, err, id)
		var last time.Time
		for _, n := range env.Regions {
			w := rec.Regions[n]
			require.True(t, w.Verified(), "record %s verified in %s", id, n)
			if w.VerifiedAt.After(last) {
				last = w.VerifiedAt
			}
		}
		secs = append(secs, last.Sub(rec.CreatedAt).Seconds())
	}
	sort.Float64s(secs)
	q := func(p float64) float64 { return secs[min(len(secs)-1, int(p*float64(len(secs))))] }
	t.Logf("protection time (event time to verified in every region) over %d records: p50 %.2fs, p95 %.2fs, max %.2fs", len(secs), q(0.5), q(0.95), secs[len(secs)-1])
}

// TestS3OnTheStandIn runs the data path on the stand-in's own S3 (localtest.Options.S3): SigV4
// and IAM per role, the buckets' own ObjectCreated notifications and s3:TestEvent on the queues,
// Cross-Region Replication with the replication lag, and S3 lost with its region. Envelopes
// sealed to s3:// and put by boto3 are protected with no --enqueue, a non-envelope object is
// dead-lettered, and with us-east-1 lost every object opens from a replica and drill --data all
// opens them all.
func TestS3OnTheStandIn(t *testing.T) {
	env := localtest.NewWith(t, localtest.Options{S3: true})
	roles := newRoleConfigs(t, env, nil)
	envdr := func(args ...string) (string, string, int) {
		return runSplit(t, append([]string{"--config", roles.path(args...)}, args...)...)
	}
	d := replicatetest.StartDaemon(t, context.Background(), env.ConfigAs(nil, iam.RoleDaemon), zap.NewNop(), replicate.DaemonOptions{
		AdminAddr: "127.0.0.1:0", WaitTime: time.Second, RetryBase: time.Second})
	dir := t.TempDir()
	bucket := env.Bucket("us-east-1")
	plain := map[string][]byte{}
	var files []string
	perKind := 3
	if v := os.Getenv("ENVDR_S3_DEMO_N"); v != "" { // make s3-demo: the 200 + 200, on the stand-in's S3
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "ENVDR_S3_DEMO_N")
		perKind = n
	}
	started := time.Now()
	var ids []string
	for i := 0; i < perKind; i++ {
		p := []byte(strings.Repeat(fmt.Sprintf("stand-in object %d. ", i), 300))
		in := filepath.Join(dir, fmt.Sprintf("in-%d", i))
		require.NoError(t, os.WriteFile(in, p, 0o600))
		k := fmt.Sprintf("sealed/%d.envdr", i)
		stdout, stderr, code := envdr("seal", "--context", "app=standin", in, "s3://"+bucket+"/"+k)
		require.Equal(t, exitOK, code, stderr)
		ids = append(ids, strings.TrimSpace(stdout))
		plain[k] = p
		f := filepath.Join(dir, fmt.Sprintf("cp-%d.envdr", i))
		stdout, stderr, code = envdr("seal", "--context", "app=standin", in, f)
		require.Equal(t, exitOK, code, stderr)
		ids = append(ids, strings.TrimSpace(stdout))
		files = append(files, f, fmt.Sprintf("copied/%d.envdr", i))
		plain[fmt.Sprintf("copied/%d.envdr", i)] = p
	}
	s3cp(t, env, "us-east-1", bucket, files...)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not an envelope"), 0o600))
	s3cp(t, env, "us-east-1", bucket, filepath.Join(dir, "notes.txt"), "notes.txt")

	waitQueueEmpty(t, d, time.Duration(90+perKind)*time.Second)
	t.Logf("stand-in S3: %d objects (%d sealed to s3://, %d put by boto3) protected from the buckets' own notifications, no --enqueue, in %.1fs",
		2*perKind, perKind, perKind, time.Since(started).Seconds())
	logProtection(t, env, ids)
	require.Equal(t, int64(len(plain)), verifiedRecords(t, envdr), "every envelope object has a verified record, none for notes.txt")
	_, dlq := env.Queues("us-east-1")
	msgs, err := sqs.NewFromConfig(env.AWSConfig("us-east-1")).ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(dlq), MaxNumberOfMessages: 10, WaitTimeSeconds: 2, MessageAttributeNames: []string{"All"}})
	require.NoError(t, err)
	require.Len(t, msgs.Messages, 1, "notes.txt, dead-lettered")
	require.Equal(t, envelope.ReasonNotEnvelope, aws.ToString(msgs.Messages[0].MessageAttributes["reason"].StringValue))
	require.Contains(t, aws.ToString(msgs.Messages[0].Body), "notes.txt")

	env.Settle() // the tables and the buckets replicated
	env.Down("us-east-1")
	openStart := time.Now()
	openAllFromReplica(t, envdr, dir, bucket, plain, "eu-west-1")
	t.Logf("stand-in S3: %d objects opened from eu-west-1's replica with us-east-1 lost in %.1fs", len(plain), time.Since(openStart).Seconds())
	stdout, stderr, code := envdr("drill", "--lose", "us-east-1", "--data", "all", "--quiet", "--output", "json")
	require.Equal(t, exitOK, code, "%s%s", stdout, stderr)
	var rep recovery.DrillReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
	require.Equal(t, int64(len(plain)), rep.Data.Recoverable)
	require.Equal(t, int64(1), rep.Data.NotEnvelopes, "notes.txt, replicated too")
	require.Zero(t, rep.Data.MissingObjects)
	require.Zero(t, rep.Data.Failed)
	require.Zero(t, rep.Isolation.LostRegionRequests)
	t.Logf("stand-in S3: drill --lose us-east-1 --data all: %d objects recoverable, %d bytes checked, %d missing from a replica, %d not envelopes",
		rep.Data.Recoverable, rep.Data.BytesChecked, rep.Data.MissingObjects, rep.Data.NotEnvelopes)
}
