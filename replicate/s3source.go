package replicate

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/regions"
)

// The S3 event source: a bucket's ObjectCreated notifications on the region's queue protect every
// envelope that lands in the bucket, by whatever client, with no --enqueue. The daemon reads the
// object's header with one ranged GET (never the data), builds the replication event from it
// (wrapped DEK, context, commitment, key; created_at the object's event time, data_uri its
// s3:// URI) and replicates it as any sealed event. The header is untrusted input: the event
// built from it is checked (Validate, checkEvent) and its wrap must open to the commitment
// before anything is written, exactly as for an event on the queue.

// Ignored-message notes (Result.Ignored): acknowledged, nothing to replicate.
const (
	IgnoredS3TestEvent = "s3_test_event"  // S3's s3:TestEvent, sent when notifications are set up
	IgnoredNotCreated  = "s3_not_created" // an S3 event other than ObjectCreated (a delete, say)
)

// handleS3 handles one S3 notification message: each ObjectCreated record is replicated as the
// event its object's header makes. The message's verdict is the worst of its records' (S3 sends
// one record per message; a batch of several is retried or dead-lettered as a whole, which is
// harmless, as replicating is idempotent).
func (p *Pipeline) handleS3(ctx context.Context, n *envelope.S3Notification, perr error, again bool) Result {
	res := Result{Regions: map[string]string{}}
	if perr != nil {
		var ee *envelope.EventError
		res.Verdict, res.Reason, res.Err = Poison, envelope.ReasonBadNotification, perr
		if errors.As(perr, &ee) {
			res.Reason = ee.Reason()
		}
		return res
	}
	if n.Test {
		res.Ignored = IgnoredS3TestEvent
		res.Err = fmt.Errorf("S3 test event for bucket %s: notifications reach this queue", n.Bucket)
		return res
	}
	created := 0
	for i := range n.Records {
		rec := &n.Records[i]
		if !rec.Created() {
			continue
		}
		created++
		r := p.handleS3Object(ctx, rec, again)
		for k, v := range r.Regions {
			res.Regions[k] = v
		}
		if res.EnvelopeID == "" {
			res.EnvelopeID = r.EnvelopeID
		}
		if worse(r.Verdict, res.Verdict) {
			res.Verdict, res.Reason, res.Err = r.Verdict, r.Reason, r.Err
		}
	}
	if created == 0 {
		res.Ignored = IgnoredNotCreated
		res.Err = fmt.Errorf("S3 event %s for %s: not an object creation", n.Records[0].EventName, n.Records[0].URI())
	}
	return res
}

// worse orders verdicts: a retry outranks a poison (the poisonous record comes back and is
// dead-lettered on its own merits later), which outranks an ack.
func worse(a, b Verdict) bool {
	rank := map[Verdict]int{Ack: 0, Poison: 1, Retry: 2}
	return rank[a] > rank[b]
}

// handleS3Object replicates one created object: header, event, then the usual phases.
func (p *Pipeline) handleS3Object(ctx context.Context, o *envelope.S3ObjectEvent, again bool) Result {
	res := Result{Regions: map[string]string{}}
	ev, err := p.s3Event(ctx, o)
	if err != nil {
		var pe *poisonError
		if errors.As(err, &pe) {
			res.Verdict, res.Reason, res.Err = Poison, pe.reason, err
		} else {
			res.Verdict, res.Reason, res.Err = Retry, "s3_read", err
		}
		return res
	}
	res.EnvelopeID = ev.ID
	p.log.Debug("S3 object: envelope header read", zap.String("uri", o.URI()), zap.String("record", ev.ID),
		zap.String("source_region", ev.SourceRegion), zap.String("key_arn", ev.KeyARN))
	err = p.process(ctx, ev, &res, again)
	p.verdict(err, &res)
	return res
}

// s3Event reads an object's envelope header (one ranged GET through the bucket's region, else
// this daemon's) and builds its replication event. An object that is gone, is no envelope or has
// a header that fails its checks is poison (its reason says which); a failed read is retried.
func (p *Pipeline) s3Event(ctx context.Context, o *envelope.S3ObjectEvent) (*envelope.Event, error) {
	r := p.self
	if br, err := p.topo.Region(o.Region); err == nil {
		r = br
	}
	hdr, err := r.ReadEnvelopeHeader(ctx, o.Bucket, o.Key, o.VersionID)
	if err != nil {
		if regions.IsNotFound(err) {
			return nil, poison(envelope.ReasonObjectNotFound, "%s: %w", o.URI(), err)
		}
		if reason, ok := envelope.HeaderReason(err); ok {
			return nil, poison(reason, "%s: %w", o.URI(), err)
		}
		return nil, err
	}
	ev, err := envelope.NewEvent(hdr, o.Time, o.URI())
	if err != nil {
		return nil, poison(envelope.ReasonBadHeader, "%s (record %s): the header makes no valid event: %w", o.URI(), hdr.RecordID(), err)
	}
	return ev, nil
}
