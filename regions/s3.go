package regions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3API is the part of the S3 client the data path uses (seal to and open from S3, the daemon's
// header reads, the drill's object reads); tests may put a fake behind it.
type S3API interface {
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	CreateMultipartUpload(context.Context, *s3.CreateMultipartUploadInput, ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	UploadPart(context.Context, *s3.UploadPartInput, ...func(*s3.Options)) (*s3.UploadPartOutput, error)
	CompleteMultipartUpload(context.Context, *s3.CompleteMultipartUploadInput, ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(context.Context, *s3.AbortMultipartUploadInput, ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
}

var _ S3API = (*s3.Client)(nil)

// ErrNoBucket: the region has no bucket configured (regions[].bucket), so no S3 data path.
var ErrNoBucket = errors.New("no bucket configured for the region (regions[].bucket)")

// ErrObjectNotFound: the object (or its bucket) is not in this region's bucket: not written, not
// replicated here yet, or deleted. Open and the drill fall over from it; the drill counts it as
// data RPO.
var ErrObjectNotFound = errors.New("object not found")

// S3ResponseHeaderTimeout bounds how long an S3 request waits for the answer's headers. There is
// no bound on the whole exchange (unlike the other clients' 30 s): an object of many gigabytes
// streams for as long as it takes, while an endpoint that does not answer still fails.
const S3ResponseHeaderTimeout = 30 * time.Second

// s3HTTPClient is the S3 client's HTTP client: the region's, without the overall request
// timeout. A *awshttp.BuildableClient (which carries AWS_CA_BUNDLE when the SDK applied it) is
// copied with the timeout changed; anything else (a test's or the drill's wrapper) is used as
// it is.
func s3HTTPClient(hc aws.HTTPClient) aws.HTTPClient {
	bc, ok := hc.(*awshttp.BuildableClient)
	if !ok {
		return hc
	}
	return bc.WithTimeout(0).WithTransportOptions(func(t *http.Transport) {
		t.ResponseHeaderTimeout = S3ResponseHeaderTimeout
	})
}

// newS3 builds a region's S3 client: that region's endpoint alone, path-style addressing when an
// endpoint is configured (the stand-in serves buckets as paths on one host), the storage retryer.
func newS3(ac aws.Config, endpoint string, opts Options) *s3.Client {
	return s3.NewFromConfig(ac, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
			o.UsePathStyle = true
		}
		o.Retryer = storageRetryer(opts)
		// Checksums only when an operation requires them: the stand-in and older S3-compatible
		// servers reject the newer default trailing checksums of streamed uploads.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
}

// S3 returns this region's S3 client (its endpoint only).
func (r *Region) S3() S3API { return r.s3 }

// Bucket is this region's bucket (regions[].bucket), "" when none is configured.
func (r *Region) Bucket() string { return r.bucket }

// IsNotFound reports an S3 answer that the object or bucket is not there (NoSuchKey,
// NoSuchBucket, NotFound on HEAD, or HTTP 404).
func IsNotFound(err error) bool {
	if errors.Is(err, ErrObjectNotFound) {
		return true
	}
	var nk *s3types.NoSuchKey
	var nb *s3types.NoSuchBucket
	var nf *s3types.NotFound
	if errors.As(err, &nk) || errors.As(err, &nb) || errors.As(err, &nf) {
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchVersion":
			return true
		}
	}
	var he interface{ HTTPStatusCode() int }
	return errors.As(err, &he) && he.HTTPStatusCode() == http.StatusNotFound
}

// IsPreconditionFailed reports S3's answer to a conditional write whose condition failed
// (If-None-Match: * on an existing key): 412 PreconditionFailed, or 409 ConditionalRequestConflict.
func IsPreconditionFailed(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			return true
		}
	}
	var he interface{ HTTPStatusCode() int }
	return errors.As(err, &he) && he.HTTPStatusCode() == http.StatusPreconditionFailed
}

// IsAccessDenied reports S3's 403: the caller may not do this, or (without s3:ListBucket) the
// object is not there.
func IsAccessDenied(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) && (ae.ErrorCode() == "AccessDenied" || ae.ErrorCode() == "Forbidden") {
		return true
	}
	var he interface{ HTTPStatusCode() int }
	return errors.As(err, &he) && he.HTTPStatusCode() == http.StatusForbidden
}

// S3Error names the region, bucket and key of a failed S3 call.
type S3Error struct {
	Region, Op, Bucket, Key string
	Err                     error
}

func (e *S3Error) Error() string {
	return fmt.Sprintf("region %s: s3 %s s3://%s/%s: %v", e.Region, e.Op, e.Bucket, e.Key, e.Err)
}

func (e *S3Error) Unwrap() error { return e.Err }

// S3Call runs one S3 call of this region under the region's health (Region.Call) and names
// region, bucket and key in its error. A not-found answer is ErrObjectNotFound as well.
func (r *Region) S3Call(ctx context.Context, op, bucket, key string, f func(context.Context, S3API) error) error {
	err := r.Call(ctx, "s3 "+op, func(ctx context.Context) error { return f(ctx, r.s3) })
	if err == nil {
		return nil
	}
	if IsNotFound(err) && !errors.Is(err, ErrObjectNotFound) {
		err = fmt.Errorf("%w: %w", ErrObjectNotFound, err)
	}
	return &S3Error{Region: r.Name, Op: op, Bucket: bucket, Key: key, Err: err}
}
