package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// s3Output is seal's OUT when it is s3://bucket/key: the envelope is streamed into a multipart
// upload through a pipe, so memory stays constant whatever the size (regions.UploadOptions).
type s3Output struct {
	uri    regions.S3URI
	region string // whose S3 endpoint takes the upload
	pw     *io.PipeWriter
	count  *countingWriter
	done   chan error
}

// uploadRegion is the region whose endpoint writes to bucket: the region the bucket belongs to
// (regions[].bucket), else the home region (a bucket envdr does not manage).
func uploadRegion(cfg *config.Config, bucket string) string {
	if r, ok := regions.BucketRegion(cfg, bucket); ok {
		return r
	}
	return cfg.HomeRegion
}

// checkS3Output refuses, before any KMS call, to overwrite an existing object without --force
// (HEAD). The upload is conditional as well (If-None-Match: *), for S3 endpoints that honour it,
// so an object written between the HEAD and the upload's end is not replaced either.
func checkS3Output(ctx context.Context, r *regions.Region, uri regions.S3URI, force bool, cmd string) error {
	if force {
		return nil
	}
	exists, err := r.Exists(ctx, uri.Bucket, uri.Key)
	if err != nil && regions.IsAccessDenied(err) {
		// A write-only producer (policy render's: s3:PutObject, no s3:GetObject or
		// s3:ListBucket) cannot look; the conditional upload still refuses an existing object
		// on S3, which honours If-None-Match.
		cliLog.Debug("seal: cannot HEAD the output (access denied); relying on the conditional upload", zap.String("output", uri.String()), zap.Error(err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("output %s: %w", uri, err)
	}
	if exists {
		return usageError("output %s exists: refusing to overwrite it; choose another key, or --force (see %s --help)", uri, cmd)
	}
	return nil
}

// startS3Output starts the upload; what is written to the returned output's w goes up.
func startS3Output(ctx context.Context, r *regions.Region, uri regions.S3URI, force bool) *s3Output {
	pr, pw := io.Pipe()
	o := &s3Output{uri: uri, region: r.Name, pw: pw, count: &countingWriter{w: pw}, done: make(chan error, 1)}
	go func() {
		err := r.Upload(ctx, uri.Bucket, uri.Key, pr, regions.UploadOptions{Overwrite: force, ContentType: "application/octet-stream"})
		// A failed upload stops the writer at once with the upload's error.
		pr.CloseWithError(err)
		o.done <- err
	}()
	return o
}

// commit ends the stream and waits for the upload to complete.
func (o *s3Output) commit() error {
	_ = o.pw.Close()
	err := <-o.done
	if err != nil && regions.IsPreconditionFailed(err) {
		return usageError("output %s appeared while envdr was writing it: refusing to overwrite it; the upload was discarded", o.uri)
	}
	return err
}

// abort fails the upload (the multipart upload is aborted: nothing is left) and waits for it.
func (o *s3Output) abort(cause error) {
	_ = o.pw.CloseWithError(cause)
	<-o.done
}

// s3Replica is one place an object may be read: a region and its bucket.
type s3Replica struct {
	Region string `json:"region"`
	Bucket string `json:"bucket"`
}

// s3Replicas lists where open reads s3://bucket/key, in order. For a bucket of the config
// (regions[].bucket): its own region's bucket, then every other region's bucket replica in seal
// order; with --region R, only R's bucket. A bucket envdr does not manage is read as it is named,
// through --region's endpoint (else the home region's), with no replicas to fall over to.
func s3Replicas(cfg *config.Config, uri regions.S3URI, region string) ([]s3Replica, error) {
	if _, ok := regions.BucketRegion(cfg, uri.Bucket); !ok {
		if region == "" {
			region = cfg.HomeRegion
		}
		return []s3Replica{{Region: region, Bucket: uri.Bucket}}, nil
	}
	if region != "" {
		rc, _ := cfg.Region(region)
		if rc.Bucket == "" {
			return nil, usageError("--region %s has no bucket (regions[].bucket) to read %s's replica from", region, uri)
		}
		return []s3Replica{{Region: region, Bucket: rc.Bucket}}, nil
	}
	var out []s3Replica
	for _, n := range regions.ReplicaOrder(cfg, uri.Bucket) {
		rc, _ := cfg.Region(n)
		out = append(out, s3Replica{Region: n, Bucket: rc.Bucket})
	}
	return out, nil
}

// s3Read is an object opened for reading from one replica.
type s3Read struct {
	obj     *regions.Object
	from    s3Replica
	skipped []skippedRegion
}

// openS3Input opens s3://bucket/key from the first replica that has it (s3Replicas' order),
// each through its own region's endpoint alone. A replica is skipped when its region is out
// (unreachable, no answer within timeout, a server error) or does not hold the object (not
// replicated yet); anything else (access denied, say) is a finding and fails at once.
func openS3Input(ctx context.Context, cfg *config.Config, uri regions.S3URI, region string, anyKey bool, timeout time.Duration,
	onSkip func(region, why string)) (*s3Read, error) {
	reps, err := s3Replicas(cfg, uri, region)
	if err != nil {
		return nil, err
	}
	var (
		skipped []skippedRegion
		errs    []error
	)
	for i, rep := range reps {
		r, err := onlyRegion(ctx, cfg, rep.Region, anyKey)
		if err != nil {
			return nil, err
		}
		// The timeout bounds the answer, not the transfer: a large object streams for as long
		// as it takes once it has started.
		gctx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(timeout, cancel)
		obj, err := r.GetObject(gctx, rep.Bucket, uri.Key, "")
		timedOut := !timer.Stop() && ctx.Err() == nil
		if err == nil {
			cliLog.Debug("open: object found", zap.String("region", rep.Region), zap.String("bucket", rep.Bucket), zap.String("key", uri.Key))
			obj.Body = &regions.CancelOnClose{ReadCloser: obj.Body, Cancel: cancel}
			return &s3Read{obj: obj, from: rep, skipped: skipped}, nil
		}
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var why string
		switch {
		case timedOut:
			why = fmt.Sprintf("no answer within --region-timeout %s", timeout)
		case regions.IsNotFound(err):
			why = fmt.Sprintf("s3://%s/%s not there (not replicated yet?)", rep.Bucket, uri.Key)
		case regions.IsConnError(err):
			why = "unreachable (" + trimReason(err) + ")"
		case regions.IsOutage(err):
			why = "server error or throttled (" + trimReason(err) + ")"
		default:
			return nil, err
		}
		skipped = append(skipped, skippedRegion{Region: rep.Region, Reason: why})
		errs = append(errs, err)
		if i+1 < len(reps) && onSkip != nil {
			onSkip(rep.Region, why)
		}
	}
	whys := make([]string, len(skipped))
	for i, s := range skipped {
		whys[i] = "region " + s.Region + ": " + s.Reason
	}
	return nil, fmt.Errorf("%s: no replica could be read (%s): %w", uri, strings.Join(whys, "; "), errors.Join(errs...))
}
