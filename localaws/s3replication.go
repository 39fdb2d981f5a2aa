package localaws

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/envdr/envdr/localaws/admin"
)

// S3 Cross-Region Replication, as S3 runs it
// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/replication.html), modelled like the
// global tables (globaltable.go):
//
//   - a bucket's replication configuration (PutBucketReplication) names destination buckets by
//     ARN, each in its rule with an optional key prefix filter; source and destinations must
//     have versioning enabled;
//   - each new object version written after the configuration leaves for each destination on
//     its own, after the replication lag plus a random jitter of its own (the global tables'
//     settings: `envdr local lag` and ENVDR_LOCAL_LAG/JITTER/SEED apply to both);
//   - the replica keeps the version ID, metadata and content type; it reads
//     x-amz-replication-status REPLICA, the source PENDING until every destination has it and
//     COMPLETED then; a replica is not replicated again;
//   - last writer wins by version: a version older than the one the destination holds is
//     discarded (a conflict), and a version the source has already replaced is skipped (the
//     newer one follows);
//   - deletes are not replicated (S3's default: DeleteMarkerReplication disabled; enabling it is
//     refused as not emulated);
//   - a region that is down neither sends nor receives; its pending objects leave when it
//     returns (S3 would deliver them late too, past the RTC threshold).
//
// Replication Time Control and replication metrics may be configured but are not emulated.

// s3ReplicationConfig is a bucket's ReplicationConfiguration.
type s3ReplicationConfig struct {
	XMLName xml.Name            `xml:"ReplicationConfiguration"`
	Role    string              `xml:"Role"`
	Rules   []s3ReplicationRule `xml:"Rule"`
}

type s3ReplicationRule struct {
	ID       string `xml:"ID"`
	Priority int    `xml:"Priority"`
	Status   string `xml:"Status"`
	Prefix   string `xml:"Prefix"` // the V1 schema's filter
	Filter   *struct {
		Prefix string    `xml:"Prefix"`
		Tag    *struct{} `xml:"Tag"`
		And    *struct{} `xml:"And"`
	} `xml:"Filter"`
	DeleteMarkerReplication *struct {
		Status string `xml:"Status"`
	} `xml:"DeleteMarkerReplication"`
	Destination struct {
		Bucket string `xml:"Bucket"`
	} `xml:"Destination"`
}

func (r s3ReplicationRule) prefix() string {
	if r.Filter != nil {
		return r.Filter.Prefix
	}
	return r.Prefix
}

