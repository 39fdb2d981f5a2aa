package localaws

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/envdr/envdr/localaws/admin"
	"github.com/envdr/envdr/localaws/iam"
)

// S3 in the stand-in, over fauxqs' S3 (buckets, objects, multipart, CopyObject, ranges), with
// the parts fauxqs lacks added here, as GlobalTables adds global tables over DynamoDB Local:
//
//   - buckets live in a region: a region's endpoint serves only its own buckets and answers a
//     request for another region's bucket as S3 answers one sent to the wrong regional endpoint,
//     301 PermanentRedirect with x-amz-bucket-region
//     (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html); fauxqs itself has one
//     global namespace, which is also S3's (bucket names are unique across regions);
//   - versioning (PutBucketVersioning): every write of a versioned bucket gets a version ID,
//     returned in x-amz-version-id and carried by its replicas and events. fauxqs keeps only the
//     current object, so only the current version can be read (GET ?versionId= of an older one
//     answers NoSuchVersion);
//   - event notifications (PutBucketNotificationConfiguration, queue destinations): each
//     ObjectCreated write sends S3's event message to the configured queue, which must be in the
//     bucket's region; setting a configuration sends s3:TestEvent to each queue
//     (https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html);
//   - Cross-Region Replication (PutBucketReplication), see s3replication.go.
//
// Requests are path-style (http://127.0.0.1:PORT/BUCKET/KEY): clients set UsePathStyle (the
// aws CLI: addressing_style = path). Each region's endpoint verifies SigV4 (scoped to its region
// and "s3") and authorizes every request's S3 actions against the caller's identity policies
// (s3authz.go). Bucket policies, ACLs, Object Lock, tagging and the other subresources fauxqs
// does not keep answer 501 NotImplemented rather than pretend.

// S3 is the stand-in's S3 layer over one fauxqs; Handler serves one region's endpoint.
type S3 struct {
	backend *url.URL
	proxy   http.Handler
	client  *http.Client
	iam     *iam.IAM
	isUp    func(region string) bool
	// delay is a replication's wait from one region to another: the global tables' lag plus a
	// jitter draw (GlobalTables.Delay), so `envdr local lag` sets both.
	delay func(from, to string) time.Duration
	notif *s3Notifier

	stripes [256]sync.Mutex // one write per object key at a time (backend write + record)

	mu      sync.Mutex
	buckets map[string]*s3Bucket
	seq     uint64
	repl    *s3Replicator
}

// s3Bucket is what the stand-in keeps about one bucket beside fauxqs' copy.
type s3Bucket struct {
	name, region string
	versioning   string // "", "Enabled" or "Suspended"
	notification *s3NotificationConfig
	replication  *s3ReplicationConfig
	replXML      []byte // the configuration as PUT, for GET
	objects      map[string]*s3Object
}

// s3Object is the stand-in's record of an object's current version.
type s3Object struct {
	Version string    // "null" in an unversioned bucket
	At      time.Time // when the write happened (its version's time: last writer wins)
	Seq     uint64    // the sequencer's number
	Size    int64
	ETag    string // quoted, as in headers
	Event   string // "ObjectCreated:Put", ...
	// Status is x-amz-replication-status: PENDING or COMPLETED at the source while it has
	// replication destinations, REPLICA on a replica, "" otherwise. pending counts the
	// destinations still to reach.
	Status  string
	pending int
}

// s3BodyLimit is the largest request body the stand-in takes: fauxqs' own request limit
// (11 MiB, which admits multipart parts of the usual 5-8 MiB). Larger single PUTs must be
// multipart uploads, as on AWS above 5 GiB.
const s3BodyLimit = 11 << 20

// newS3 builds the S3 layer over the fauxqs at backend.
func newS3(backend *url.URL, tr http.RoundTripper, m *iam.IAM, isUp func(string) bool, delay func(from, to string) time.Duration, regions []string) *S3 {
	s := &S3{
		backend: backend,
		client:  &http.Client{Transport: tr, Timeout: 60 * time.Second},
		iam:     m, isUp: isUp, delay: delay,
		buckets: map[string]*s3Bucket{},
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(backend)
			// The body is already read (Go's server answered the client's 100-continue): an
			// Expect sent on would bring back a 1xx that the proxy relays as the status of a
			// recorded answer, and the write would not be seen to succeed.
			r.Out.Header.Del("Expect")
			// fauxqs reads a bucket from a dotted Host (virtual-hosted style): give it the
			// backend's own address so only the path names the bucket.
			r.Out.Host = backend.Host
		},
		Transport:     retryReused{tr},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			writeS3Error(w, r, http.StatusServiceUnavailable, "ServiceUnavailable", "envdr local stand-in: S3 backend unreachable: "+err.Error())
		},
	}
	s.notif = newS3Notifier(backend, regions, isUp)
	s.repl = newS3Replicator(s, regions)
	return s
}

