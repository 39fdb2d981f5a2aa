package recovery

import (
	"context"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// DataAll asks the drill's data check to open every object (--data all).
const DataAll = -1

// dataWorkers bounds the objects opened at once.
const dataWorkers = 8

// Data check outcomes, per object and surviving region.
const (
	DataOpened        = "opened"
	DataMissingObject = "missing_object" // the region's bucket replica lacks the object: data RPO
	DataMissingWrap   = "missing_wrap"   // the object is there, no wrap of its key here: key RPO
	DataFailed        = "failed"         // the object is there and did not open: a finding
	DataNotEnvelope   = "not_envelope"   // not an envdr envelope (counted, not judged)
)

// DataReport is the drill's data check (--data N|all): objects of the S3 data path opened end to
// end from each surviving region's bucket replica, with that region's endpoints alone
// (docs/DRILLS.md, "Drills with data").
type DataReport struct {
	// Requested is "all" or the sample size asked for.
	Requested string `json:"requested"`
	// Objects is how many distinct objects are known: every survivor's bucket listed, plus the
	// objects the records name (data_uri) that no survivor holds.
	Objects int64 `json:"objects"`
	// Checked is how many of them were checked (all, or a uniform random sample).
	Checked int64 `json:"checked"`
	// Recoverable objects opened in at least one surviving region; Unrecoverable did not.
	Recoverable   int64 `json:"recoverable"`
	Unrecoverable int64 `json:"unrecoverable"`
	// MissingObjects counts (object, surviving region) pairs whose replica lacks the object
	// (data RPO); MissingWraps pairs whose replica holds it but whose region holds no wrap of its
	// data key (key RPO); Failed pairs that hold both and did not open.
	MissingObjects int64 `json:"missing_objects"`
	MissingWraps   int64 `json:"missing_wraps"`
	Failed         int64 `json:"failed"`
	NotEnvelopes   int64 `json:"not_envelopes"`
	// BytesChecked is the plaintext bytes opened and authenticated, all regions together.
	BytesChecked int64 `json:"bytes_checked"`
	// DataRPOSeconds is the age, at the drill's start, of the oldest object missing from some
	// surviving replica (its last-modified time, else its record's created_at); 0 when none.
	DataRPOSeconds float64        `json:"data_rpo_seconds"`
	Seconds        float64        `json:"seconds"`
	Regions        []DataRegion   `json:"regions"`
	Problems       []DataProblem  `json:"problems"`
	ProblemsOmit   int64          `json:"problems_omitted"`
	Sources        []DataBucketIn `json:"buckets"`
}

// DataRegion is one surviving region's data tally.
type DataRegion struct {
	Region         string `json:"region"`
	Bucket         string `json:"bucket"`
	Opened         int64  `json:"opened"`
	MissingObjects int64  `json:"missing_objects"`
	MissingWraps   int64  `json:"missing_wraps"`
	Failed         int64  `json:"failed"`
	NotEnvelopes   int64  `json:"not_envelopes"`
	Bytes          int64  `json:"bytes"`
}

// DataProblem is one object that a surviving region could not open, and why.
type DataProblem struct {
	Key     string `json:"key"`
	Region  string `json:"region"`
	Outcome string `json:"outcome"`
	ID      string `json:"id,omitempty"`
	Reason  string `json:"reason"`
}

// DataBucketIn says how many objects a surviving region's bucket listed.
type DataBucketIn struct {
	Region  string `json:"region"`
	Bucket  string `json:"bucket"`
	Objects int64  `json:"objects"`
	Error   string `json:"error,omitempty"`
}

// dataObject is one object known to the drill.
type dataObject struct {
	key string
	// in: the surviving regions whose bucket listed it, with its last-modified time.
	in map[string]time.Time
	// record: the record naming it (data_uri), when the scan saw one.
	record  string
	created time.Time
}

// dataCheck runs the data check over the surviving regions (checks), given the records' data
// URIs the scan collected (key -> record).
func dataCheck(ctx context.Context, cfg *config.Config, checks map[string]*regionCheck, surviving []string,
	want int, named map[string]namedObject, maxProblems int, started time.Time) *DataReport {
	begin := time.Now()
	rep := &DataReport{Requested: "all", Regions: []DataRegion{}, Problems: []DataProblem{}, Sources: []DataBucketIn{}}
	if want > 0 {
		rep.Requested = fmt.Sprint(want)
	}
	objs := map[string]*dataObject{}
	var withBucket []string
	for _, n := range surviving {
		rc, _ := cfg.Region(n)
		if rc.Bucket == "" {
			continue
		}
		withBucket = append(withBucket, n)
		src := DataBucketIn{Region: n, Bucket: rc.Bucket}
		err := listBucket(ctx, checks[n].r, rc.Bucket, func(key string, mod time.Time) {
			o := objs[key]
			if o == nil {
				o = &dataObject{key: key, in: map[string]time.Time{}}
				objs[key] = o
			}
			o.in[n] = mod
			src.Objects++
		})
		if err != nil {
			src.Error = trimErr(err)
		}
		rep.Sources = append(rep.Sources, src)
	}
	for key, no := range named {
		o := objs[key]
		if o == nil {
			o = &dataObject{key: key, in: map[string]time.Time{}}
			objs[key] = o
		}
		o.record, o.created = no.id, no.created
	}
	keys := make([]string, 0, len(objs))
	for k := range objs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	rep.Objects = int64(len(keys))
	if want > 0 && want < len(keys) {
		mathrand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		keys = keys[:want]
		sort.Strings(keys)
	}
	rep.Checked = int64(len(keys))

	tallies := map[string]*DataRegion{}
	for _, n := range withBucket {
		rc, _ := cfg.Region(n)
		tallies[n] = &DataRegion{Region: n, Bucket: rc.Bucket}
	}
	var mu sync.Mutex
	var oldest time.Time
	problem := func(p DataProblem) {
		if len(rep.Problems) < maxProblems {
			rep.Problems = append(rep.Problems, p)
		} else {
			rep.ProblemsOmit++
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(dataWorkers)
	for _, key := range keys {
		o := objs[key]
		g.Go(func() error {
			opened, notEnvelope := false, false
			for _, n := range withBucket {
				_, present := o.in[n]
				var res objectResult
				if present {
					res = openObject(gctx, cfg, checks[n], tallies[n].Bucket, key)
				} else {
					res = objectResult{outcome: DataMissingObject, id: o.record,
						reason: fmt.Sprintf("s3://%s/%s not in region %s's replica (not replicated yet)", tallies[n].Bucket, key, n)}
				}
				mu.Lock()
				t := tallies[n]
				switch res.outcome {
				case DataOpened:
					opened = true
					t.Opened++
					t.Bytes += res.bytes
					rep.BytesChecked += res.bytes
				case DataMissingObject:
					t.MissingObjects++
					rep.MissingObjects++
					at := o.created
					for _, m := range o.in {
						if at.IsZero() || m.Before(at) {
							at = m
						}
					}
					if !at.IsZero() && (oldest.IsZero() || at.Before(oldest)) {
						oldest = at
					}
				case DataMissingWrap:
					t.MissingWraps++
					rep.MissingWraps++
				case DataNotEnvelope:
					t.NotEnvelopes++
					notEnvelope = true
				default:
					t.Failed++
					rep.Failed++
				}
				if res.outcome != DataOpened {
					problem(DataProblem{Key: key, Region: n, Outcome: res.outcome, ID: res.id, Reason: res.reason})
				}
				mu.Unlock()
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case opened:
				rep.Recoverable++
			case notEnvelope:
				rep.NotEnvelopes++
			default:
				rep.Unrecoverable++
			}
			return nil
		})
	}
	_ = g.Wait()
	for _, n := range withBucket {
		rep.Regions = append(rep.Regions, *tallies[n])
	}
	sort.Slice(rep.Problems, func(i, j int) bool {
		a, b := rep.Problems[i], rep.Problems[j]
		return a.Key < b.Key || a.Key == b.Key && a.Region < b.Region
	})
	if !oldest.IsZero() {
		rep.DataRPOSeconds = max(0, started.Sub(oldest).Seconds())
	}
	rep.Seconds = time.Since(begin).Seconds()
	return rep
}

// namedObject is an object a record names (its data_uri).
type namedObject struct {
	id      string
	created time.Time
}

// dataKey is the object key of a record's data_uri when it names an object in one of the
// configured buckets (every region's replica holds it under the same key).
func dataKey(cfg *config.Config, uri string) (string, bool) {
	if !regions.IsS3URI(uri) {
		return "", false
	}
	u, err := regions.ParseS3URI(uri)
	if err != nil {
		return "", false
	}
	if _, ok := regions.BucketRegion(cfg, u.Bucket); !ok {
		return "", false
	}
	return u.Key, true
}

// listBucket lists bucket through r's endpoint.
func listBucket(ctx context.Context, r *regions.Region, bucket string, each func(key string, mod time.Time)) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(bucket)}
	for {
		var out *s3.ListObjectsV2Output
		err := r.S3Call(ctx, "ListObjectsV2", bucket, "", func(ctx context.Context, c regions.S3API) error {
			var err error
			out, err = c.ListObjectsV2(ctx, in)
			return err
		})
		if err != nil {
			return err
		}
		for _, o := range out.Contents {
			each(aws.ToString(o.Key), aws.ToTime(o.LastModified))
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			return nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}

type objectResult struct {
	outcome, id, reason string
	bytes               int64
}

// openObject opens s3://bucket/key end to end through region c alone: the object from c's
// bucket, the data key from c's own wrap (its table's record, else the header's wrap through
// c's replica of a multi-Region key), every chunk authenticated; the plaintext is discarded.
func openObject(ctx context.Context, cfg *config.Config, c *regionCheck, bucket, key string) objectResult {
	n := c.r.Name
	obj, err := c.r.GetObject(ctx, bucket, key, "")
	if err != nil {
		if regions.IsNotFound(err) {
			return objectResult{outcome: DataMissingObject, reason: trimErr(err)}
		}
		return objectResult{outcome: DataFailed, reason: trimErr(err)}
	}
	defer obj.Body.Close()
	var head strings.Builder
	hdr, err := envelope.ReadHeader(io.TeeReader(obj.Body, &head))
	if err != nil {
		if reason, ok := envelope.HeaderReason(err); ok && reason == envelope.ReasonNotEnvelope {
			return objectResult{outcome: DataNotEnvelope, reason: fmt.Sprintf("s3://%s/%s: %v", bucket, key, err)}
		}
		return objectResult{outcome: DataFailed, reason: fmt.Sprintf("s3://%s/%s: %v", bucket, key, err)}
	}
	res := objectResult{id: hdr.RecordID()}
	wraps, why := wrapsIn(ctx, cfg, c, hdr, res.id, n)
	if len(wraps) == 0 {
		res.outcome, res.reason = DataMissingWrap, fmt.Sprintf("record %s: %s", res.id, why)
		return res
	}
	cw := &countingWriter{}
	src := io.MultiReader(strings.NewReader(head.String()), obj.Body)
	if _, err := envelope.Open(ctx, cw, src, c.r, envelope.OpenOptions{Wrap: wraps[0], Fallbacks: wraps[1:]}); err != nil {
		res.outcome, res.reason = DataFailed, fmt.Sprintf("record %s: %s", res.id, trimErr(err))
		return res
	}
	res.outcome, res.bytes = DataOpened, cw.n
	return res
}
