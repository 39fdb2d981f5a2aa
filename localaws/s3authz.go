package localaws

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/sigv4"
)

// s3Op is the S3 operation a REST request makes, as the API reference names it.
type s3Op struct {
	name string
	// notImplemented names a subresource the stand-in does not emulate (answered 501).
	notImplemented string
}

// s3Unsupported are bucket and object subresources fauxqs does not keep and the stand-in does
// not emulate: answering them 501 is better than a listing or an object read instead.
var s3Unsupported = []string{"acl", "policy", "policyStatus", "cors", "website", "logging", "tagging",
	"object-lock", "retention", "legal-hold", "encryption", "ownershipControls", "publicAccessBlock",
	"accelerate", "requestPayment", "analytics", "inventory", "metrics", "intelligent-tiering",
	"restore", "select", "torrent", "versions", "attributes"}

// s3Operation names the operation of a path-style request.
func s3Operation(r *http.Request) s3Op {
	bucket, key := splitS3Path(r.URL.Path)
	q := r.URL.Query()
	for _, sub := range s3Unsupported {
		if q.Has(sub) {
			return s3Op{name: "Unsupported", notImplemented: sub}
		}
	}
	m := r.Method
	if bucket == "" {
		if m == http.MethodGet {
			return s3Op{name: "ListBuckets"}
		}
		return s3Op{name: "Unsupported", notImplemented: m + " /"}
	}
	if key == "" {
		switch {
		case q.Has("location"):
			return s3Op{name: "GetBucketLocation"}
		case q.Has("versioning"):
			return s3Op{name: map[string]string{http.MethodGet: "GetBucketVersioning", http.MethodPut: "PutBucketVersioning"}[m]}
		case q.Has("notification"):
			return s3Op{name: map[string]string{http.MethodGet: "GetBucketNotificationConfiguration", http.MethodPut: "PutBucketNotificationConfiguration"}[m]}
		case q.Has("replication"):
			return s3Op{name: map[string]string{http.MethodGet: "GetBucketReplication", http.MethodPut: "PutBucketReplication", http.MethodDelete: "DeleteBucketReplication"}[m]}
		case q.Has("lifecycle"):
			return s3Op{name: map[string]string{http.MethodGet: "GetBucketLifecycleConfiguration", http.MethodPut: "PutBucketLifecycleConfiguration", http.MethodDelete: "DeleteBucketLifecycle"}[m]}
		case q.Has("uploads"):
			return s3Op{name: "ListMultipartUploads"}
		case q.Has("delete") && m == http.MethodPost:
			return s3Op{name: "DeleteObjects"}
		}
		switch m {
		case http.MethodPut:
			return s3Op{name: "CreateBucket"}
		case http.MethodDelete:
			return s3Op{name: "DeleteBucket"}
		case http.MethodHead:
			return s3Op{name: "HeadBucket"}
		case http.MethodGet:
			if q.Get("list-type") == "2" {
				return s3Op{name: "ListObjectsV2"}
			}
			return s3Op{name: "ListObjects"}
		}
		return s3Op{name: "Unsupported", notImplemented: m + " bucket"}
	}
	switch m {
	case http.MethodPut:
		switch {
		case q.Has("uploadId") && r.Header.Get("X-Amz-Copy-Source") != "":
			return s3Op{name: "UploadPartCopy"}
		case q.Has("uploadId"):
			return s3Op{name: "UploadPart"}
		case q.Has("renameObject"):
			return s3Op{name: "Unsupported", notImplemented: "renameObject"}
		case r.Header.Get("X-Amz-Copy-Source") != "":
			return s3Op{name: "CopyObject"}
		}
		return s3Op{name: "PutObject"}
	case http.MethodPost:
		switch {
		case q.Has("uploads"):
			return s3Op{name: "CreateMultipartUpload"}
		case q.Has("uploadId"):
			return s3Op{name: "CompleteMultipartUpload"}
		}
		return s3Op{name: "Unsupported", notImplemented: "POST object"}
	case http.MethodGet:
		if q.Has("uploadId") {
			return s3Op{name: "ListParts"}
		}
		return s3Op{name: "GetObject"}
	case http.MethodHead:
		return s3Op{name: "HeadObject"}
	case http.MethodDelete:
		if q.Has("uploadId") {
			return s3Op{name: "AbortMultipartUpload"}
		}
		return s3Op{name: "DeleteObject"}
	}
	return s3Op{name: "Unsupported", notImplemented: m + " object"}
}