// Close stops notification delivery and replication (what is pending is dropped).
func (s *S3) Close() {
	s.repl.close()
	s.notif.close()
}

// splitS3Path splits a path-style request path into bucket and key.
func splitS3Path(p string) (bucket, key string) {
	p = strings.TrimPrefix(p, "/")
	bucket, key, _ = strings.Cut(p, "/")
	return bucket, key
}

// BucketRegion is the region a bucket of this stack lives in; false when the stack has no such
// bucket.
func (s *S3) BucketRegion(bucket string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[bucket]
	if b == nil {
		return "", false
	}
	return b.region, true
}

// ObjectInfo is the stand-in's record of an object's current version in a bucket.
type ObjectInfo struct {
	Version, ETag, Event, ReplicationStatus string
	Size                                    int64
	At                                      time.Time
}

// Object returns the stand-in's record of bucket/key; false when it holds none.
func (s *S3) Object(bucket, key string) (ObjectInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[bucket]
	if b == nil || b.objects[key] == nil {
		return ObjectInfo{}, false
	}
	o := b.objects[key]
	return ObjectInfo{Version: o.Version, ETag: o.ETag, Event: o.Event, ReplicationStatus: o.Status, Size: o.Size, At: o.At}, true
}

func (s *S3) stripe(bucket, key string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(bucket + "/" + key))
	return int(h.Sum32() % uint32(len(s.stripes)))
}

// lockKey serializes the writes of one object (the backend's write and the stand-in's record).
// getBucket is a bucket's record, nil when there is none. The record stays valid (if detached)
// should the bucket be deleted meanwhile.
func (s *S3) getBucket(name string) *s3Bucket {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buckets[name]
}

func (s *S3) lockKey(bucket, key string) func() {
	m := &s.stripes[s.stripe(bucket, key)]
	m.Lock()
	return m.Unlock
}

// lockKeys locks two objects' stripes in index order, so two replications crossing each other
// cannot deadlock.
func (s *S3) lockKeys(a, b [2]string) func() {
	i, j := s.stripe(a[0], a[1]), s.stripe(b[0], b[1])
	if i == j {
		s.stripes[i].Lock()
		return s.stripes[i].Unlock
	}
	if i > j {
		i, j = j, i
	}
	s.stripes[i].Lock()
	s.stripes[j].Lock()
	return func() { s.stripes[j].Unlock(); s.stripes[i].Unlock() }
}

// Handler serves region's S3 endpoint behind authentication (the caller's identity is in the
// request's context).
func (s *S3) Handler(region string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := s3Operation(r)
		bucket, key := splitS3Path(r.URL.Path)
		if op.notImplemented != "" {
			writeS3Error(w, r, http.StatusNotImplemented, "NotImplemented",
				fmt.Sprintf("envdr local stand-in: the %s subresource is not emulated (docs/LOCAL.md, S3)", op.notImplemented))
			return
		}
		if bucket == "" { // ListBuckets: every bucket of the account, whatever its region
			if !s.authorize(w, r, region, op, "", "") {
				return
			}
			s.listBuckets(w, r)
			return
		}
		if op.name == "CreateBucket" {
			if !s.authorize(w, r, region, op, bucket, "") {
				return
			}
			s.createBucket(w, r, region, bucket)
			return
		}
		b, ok := s.BucketRegion(bucket)
		if !ok {
			writeS3Error(w, r, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist", [2]string{"BucketName", bucket})
			return
		}
		if b != region && op.name != "GetBucketLocation" {
			w.Header().Set("X-Amz-Bucket-Region", b)
			writeS3Error(w, r, http.StatusMovedPermanently, "PermanentRedirect",
				"The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.",
				[2]string{"Endpoint", "s3." + b + ".amazonaws.com"}, [2]string{"Bucket", bucket})
			return
		}
		if !s.authorize(w, r, region, op, bucket, key) {
			return
		}
		switch op.name {
		case "GetBucketLocation":
			s.writeXML(w, r, struct {
				XMLName xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ LocationConstraint"`
				Region  string   `xml:",chardata"`
			}{Region: locationConstraint(b)})
		case "GetBucketVersioning", "PutBucketVersioning":
			s.versioning(w, r, bucket)
		case "GetBucketNotificationConfiguration", "PutBucketNotificationConfiguration":
			s.notification(w, r, bucket)
		case "GetBucketReplication", "PutBucketReplication", "DeleteBucketReplication":
			s.replication(w, r, bucket)
		case "DeleteBucket":
			rec := s.forward(r)
			if rec.Code == http.StatusNoContent || rec.Code == http.StatusOK {
				s.mu.Lock()
				delete(s.buckets, bucket)
				s.mu.Unlock()
			}
			copyRecorded(w, rec)
		case "PutObject", "CopyObject", "CompleteMultipartUpload":
			s.write(w, r, region, op, bucket, key)
		case "GetObject", "HeadObject":
			s.read(w, r, region, bucket, key)
		case "DeleteObject":
			s.deleteObject(w, r, bucket, key)
		case "DeleteObjects":
			s.deleteObjects(w, r, bucket)
		default: // the rest fauxqs answers as it is: listings, multipart steps, bucket HEAD
			s.proxy.ServeHTTP(w, r)
		}
	})
}