// destinations are the buckets a new object key goes to. s.mu is held.
func (b *s3Bucket) destinations(key string) []string {
	if b.replication == nil || b.versioning != "Enabled" {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, r := range b.replication.Rules {
		dst := strings.TrimPrefix(r.Destination.Bucket, "arn:aws:s3:::")
		if r.Status == "Enabled" && strings.HasPrefix(key, r.prefix()) && !seen[dst] && dst != b.name {
			seen[dst] = true
			out = append(out, dst)
		}
	}
	return out
}

// replication serves Get/Put/DeleteBucketReplication.
func (s *S3) replication(w http.ResponseWriter, r *http.Request, bucket string) {
	bk := s.getBucket(bucket)
	if bk == nil {
		writeS3Error(w, r, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist", [2]string{"BucketName", bucket})
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.mu.Lock()
		raw := bk.replXML
		s.mu.Unlock()
		if raw == nil {
			writeS3Error(w, r, http.StatusNotFound, "ReplicationConfigurationNotFoundError", "The replication configuration was not found", [2]string{"BucketName", bucket})
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(raw)
		return
	case http.MethodDelete:
		s.mu.Lock()
		bk.replication, bk.replXML = nil, nil
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	raw := readBody(r)
	var c s3ReplicationConfig
	if err := xml.Unmarshal(raw, &c); err != nil || len(c.Rules) == 0 {
		writeS3Error(w, r, http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	src := bk
	if src.versioning != "Enabled" {
		writeS3Error(w, r, http.StatusBadRequest, "InvalidRequest", "Versioning must be 'Enabled' on the bucket to apply a replication configuration")
		return
	}
	if c.Role == "" {
		writeS3Error(w, r, http.StatusBadRequest, "InvalidArgument", "Role cannot be empty", [2]string{"ArgumentName", "Role"})
		return
	}
	for _, rule := range c.Rules {
		if rule.Filter != nil && (rule.Filter.Tag != nil || rule.Filter.And != nil) {
			writeS3Error(w, r, http.StatusNotImplemented, "NotImplemented", "envdr local stand-in: replication filters on tags are not emulated (prefix only)")
			return
		}
		if rule.DeleteMarkerReplication != nil && rule.DeleteMarkerReplication.Status == "Enabled" {
			writeS3Error(w, r, http.StatusNotImplemented, "NotImplemented", "envdr local stand-in: delete marker replication is not emulated")
			return
		}
		name := strings.TrimPrefix(rule.Destination.Bucket, "arn:aws:s3:::")
		dst := s.buckets[name]
		switch {
		case !strings.HasPrefix(rule.Destination.Bucket, "arn:aws:s3:::"):
			writeS3Error(w, r, http.StatusBadRequest, "InvalidArgument", "Invalid destination bucket ARN", [2]string{"ArgumentName", rule.Destination.Bucket})
			return
		case dst == nil:
			writeS3Error(w, r, http.StatusBadRequest, "InvalidRequest", "Destination bucket must exist: "+name)
			return
		case dst.versioning != "Enabled":
			writeS3Error(w, r, http.StatusBadRequest, "InvalidRequest", "Destination bucket must have versioning enabled: "+name)
			return
		}
	}
	src.replication, src.replXML = &c, raw
	w.WriteHeader(http.StatusOK)
}

// s3Change is one object version on its way to a destination bucket.
type s3Change struct {
	bucket, key, dest, version, event string
	at                                time.Time // the version's write time (last writer wins)
	written                           time.Time // the stand-in's clock at the write: latency counts from it
	due                               time.Time
}

// s3Pair is one replication direction's queue and counters.
type s3Pair struct {
	from, to string
	queue    []s3Change // by due time; a tie keeps write order
	wake     chan struct{}

	replicated, conflicts, superseded int64
	lastLat, maxLat                   time.Duration
}

// s3Replicator delivers replications, one worker per direction.
type s3Replicator struct {
	s       *S3
	mu      sync.Mutex
	pairs   map[[2]string]*s3Pair
	regions []string
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newS3Replicator(s *S3, regions []string) *s3Replicator {
	rp := &s3Replicator{s: s, pairs: map[[2]string]*s3Pair{}, regions: regions, stop: make(chan struct{})}
	for _, from := range regions {
		for _, to := range regions {
			if from == to {
				continue
			}
			p := &s3Pair{from: from, to: to, wake: make(chan struct{}, 1)}
			rp.pairs[[2]string{from, to}] = p
			rp.wg.Add(1)
			go rp.deliver(p)
		}
	}
	return rp
}

func (rp *s3Replicator) close() {
	select {
	case <-rp.stop:
	default:
		close(rp.stop)
	}
	rp.wg.Wait()
}

// enqueue queues c from region from to the destination bucket's region. s.mu is held (the
// destination's region is read from s.buckets).
func (rp *s3Replicator) enqueue(from, dest string, c s3Change) {
	db := rp.s.buckets[dest]
	if db == nil {
		return
	}
	p := rp.pairs[[2]string{from, db.region}]
	if p == nil { // same region: the stand-in serves no same-region replication
		return
	}
	c.due = c.written.Add(rp.s.delay(from, db.region))
	rp.mu.Lock()
	i := sort.Search(len(p.queue), func(i int) bool { return p.queue[i].due.After(c.due) })
	p.queue = append(p.queue, s3Change{})
	copy(p.queue[i+1:], p.queue[i:])
	p.queue[i] = c
	rp.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// deliver applies p's changes as they fall due, while both regions are up.
func (rp *s3Replicator) deliver(p *s3Pair) {
	defer rp.wg.Done()
	for {
		rp.mu.Lock()
		var next *s3Change
		if len(p.queue) > 0 {
			c := p.queue[0]
			next = &c
		}
		rp.mu.Unlock()
		wait := time.Duration(-1) // nothing queued: until woken
		if next != nil {
			wait = time.Until(next.due)
			if wait <= 0 && (!rp.s.isUp(p.from) || !rp.s.isUp(p.to)) {
				wait = 50 * time.Millisecond
			} else if wait <= 0 {
				err := rp.apply(p, *next)
				rp.mu.Lock()
				if err == nil {
					p.queue = p.queue[1:]
				}
				rp.mu.Unlock()
				if err == nil {
					continue
				}
				wait = 200 * time.Millisecond // the backend failed: retry
			}
		}
		var t *time.Timer
		var timer <-chan time.Time
		if wait >= 0 {
			t = time.NewTimer(wait)
			timer = t.C
		}
		select {
		case <-rp.stop:
			return
		case <-p.wake:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
	}
}

// apply copies one version to its destination, unless the source has replaced it since or the
// destination holds a newer version.
func (rp *s3Replicator) apply(p *s3Pair, c s3Change) error {
	s := rp.s
	// Both keys stay locked for the copy: the source cannot be replaced under it, nor the
	// destination written by its own clients.
	unlock := s.lockKeys([2]string{c.bucket, c.key}, [2]string{c.dest, c.key})
	defer unlock()
	cur, ok := s.Object(c.bucket, c.key)
	if !ok || cur.Version != c.version {
		// Replaced (its successor is queued) or deleted: fauxqs keeps only the current
		// object, so this version's bytes are gone (S3 would still replicate it).
		rp.done(p, c, false, true)
		return nil
	}
	if d, ok := s.Object(c.dest, c.key); ok && d.At.After(c.at) {
		rp.done(p, c, true, false)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, s.backend.String()+s3EscapePath("/"+c.dest+"/"+c.key), http.NoBody)
	if err != nil {
		return err
	}
	// A server-side copy inside fauxqs: content, content type and user metadata, whatever the
	// size (a PUT of the body would meet fauxqs' request limit).
	req.Header.Set("X-Amz-Copy-Source", s3EscapePath("/"+c.bucket+"/"+c.key))
	req.Header.Set("X-Amz-Metadata-Directive", "COPY")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("replicate s3://%s/%s to %s: %w", c.bucket, c.key, c.dest, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("replicate s3://%s/%s to %s: HTTP %d", c.bucket, c.key, c.dest, resp.StatusCode)
	}
	size, etag, err := s.headBackend(ctx, c.dest, c.key)
	if err != nil {
		return fmt.Errorf("replicate s3://%s/%s to %s: %w", c.bucket, c.key, c.dest, err)
	}
	s.recordVersion(p.to, c.dest, c.key, c.event, "AWS:s3-replication", "s3.amazonaws.com", c.version, c.at, size, etag)
	rp.done(p, c, false, false)
	return nil
}

// done counts a change and, at its source, marks the version COMPLETED once every destination
// has had it.
func (rp *s3Replicator) done(p *s3Pair, c s3Change, conflict, superseded bool) {
	lat := time.Since(c.written)
	rp.mu.Lock()
	switch {
	case conflict:
		p.conflicts++
	case superseded:
		p.superseded++
	default:
		p.replicated++
		p.lastLat = lat
		p.maxLat = max(p.maxLat, lat)
	}
	rp.mu.Unlock()
	s := rp.s
	s.mu.Lock()
	if b := s.buckets[c.bucket]; b != nil {
		if o := b.objects[c.key]; o != nil && o.Version == c.version && o.pending > 0 {
			o.pending--
			if o.pending == 0 {
				o.Status = "COMPLETED"
			}
		}
	}
	s.mu.Unlock()
}

// S3ReplicationStats are one S3 replication direction's counters (the admin wire type).
type S3ReplicationStats = admin.S3PairStats

// ReplicationStats reports every direction, ordered by from and to.
func (s *S3) ReplicationStats() []S3ReplicationStats {
	rp := s.repl
	rp.mu.Lock()
	defer rp.mu.Unlock()
	out := make([]S3ReplicationStats, 0, len(rp.pairs))
	for _, p := range rp.pairs {
		out = append(out, S3ReplicationStats{From: p.from, To: p.to, Replicated: p.replicated, Conflicts: p.conflicts,
			Superseded: p.superseded, Pending: len(p.queue), LastLatencyMs: ms(p.lastLat), MaxLatencyMs: ms(p.maxLat)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].From != out[j].From {
			return out[i].From < out[j].From
		}
		return out[i].To < out[j].To
	})
	return out
}

// Pending is the number of versions waiting to replicate, over every direction.
func (s *S3) Pending() int {
	n := 0
	for _, st := range s.ReplicationStats() {
		n += st.Pending
	}
	return n
}