// s3Actions maps each operation to the IAM action it is authorized as, and whether the resource
// is the bucket (else the object)
// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html).
var s3Actions = map[string]struct {
	action string
	bucket bool
}{
	"ListBuckets":                        {"s3:ListAllMyBuckets", false},
	"CreateBucket":                       {"s3:CreateBucket", true},
	"DeleteBucket":                       {"s3:DeleteBucket", true},
	"HeadBucket":                         {"s3:ListBucket", true},
	"ListObjects":                        {"s3:ListBucket", true},
	"ListObjectsV2":                      {"s3:ListBucket", true},
	"ListMultipartUploads":               {"s3:ListBucketMultipartUploads", true},
	"GetBucketLocation":                  {"s3:GetBucketLocation", true},
	"GetBucketVersioning":                {"s3:GetBucketVersioning", true},
	"PutBucketVersioning":                {"s3:PutBucketVersioning", true},
	"GetBucketNotificationConfiguration": {"s3:GetBucketNotification", true},
	"PutBucketNotificationConfiguration": {"s3:PutBucketNotification", true},
	"GetBucketReplication":               {"s3:GetReplicationConfiguration", true},
	"PutBucketReplication":               {"s3:PutReplicationConfiguration", true},
	"DeleteBucketReplication":            {"s3:PutReplicationConfiguration", true},
	"GetBucketLifecycleConfiguration":    {"s3:GetLifecycleConfiguration", true},
	"PutBucketLifecycleConfiguration":    {"s3:PutLifecycleConfiguration", true},
	"DeleteBucketLifecycle":              {"s3:PutLifecycleConfiguration", true},
	"PutObject":                          {"s3:PutObject", false},
	"CopyObject":                         {"s3:PutObject", false},
	"CreateMultipartUpload":              {"s3:PutObject", false},
	"UploadPart":                         {"s3:PutObject", false},
	"UploadPartCopy":                     {"s3:PutObject", false},
	"CompleteMultipartUpload":            {"s3:PutObject", false},
	"AbortMultipartUpload":               {"s3:AbortMultipartUpload", false},
	"ListParts":                          {"s3:ListMultipartUploadParts", false},
	"GetObject":                          {"s3:GetObject", false},
	"HeadObject":                         {"s3:GetObject", false},
	"DeleteObject":                       {"s3:DeleteObject", false},
}

// BucketARN and ObjectARN are S3 resource ARNs (no region or account, as S3's).
func BucketARN(bucket string) string      { return "arn:aws:s3:::" + bucket }
func ObjectARN(bucket, key string) string { return "arn:aws:s3:::" + bucket + "/" + key }

// s3Checks lists the authorization questions a request raises: its action on its bucket or
// object; a copy also needs s3:GetObject on its source; DeleteObjects s3:DeleteObject on each
// key; a versionId read or delete the Version action.
func s3Checks(r *http.Request, op s3Op, bucket, key string) ([]iam.Check, error) {
	q := r.URL.Query()
	switch op.name {
	case "DeleteObjects":
		keys, err := deleteObjectsKeys(readBody(r))
		if err != nil {
			return nil, fmt.Errorf("DeleteObjects: the XML you provided was not well-formed: %v", err)
		}
		out := make([]iam.Check, 0, len(keys))
		for _, k := range keys {
			out = append(out, iam.Check{Action: "s3:DeleteObject", Resource: ObjectARN(bucket, k)})
		}
		return out, nil
	}
	a, ok := s3Actions[op.name]
	if !ok {
		return nil, fmt.Errorf("unknown operation %s", op.name)
	}
	action := a.action
	if q.Get("versionId") != "" {
		switch action {
		case "s3:GetObject":
			action = "s3:GetObjectVersion"
		case "s3:DeleteObject":
			action = "s3:DeleteObjectVersion"
		}
	}
	var c iam.Check
	switch {
	case bucket == "":
		c = iam.Check{Action: action, Resource: "*"}
	case a.bucket:
		c = iam.Check{Action: action, Resource: BucketARN(bucket)}
		if strings.HasPrefix(op.name, "ListObjects") {
			c.Context = map[string][]string{"s3:prefix": {q.Get("prefix")}}
		}
	default:
		c = iam.Check{Action: action, Resource: ObjectARN(bucket, key)}
	}
	out := []iam.Check{c}
	if src := r.Header.Get("X-Amz-Copy-Source"); src != "" {
		sb, sk := copySource(src)
		out = append(out, iam.Check{Action: "s3:GetObject", Resource: ObjectARN(sb, sk)})
	}
	return out, nil
}