func locationConstraint(region string) string {
	if region == "us-east-1" {
		return "" // S3's answer for us-east-1
	}
	return region
}

// authorize answers AccessDenied and returns false unless the caller may do every action op
// needs.
func (s *S3) authorize(w http.ResponseWriter, r *http.Request, region string, op s3Op, bucket, key string) bool {
	checks, err := s3Checks(r, op, bucket, key)
	if err != nil {
		writeS3Error(w, r, http.StatusBadRequest, "MalformedXML", err.Error())
		return false
	}
	for _, c := range checks {
		if msg, ok := s.iam.AuthorizeRequest(r, region, c); ok && msg != "" {
			writeS3Error(w, r, http.StatusForbidden, "AccessDenied", msg)
			return false
		}
	}
	return true
}

// forward sends r to fauxqs and records the answer (small XML or empty: writes, bucket calls).
func (s *S3) forward(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.proxy.ServeHTTP(rec, r)
	return rec
}

// copyRecorded writes a recorded answer to w.
func copyRecorded(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		if !strings.EqualFold(k, "Content-Length") {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (s *S3) listBuckets(w http.ResponseWriter, r *http.Request) {
	// fauxqs lists every bucket it holds, other stacks' too (tests share it): keep this
	// stack's.
	rec := s.forward(r)
	if rec.Code != http.StatusOK {
		copyRecorded(w, rec)
		return
	}
	var out struct {
		XMLName xml.Name `xml:"ListAllMyBucketsResult"`
		Owner   *struct {
			ID          string `xml:"ID"`
			DisplayName string `xml:"DisplayName,omitempty"`
		} `xml:"Owner,omitempty"`
		Buckets []struct {
			Name         string `xml:"Name"`
			CreationDate string `xml:"CreationDate"`
			BucketRegion string `xml:"BucketRegion,omitempty"`
		} `xml:"Buckets>Bucket"`
	}
	if err := xml.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		copyRecorded(w, rec)
		return
	}
	kept := out.Buckets[:0]
	for _, b := range out.Buckets {
		if reg, ok := s.BucketRegion(b.Name); ok {
			b.BucketRegion = reg
			kept = append(kept, b)
		}
	}
	out.Buckets = kept
	s.writeXML(w, r, out)
}

// createBucket makes a bucket in region: the location constraint must name the region of the
// endpoint (none means us-east-1), as on S3's regional endpoints.
func (s *S3) createBucket(w http.ResponseWriter, r *http.Request, region, bucket string) {
	if !validBucketName(bucket) {
		writeS3Error(w, r, http.StatusBadRequest, "InvalidBucketName", "The specified bucket is not valid.", [2]string{"BucketName", bucket})
		return
	}
	var cfg struct {
		LocationConstraint string `xml:"LocationConstraint"`
	}
	if body := readBody(r); len(bytes.TrimSpace(body)) > 0 {
		if err := xml.Unmarshal(body, &cfg); err != nil {
			writeS3Error(w, r, http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
			return
		}
	}
	want := cfg.LocationConstraint
	if want == "" {
		want = "us-east-1"
	}
	if want != region {
		msg := fmt.Sprintf("The %s location constraint is incompatible for the region specific endpoint this request was sent to.", cfg.LocationConstraint)
		if cfg.LocationConstraint == "" {
			msg = "The unspecified location constraint is incompatible for the region specific endpoint this request was sent to."
		}
		writeS3Error(w, r, http.StatusBadRequest, "IllegalLocationConstraintException", msg)
		return
	}
	s.mu.Lock()
	if b := s.buckets[bucket]; b != nil {
		s.mu.Unlock()
		if b.region == "us-east-1" && region == "us-east-1" {
			// us-east-1 answers 200 to its owner's repeated CreateBucket (legacy behaviour).
			w.Header().Set("Location", "/"+bucket)
			w.WriteHeader(http.StatusOK)
			return
		}
		writeS3Error(w, r, http.StatusConflict, "BucketAlreadyOwnedByYou",
			"Your previous request to create the named bucket succeeded and you already own it.", [2]string{"BucketName", bucket})
		return
	}
	s.mu.Unlock()
	// fauxqs' body would be our location constraint; it needs none.
	r.Body, r.ContentLength = http.NoBody, 0
	r.Header.Del("Content-Length")
	rec := s.forward(r)
	if rec.Code == http.StatusOK {
		s.mu.Lock()
		if s.buckets[bucket] == nil {
			s.buckets[bucket] = &s3Bucket{name: bucket, region: region, objects: map[string]*s3Object{}}
		}
		s.mu.Unlock()
	}
	copyRecorded(w, rec)
}

// validBucketName applies S3's general purpose bucket naming rules (the common ones).
func validBucketName(b string) bool {
	if len(b) < 3 || len(b) > 63 || strings.Contains(b, "..") {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	first, last := b[0], b[len(b)-1]
	return first != '-' && first != '.' && last != '-' && last != '.'
}

func (s *S3) versioning(w http.ResponseWriter, r *http.Request, bucket string) {
	bk := s.getBucket(bucket)
	if bk == nil {
		writeS3Error(w, r, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist", [2]string{"BucketName", bucket})
		return
	}
	type conf struct {
		XMLName xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ VersioningConfiguration"`
		Status  string   `xml:"Status,omitempty"`
	}
	if r.Method == http.MethodGet {
		s.mu.Lock()
		st := bk.versioning
		s.mu.Unlock()
		s.writeXML(w, r, conf{Status: st})
		return
	}
	var c conf
	if err := xml.Unmarshal(readBody(r), &c); err != nil || (c.Status != "Enabled" && c.Status != "Suspended") {
		writeS3Error(w, r, http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
		return
	}
	s.mu.Lock()
	b := bk
	if c.Status == "Suspended" && b.replication != nil {
		s.mu.Unlock()
		writeS3Error(w, r, http.StatusBadRequest, "InvalidBucketState", "A replication configuration is present on this bucket, so the versioning state cannot be changed.")
		return
	}
	b.versioning = c.Status
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// write forwards an object write (PutObject, CopyObject, CompleteMultipartUpload) and, when it
// succeeded, records the new version, queues its replication and sends its notifications.
func (s *S3) write(w http.ResponseWriter, r *http.Request, region string, op s3Op, bucket, key string) {
	unlock := s.lockKey(bucket, key)
	if !s.preconditions(w, r, op, bucket, key) {
		unlock()
		return
	}
	if op.name == "CompleteMultipartUpload" {
		// Go's encoding/xml (the Go SDK) writes the ETags' quotes as &#34;, which fauxqs
		// does not decode (it knows &quot;): the same XML, spelled as fauxqs reads it.
		body := bytes.ReplaceAll(readBody(r), []byte("&#34;"), []byte("&quot;"))
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	rec := s.forward(r)
	ok := rec.Code == http.StatusOK
	if ok && op.name == "CompleteMultipartUpload" && bytes.Contains(rec.Body.Bytes(), []byte("<Error>")) {
		ok = false // S3 may answer 200 with an error body here
	}
	if !ok {
		unlock()
		copyRecorded(w, rec)
		return
	}
	event := map[string]string{"PutObject": "ObjectCreated:Put", "CopyObject": "ObjectCreated:Copy",
		"CompleteMultipartUpload": "ObjectCreated:CompleteMultipartUpload"}[op.name]
	id, _ := iam.FromContext(r.Context())
	o, err := s.record(r.Context(), region, bucket, key, event, s3Principal(id), remoteIP(r), "")
	unlock()
	if err != nil {
		writeS3Error(w, r, http.StatusInternalServerError, "InternalError", "envdr local stand-in: "+err.Error())
		return
	}
	if o.Version != "null" {
		rec.Header().Set("X-Amz-Version-Id", o.Version)
	}
	copyRecorded(w, rec)
}

// preconditions applies S3's conditional writes, which fauxqs ignores: PutObject and
// CompleteMultipartUpload with If-None-Match: * write only a key that does not exist, with
// If-Match only over the current object of that ETag; else 412 PreconditionFailed (If-Match on a
// missing key: 404 NoSuchKey)
// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html). The key's
// lock is held, so two conditional writes of one key cannot both succeed. false: answered.
func (s *S3) preconditions(w http.ResponseWriter, r *http.Request, op s3Op, bucket, key string) bool {
	if op.name != "PutObject" && op.name != "CompleteMultipartUpload" {
		return true
	}
	cur, exists := s.Object(bucket, key)
	failed := func(cond string) bool {
		writeS3Error(w, r, http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold", [2]string{"Condition", cond})
		return false
	}
	if v := r.Header.Get("If-None-Match"); v != "" {
		if v != "*" {
			writeS3Error(w, r, http.StatusNotImplemented, "NotImplemented", "A header you provided implies functionality that is not implemented", [2]string{"Header", "If-None-Match"})
			return false
		}
		if exists {
			return failed("If-None-Match")
		}
	}
	if v := r.Header.Get("If-Match"); v != "" {
		if !exists {
			writeS3Error(w, r, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.", [2]string{"Key", key})
			return false
		}
		if strings.Trim(v, `"`) != strings.Trim(cur.ETag, `"`) {
			return failed("If-Match")
		}
	}
	return true
}

// s3Principal is the principal ID S3 names in events: AWS:ROLE-ID:SESSION for an assumed role.
func s3Principal(id iam.Identity) string {
	if id.Role == "" {
		return "Anonymous"
	}
	return "AWS:" + id.AccessKey + ":envdr-local"
}

// record notes a new current version of bucket/key (fauxqs has just stored it; its size and
// ETag are read back), queues its replication and sends its notifications. version is the
// replicated version's ID for a replica ("" for a new write). The key's lock is held.
func (s *S3) record(ctx context.Context, region, bucket, key, event, principal, ip, version string) (*s3Object, error) {
	size, etag, err := s.headBackend(ctx, bucket, key)
	if err != nil {
		return nil, fmt.Errorf("read back s3://%s/%s in %s: %w", bucket, key, region, err)
	}
	return s.recordVersion(region, bucket, key, event, principal, ip, version, time.Now(), size, etag), nil
}

func (s *S3) recordVersion(region, bucket, key, event, principal, ip, version string, at time.Time, size int64, etag string) *s3Object {
	s.mu.Lock()
	b := s.buckets[bucket]
	if b == nil { // deleted meanwhile
		s.mu.Unlock()
		return &s3Object{Version: "null"}
	}
	s.seq++
	o := &s3Object{Version: "null", At: at, Seq: s.seq, Size: size, ETag: etag, Event: event}
	switch {
	case version != "":
		o.Version, o.Status = version, "REPLICA"
	case b.versioning == "Enabled":
		o.Version = newVersionID()
	}
	b.objects[key] = o
	// A replica is not replicated again (S3 replicates only objects the bucket's owner
	// wrote, unless replica modification sync is on, which the stand-in does not emulate).
	if version == "" {
		if dests := b.destinations(key); len(dests) > 0 {
			o.Status, o.pending = "PENDING", len(dests)
			for _, d := range dests {
				s.repl.enqueue(region, d, s3Change{bucket: bucket, key: key, dest: d, version: o.Version, event: event, at: at, written: time.Now()})
			}
		}
	}
	var msgs []s3Delivery
	if b.notification != nil {
		for _, q := range b.notification.Queues {
			if q.matches(event, key) {
				msgs = append(msgs, s3Delivery{region: b.region, queueARN: q.Queue, body: eventMessage(b, key, o, q.ID, principal, ip)})
			}
		}
	}
	out := *o
	s.mu.Unlock()
	s.notif.send(msgs...)
	return &out
}

// headBackend reads an object's size and ETag from fauxqs.
func (s *S3) headBackend(ctx context.Context, bucket, key string) (int64, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, s.backend.String()+s3EscapePath("/"+bucket+"/"+key), nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("HEAD: HTTP %d", resp.StatusCode)
	}
	return resp.ContentLength, resp.Header.Get("ETag"), nil
}

// s3EscapePath escapes a path as S3 clients do: every byte but A-Z a-z 0-9 - _ . ~ and '/'.
func s3EscapePath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == '~', c == '/':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// newVersionID makes a version ID like S3's: 32 URL-safe characters.
func newVersionID() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// read forwards GetObject and HeadObject, adding the version and replication status the
// stand-in keeps; a versionId other than the current one is NoSuchVersion (fauxqs keeps no
// older versions).
func (s *S3) read(w http.ResponseWriter, r *http.Request, region, bucket, key string) {
	// Under the key's lock: a write or a replication stores the object and records it
	// together, so the record read here is that of the object fauxqs holds (unless a write
	// comes between this and the read below, as a concurrent write may on S3 too).
	unlock := s.lockKey(bucket, key)
	o, known := s.Object(bucket, key)
	unlock()
	if !known {
		// Every object of a stack's bucket is written through the stack, so it has none.
		// S3 tells a missing key (404 NoSuchKey) only to callers that may list the bucket;
		// the others get 403 AccessDenied
		// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html, "Permissions").
		if msg, ok := s.iam.AuthorizeRequest(r, region, iam.Check{Action: "s3:ListBucket", Resource: BucketARN(bucket)}); ok && msg != "" {
			writeS3Error(w, r, http.StatusForbidden, "AccessDenied", msg)
			return
		}
	}
	if v := r.URL.Query().Get("versionId"); v != "" && (!known || v != o.Version) {
		writeS3Error(w, r, http.StatusNotFound, "NoSuchVersion", "The specified version does not exist.", [2]string{"Key", key}, [2]string{"VersionId", v})
		return
	}
	if known {
		w = &headerAdder{ResponseWriter: w, add: func(h http.Header) {
			if o.Version != "null" {
				h.Set("X-Amz-Version-Id", o.Version)
			}
			if o.ReplicationStatus != "" {
				h.Set("X-Amz-Replication-Status", o.ReplicationStatus)
			}
		}}
	}
	s.proxy.ServeHTTP(w, r)
}

// headerAdder adds headers to a successful answer just before its status is written.
type headerAdder struct {
	http.ResponseWriter
	add   func(http.Header)
	wrote bool
}

func (h *headerAdder) WriteHeader(code int) {
	if !h.wrote {
		h.wrote = true
		if code == http.StatusOK || code == http.StatusPartialContent {
			h.add(h.Header())
		}
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *headerAdder) Write(b []byte) (int, error) {
	if !h.wrote {
		h.WriteHeader(http.StatusOK)
	}
	return h.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (the proxy's flushes) reach the connection's writer.
func (h *headerAdder) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// deleteObject deletes the current object. Deletes are not replicated (S3's default: delete
// markers replicate only with DeleteMarkerReplication, which the stand-in does not emulate), and
// send no notification (only ObjectCreated is emulated).
func (s *S3) deleteObject(w http.ResponseWriter, r *http.Request, bucket, key string) {
	unlock := s.lockKey(bucket, key)
	defer unlock()
	rec := s.forward(r)
	if rec.Code == http.StatusNoContent || rec.Code == http.StatusOK {
		s.forget(bucket, key)
	}
	copyRecorded(w, rec)
}

func (s *S3) forget(bucket, key string) {
	s.mu.Lock()
	if b := s.buckets[bucket]; b != nil {
		delete(b.objects, key)
	}
	s.mu.Unlock()
}

func (s *S3) deleteObjects(w http.ResponseWriter, r *http.Request, bucket string) {
	keys, _ := deleteObjectsKeys(readBody(r))
	rec := s.forward(r)
	if rec.Code == http.StatusOK {
		var res struct {
			Deleted []struct {
				Key string `xml:"Key"`
			} `xml:"Deleted"`
		}
		if xml.Unmarshal(rec.Body.Bytes(), &res) == nil && len(res.Deleted) > 0 {
			keys = keys[:0]
			for _, d := range res.Deleted {
				keys = append(keys, d.Key)
			}
		}
		for _, k := range keys {
			s.forget(bucket, k)
		}
	}
	copyRecorded(w, rec)
}

// deleteObjectsKeys lists the keys of a DeleteObjects request body.
func deleteObjectsKeys(body []byte) ([]string, error) {
	var req struct {
		Objects []struct {
			Key string `xml:"Key"`
		} `xml:"Object"`
	}
	if err := xml.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(req.Objects))
	for _, o := range req.Objects {
		out = append(out, o.Key)
	}
	return out, nil
}

// writeXML answers 200 with v as S3's XML.
func (s *S3) writeXML(w http.ResponseWriter, r *http.Request, v any) {
	b, err := xml.Marshal(v)
	if err != nil {
		writeS3Error(w, r, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("X-Amz-Request-Id", requestID())
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, xml.Header)
		_, _ = w.Write(b)
	}
}

func requestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

// writeS3Error answers in S3's REST error shape
// (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html): an XML Error with Code,
// Message, any extra elements, RequestId and HostId; a HEAD answer carries the status only.
func writeS3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string, extra ...[2]string) {
	id := requestID()
	w.Header().Set("X-Amz-Request-Id", id)
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.WriteString("<Error><Code>")
	_ = xml.EscapeText(&b, []byte(code))
	b.WriteString("</Code><Message>")
	_ = xml.EscapeText(&b, []byte(msg))
	b.WriteString("</Message>")
	for _, e := range extra {
		fmt.Fprintf(&b, "<%s>", e[0])
		_ = xml.EscapeText(&b, []byte(e[1]))
		fmt.Fprintf(&b, "</%s>", e[0])
	}
	fmt.Fprintf(&b, "<RequestId>%s</RequestId><HostId>envdr-local</HostId></Error>", id)
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// Buckets lists the stack's buckets by name with their regions.
func (s *S3) Buckets() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for n, b := range s.buckets {
		out[n] = b.region
	}
	return out
}

// remoteIP is the caller's address, as events name it in requestParameters.sourceIPAddress.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// deleteBucket empties and deletes a bucket in fauxqs directly (the regions' endpoints may be
// down), and forgets it: a test's cleanup.
func (s *S3) deleteBucket(ctx context.Context, bucket string) error {
	s.mu.Lock()
	delete(s.buckets, bucket)
	s.mu.Unlock()
	do := func(method, path string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, s.backend.String()+path, nil)
		if err != nil {
			return nil, err
		}
		return s.client.Do(req)
	}
	for {
		resp, err := do(http.MethodGet, "/"+bucket+"?list-type=2&max-keys=1000")
		if err != nil {
			return err
		}
		var list struct {
			Contents []struct {
				Key string `xml:"Key"`
			} `xml:"Contents"`
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ListObjectsV2: HTTP %d", resp.StatusCode)
		}
		if err := xml.Unmarshal(body, &list); err != nil {
			return err
		}
		if len(list.Contents) == 0 {
			break
		}
		for _, o := range list.Contents {
			resp, err := do(http.MethodDelete, s3EscapePath("/"+bucket+"/"+o.Key))
			if err != nil {
				return err
			}
			resp.Body.Close()
		}
	}
	// Uploads left incomplete keep a bucket from being deleted.
	if resp, err := do(http.MethodGet, "/"+bucket+"?uploads"); err == nil {
		var list struct {
			Uploads []struct {
				Key      string `xml:"Key"`
				UploadID string `xml:"UploadId"`
			} `xml:"Upload"`
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if xml.Unmarshal(body, &list) == nil {
			for _, u := range list.Uploads {
				if resp, err := do(http.MethodDelete, s3EscapePath("/"+bucket+"/"+u.Key)+"?uploadId="+url.QueryEscape(u.UploadID)); err == nil {
					resp.Body.Close()
				}
			}
		}
	}
	resp, err := do(http.MethodDelete, "/"+bucket)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("DeleteBucket: HTTP %d", resp.StatusCode)
	}
	return nil
}

// S3Status is what GET /s3 of the admin endpoint reports (the admin wire type).
type S3Status = admin.S3Status

// Status reports buckets, replication and notification delivery.
func (s *S3) Status() S3Status {
	st := S3Status{Buckets: s.Buckets(), Replication: s.ReplicationStats()}
	st.NotificationsSent, st.NotificationsFailed, st.NotificationsPending = s.notif.stats()
	return st
}
