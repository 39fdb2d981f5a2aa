// Package s3fixture gives a test's localtest.Env the S3 data path: a bucket per region, each
// region's S3 endpoint in the config (regions[].bucket, regions[].endpoints.s3), and the two
// things S3 itself does that envdr relies on, done by the test when the stand-in does not do them
// (yet): Cross-Region Replication of objects (Replicate) and ObjectCreated notifications to the
// region's queue in S3's own event JSON (Notify).
//
// When the Env's config already carries S3 endpoints (the stand-in serves S3), those and the
// stand-in's buckets are used; otherwise the buckets are made, with names unique to the test, on
// the shared backends' fauxqs, which serves S3 path-style (docs/LOCAL.md).
package s3fixture

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/localtest"
)

// Fixture is one test's buckets.
type Fixture struct {
	Env *localtest.Env
	// Own: the buckets were made here (no S3 in the stand-in), so replication and notifications
	// are the test's to do.
	Own bool
	t   testing.TB
}

// New adds the S3 data path to e (its Config and ConfigPath) and registers the buckets' removal.
func New(t testing.TB, e *localtest.Env) *Fixture {
	t.Helper()
	f := &Fixture{Env: e, t: t}
	if e.Config.Regions[0].Endpoints.S3 != "" && e.Config.Regions[0].Bucket != "" {
		return f
	}
	f.Own = true
	suffix := strings.ToLower(fmt.Sprintf("%x", time.Now().UnixNano()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range e.Config.Regions {
		rc := &e.Config.Regions[i]
		rc.Endpoints.S3 = e.Backends.SQS
		rc.Bucket = "envdr-t-" + suffix + "-" + rc.Name
		if _, err := f.Client(rc.Name).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(rc.Bucket)}); err != nil {
			t.Fatalf("s3fixture: create bucket %s: %v", rc.Bucket, err)
		}
	}
	if err := localaws.WriteConfig(e.ConfigPath, e.Config); err != nil {
		t.Fatalf("s3fixture: %v", err)
	}
	t.Cleanup(f.deleteBuckets)
	return f
}

// Bucket is region's bucket.
func (f *Fixture) Bucket(region string) string {
	rc, _ := f.Env.Config.Region(region)
	return rc.Bucket
}

// Client is an S3 client of region's endpoint (admin credentials), path-style.
func (f *Fixture) Client(region string) *s3.Client {
	rc, _ := f.Env.Config.Region(region)
	ac := localaws.AWSConfig(region, config.Endpoints{}, localaws.AccessKey, localaws.SecretKey)
	return s3.NewFromConfig(ac, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(rc.Endpoints.S3)
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
}

// Put writes an object to region's bucket as any S3 client would (here the Go SDK).
func (f *Fixture) Put(region, key string, body []byte) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.Client(region).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(f.Bucket(region)), Key: aws.String(key),
		Body: bytes.NewReader(body)}); err != nil {
		f.t.Fatalf("s3fixture: put s3://%s/%s: %v", f.Bucket(region), key, err)
	}
}

// Get reads an object from region's bucket; ok false when it is not there.
func (f *Fixture) Get(region, key string) (body []byte, ok bool) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := f.Client(region).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(f.Bucket(region)), Key: aws.String(key)})
	if err != nil {
		return nil, false
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		f.t.Fatalf("s3fixture: get s3://%s/%s: %v", f.Bucket(region), key, err)
	}
	return b, true
}

// Keys lists region's bucket.
func (f *Fixture) Keys(region string) []string {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var keys []string
	p := s3.NewListObjectsV2Paginator(f.Client(region), &s3.ListObjectsV2Input{Bucket: aws.String(f.Bucket(region))})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			f.t.Fatalf("s3fixture: list s3://%s: %v", f.Bucket(region), err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// Replicate copies the objects of from's bucket that the other regions' buckets lack (S3
// Cross-Region Replication, done at once; with the stand-in's S3 it replicates by itself). Only
// keys accepts limits it to those keys.
func (f *Fixture) Replicate(from string, only ...string) {
	f.t.Helper()
	if !f.Own {
		return
	}
	keys := only
	if len(keys) == 0 {
		keys = f.Keys(from)
	}
	for _, k := range keys {
		body, ok := f.Get(from, k)
		if !ok {
			f.t.Fatalf("s3fixture: replicate: s3://%s/%s not found", f.Bucket(from), k)
		}
		for _, to := range f.Env.Regions {
			if to != from {
				f.Put(to, k, body)
			}
		}
	}
}

// Notify sends S3's ObjectCreated:Put notification for key in region's bucket to region's
// events queue, as a bucket notification configuration does (with the stand-in's S3 it notifies
// by itself).
func (f *Fixture) Notify(region, key string, size int64) {
	f.t.Helper()
	if !f.Own {
		return
	}
	f.SendRaw(region, string(Notification(region, f.Bucket(region), key, size, time.Now())))
}

// SendRaw puts a message body on region's events queue.
func (f *Fixture) SendRaw(region, body string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, _ := f.Env.Queues(region)
	c := sqs.NewFromConfig(f.Env.AWSConfig(region))
	if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(q), MessageBody: aws.String(body)}); err != nil {
		f.t.Fatalf("s3fixture: notify %s: %v", region, err)
	}
}

// Notification is S3's event message for one created object (the shape of
// https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html):
// the key URL-encoded, a space as '+'.
func Notification(region, bucket, key string, size int64, at time.Time) []byte {
	rec := map[string]any{
		"eventVersion": "2.1",
		"eventSource":  "aws:s3",
		"awsRegion":    region,
		"eventTime":    at.UTC().Format("2006-01-02T15:04:05.000Z"),
		"eventName":    "ObjectCreated:Put",
		"userIdentity": map[string]any{"principalId": "AWS:AIDAEXAMPLE"},
		"s3": map[string]any{
			"s3SchemaVersion": "1.0",
			"configurationId": "envdr",
			"bucket":          map[string]any{"name": bucket, "arn": "arn:aws:s3:::" + bucket},
			"object": map[string]any{"key": url.QueryEscape(key), "size": size,
				"eTag": "0123456789abcdef0123456789abcdef", "sequencer": fmt.Sprintf("%016X", at.UnixNano())},
		},
	}
	b, _ := json.Marshal(map[string]any{"Records": []any{rec}})
	return b
}

// TestEvent is the s3:TestEvent message S3 sends when a notification configuration is set.
func TestEvent(bucket string) []byte {
	b, _ := json.Marshal(map[string]any{"Service": "Amazon S3", "Event": "s3:TestEvent",
		"Time": time.Now().UTC().Format(time.RFC3339), "Bucket": bucket, "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"})
	return b
}

// ConfigPath writes the Env's config (with the buckets) to a file of the test's.
func (f *Fixture) ConfigPath() string {
	p := filepath.Join(f.t.TempDir(), "envdr.yaml")
	if err := localaws.WriteConfig(p, f.Env.Config); err != nil {
		f.t.Fatalf("s3fixture: %v", err)
	}
	return p
}

func (f *Fixture) deleteBuckets() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range f.Env.Regions {
		c, b := f.Client(r), f.Bucket(r)
		p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(b)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				break
			}
			for _, o := range page.Contents {
				_, _ = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b), Key: o.Key})
			}
		}
		_, _ = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(b)})
	}
}