// copySource parses x-amz-copy-source: "/bucket/key" or "bucket/key", URL-encoded, with an
// optional "?versionId=".
func copySource(v string) (bucket, key string) {
	v, _, _ = strings.Cut(v, "?versionId=")
	if u, err := url.PathUnescape(v); err == nil {
		v = u
	}
	return splitS3Path("/" + strings.TrimPrefix(v, "/"))
}

// s3AuthError answers an authentication failure as S3 does (ErrorResponses.html): a wrong
// region scope is AuthorizationHeaderMalformed naming the region expected, an unknown key
// InvalidAccessKeyId, a wrong signature SignatureDoesNotMatch, a stale date RequestTimeTooSkewed,
// a body that does not hash to x-amz-content-sha256 XAmzContentSHA256Mismatch, a request with no
// signature AccessDenied (the stand-in allows no anonymous access).
func s3AuthError(region string) iam.ErrorWriter {
	return func(w http.ResponseWriter, e *sigv4.Error) {
		// The request is not at hand: the answer's shape does not depend on its method
		// except for HEAD, whose body nobody reads anyway.
		r := &http.Request{Method: http.MethodGet}
		switch e.Kind {
		case sigv4.Missing:
			writeS3Error(w, r, http.StatusForbidden, "AccessDenied", "Access Denied")
		case sigv4.WrongScope:
			writeS3Error(w, r, http.StatusBadRequest, "AuthorizationHeaderMalformed", e.Message, [2]string{"Region", region})
		case sigv4.UnknownKey:
			writeS3Error(w, r, http.StatusForbidden, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
		case sigv4.Expired:
			writeS3Error(w, r, http.StatusForbidden, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large. "+e.Message)
		case sigv4.Mismatch:
			writeS3Error(w, r, http.StatusForbidden, "SignatureDoesNotMatch", e.Message)
		case sigv4.PayloadMismatch:
			writeS3Error(w, r, http.StatusBadRequest, "XAmzContentSHA256Mismatch", e.Message)
		default: // Incomplete
			code := "AuthorizationHeaderMalformed"
			if strings.Contains(e.Message, "x-amz-content-sha256") || strings.Contains(e.Message, "chunked") {
				code = "InvalidRequest"
			}
			writeS3Error(w, r, http.StatusBadRequest, code, e.Message)
		}
	}
}

// s3WrongRegion rewrites the signature's scope error into S3's words: "the region 'X' is
// wrong; expecting 'R'".
func s3WrongRegion(region string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a, e := sigv4.ParseAuthorization(r.Header.Get("Authorization")); e == nil && a.Region != region && a.Service == "s3" {
			writeS3Error(w, r, http.StatusBadRequest, "AuthorizationHeaderMalformed",
				fmt.Sprintf("The authorization header is malformed; the region '%s' is wrong; expecting '%s'", a.Region, region),
				[2]string{"Region", region})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// s3LimitBody refuses a body larger than s3BodyLimit before anything buffers it: the
// authentication middleware reads bodies whole, and fauxqs would refuse it anyway.
func s3LimitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s3BodyLimit {
			writeS3Error(w, r, http.StatusBadRequest, "EntityTooLarge",
				fmt.Sprintf("Your proposed upload exceeds the stand-in's maximum request size (%d bytes): use a multipart upload with smaller parts.", s3BodyLimit))
			return
		}
		// A chunked body has no Content-Length: read up to one byte past the limit to see.
		body, err := io.ReadAll(io.LimitReader(r.Body, s3BodyLimit+1))
		if err != nil {
			return // the client went away
		}
		if len(body) > s3BodyLimit {
			writeS3Error(w, r, http.StatusBadRequest, "EntityTooLarge",
				fmt.Sprintf("Your proposed upload exceeds the stand-in's maximum request size (%d bytes): use a multipart upload with smaller parts.", s3BodyLimit))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// s3Operations is the S3 operation name for the call counters.
func s3OperationName(r *http.Request) string { return s3Operation(r).name }
