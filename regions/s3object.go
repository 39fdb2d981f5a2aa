package regions

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
)

// S3URI is an object named s3://bucket/key.
type S3URI struct {
	Bucket, Key string
}

func (u S3URI) String() string { return "s3://" + u.Bucket + "/" + u.Key }

// IsS3URI reports whether s names an S3 object rather than a file (it starts with s3://).
func IsS3URI(s string) bool { return strings.HasPrefix(s, "s3://") }

// ParseS3URI parses s3://bucket/key. The key is taken as it is written (no URL decoding): S3 keys
// may hold any character, and the shell has already done the quoting.
func ParseS3URI(s string) (S3URI, error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return S3URI{}, fmt.Errorf("%q is not an s3://bucket/key URI", s)
	}
	bucket, key, _ := strings.Cut(rest, "/")
	switch {
	case bucket == "":
		return S3URI{}, fmt.Errorf("%q: no bucket; want s3://bucket/key", s)
	case key == "" || strings.HasSuffix(key, "/"):
		return S3URI{}, fmt.Errorf("%q: no object key (a prefix is not an object); want s3://bucket/key", s)
	case len(key) > 1024:
		return S3URI{}, fmt.Errorf("%q: the key is %d bytes, S3 allows at most 1024", s, len(key))
	}
	return S3URI{Bucket: bucket, Key: key}, nil
}

// BucketRegion is the configured region whose bucket (regions[].bucket) is bucket.
func BucketRegion(cfg *config.Config, bucket string) (string, bool) {
	for _, rc := range cfg.Regions {
		if rc.Bucket != "" && rc.Bucket == bucket {
			return rc.Name, true
		}
	}
	return "", false
}

// ReplicaOrder is where an object of bucket may be read, in order: the bucket's own region, then
// every other region with a bucket, in seal order (each region's bucket holds the replicas of
// the others' objects under the same key: S3 Cross-Region Replication).
func ReplicaOrder(cfg *config.Config, bucket string) []string {
	var order []string
	if r, ok := BucketRegion(cfg, bucket); ok {
		order = append(order, r)
	}
	for _, n := range cfg.SealOrder() {
		if rc, _ := cfg.Region(n); rc.Bucket != "" && !slices.Contains(order, n) {
			order = append(order, n)
		}
	}
	return order
}

// UploadOptions tune Upload. Memory held is about (Concurrency+1) × PartSize, whatever the size
// of the object.
type UploadOptions struct {
	// PartSize is the bytes of each multipart part (default 8 MiB; S3's minimum is 5 MiB).
	PartSize int64
	// Concurrency is how many parts are in flight at once (default 4).
	Concurrency int
	// Overwrite allows replacing an existing object. Without it the upload is conditional
	// (If-None-Match: *), so a key written meanwhile is not replaced either.
	Overwrite bool
	// ContentType, optional.
	ContentType string
}

// Upload defaults.
const (
	DefaultPartSize    = 8 << 20
	DefaultConcurrency = 4
)

// Upload streams body to s3://bucket/key through this region's S3 endpoint: a multipart upload
// (a single PUT when the body is under one part) in constant memory. A failed upload is aborted,
// so no object and no orphaned parts are left.
func (r *Region) Upload(ctx context.Context, bucket, key string, body io.Reader, o UploadOptions) error {
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	in := &transfermanager.UploadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: body}
	if o.ContentType != "" {
		in.ContentType = aws.String(o.ContentType)
	}
	if !o.Overwrite {
		in.IfNoneMatch = aws.String("*") // on the PUT, or on CompleteMultipartUpload
	}
	tm := transfermanager.New(unquotedETags{r.s3}, func(t *transfermanager.Options) {
		t.PartSizeBytes, t.Concurrency = o.PartSize, o.Concurrency
		// Checksums only where S3 requires them, as the client itself is set (newS3).
		t.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	})
	return r.S3Call(ctx, "upload", bucket, key, func(ctx context.Context, _ S3API) error {
		_, err := tm.UploadObject(ctx, in)
		return err
	})
}

// unquotedETags sends CompleteMultipartUpload's part ETags without their quotes. The SDK's XML
// encoder writes a quote as &#34;, which some S3-compatible servers (fauxqs 2.4.1, our
// stand-in's) do not decode, so they find no such part; S3 accepts an ETag quoted or not.
type unquotedETags struct{ S3API }

func (u unquotedETags) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	if in.MultipartUpload != nil {
		cp := *in
		mu := *in.MultipartUpload
		mu.Parts = slices.Clone(mu.Parts)
		for i := range mu.Parts {
			if e := mu.Parts[i].ETag; e != nil {
				mu.Parts[i].ETag = aws.String(strings.Trim(*e, `"`))
			}
		}
		cp.MultipartUpload = &mu
		in = &cp
	}
	return u.S3API.CompleteMultipartUpload(ctx, in, opts...)
}

// Exists reports whether s3://bucket/key exists in this region (HEAD).
func (r *Region) Exists(ctx context.Context, bucket, key string) (bool, error) {
	err := r.S3Call(ctx, "HeadObject", bucket, key, func(ctx context.Context, c S3API) error {
		_, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		return err
	})
	switch {
	case err == nil:
		return true, nil
	case IsNotFound(err):
		return false, nil
	}
	return false, err
}

// Object is an object being read: its body (the caller closes it) and size.
type Object struct {
	Body io.ReadCloser
	Size int64 // -1 if unknown
}

// GetObject opens s3://bucket/key (version, optional) in this region for reading. A missing
// object is ErrObjectNotFound.
func (r *Region) GetObject(ctx context.Context, bucket, key, version string) (*Object, error) {
	var out *s3.GetObjectOutput
	err := r.S3Call(ctx, "GetObject", bucket, key, func(ctx context.Context, c S3API) error {
		in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
		if version != "" {
			in.VersionId = aws.String(version)
		}
		var err error
		out, err = c.GetObject(ctx, in)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Object{Body: out.Body, Size: aws.ToInt64(out.ContentLength)}, nil
}

// headerRange is how many first bytes of an object ReadEnvelopeHeader asks for: the longest
// header the format allows, so one ranged GET always holds a whole header.
const headerRange = envelope.MaxHeaderSize + 64

// ReadEnvelopeHeader reads the envelope header of s3://bucket/key (version, optional) with one
// ranged GET of its first bytes, never the data. A missing object is ErrObjectNotFound; an
// object that is not an envelope, or whose header fails its checks, is an *envelope.FormatError
// (wrapped).
func (r *Region) ReadEnvelopeHeader(ctx context.Context, bucket, key, version string) (*envelope.Header, error) {
	var first []byte
	err := r.S3Call(ctx, "GetObject (header range)", bucket, key, func(ctx context.Context, c S3API) error {
		in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
			Range: aws.String(fmt.Sprintf("bytes=0-%d", headerRange-1))}
		if version != "" {
			in.VersionId = aws.String(version)
		}
		out, err := c.GetObject(ctx, in)
		if err != nil {
			return err
		}
		defer out.Body.Close()
		// A server that ignores Range sends the whole object: read no more than the range.
		first, err = io.ReadAll(io.LimitReader(out.Body, headerRange))
		return err
	})
	if err != nil {
		return nil, err
	}
	hdr, err := envelope.ReadHeader(bytes.NewReader(first))
	if err != nil {
		return nil, fmt.Errorf("s3://%s/%s (region %s): %w", bucket, key, r.Name, err)
	}
	return hdr, nil
}
