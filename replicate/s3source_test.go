package replicate_test

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/s3fixture"
	"github.com/envdr/envdr/replicate"
)

// withS3 gives the bundle's config the fixture's buckets and S3 endpoints.
func (b *bundle) withS3(t *testing.T) *s3fixture.Fixture {
	t.Helper()
	f := s3fixture.New(t, b.env)
	for i := range b.cfg.Regions {
		rc, _ := b.env.Config.Region(b.cfg.Regions[i].Name)
		b.cfg.Regions[i].Bucket, b.cfg.Regions[i].Endpoints.S3 = rc.Bucket, rc.Endpoints.S3
	}
	return f
}

// TestS3EventSource: envelopes that land in the bucket (put by a plain S3 client, no --enqueue)
// are replicated from their ObjectCreated notifications, once however often notified; the test
// event and other S3 events are acknowledged and ignored; an object that is no envelope, a
// header that fails its checks and an object that is gone are dead-lettered with their reasons,
// and nothing is written for them.
func TestS3EventSource(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	f := b.withS3(t)

	sealed, _, hdr := b.seal(t)
	key := "incoming/a report+1.envdr" // a space and a '+': the notification's key is URL-encoded
	f.Put("us-east-1", key, sealed)
	at := time.Now().Add(-3 * time.Second).Truncate(time.Millisecond)
	note := string(s3fixture.Notification("us-east-1", f.Bucket("us-east-1"), key, int64(len(sealed)), at))
	b.send(t, note)
	b.send(t, note) // S3 may deliver a notification more than once
	b.send(t, string(s3fixture.TestEvent(f.Bucket("us-east-1"))))
	removed := `{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-12-07T10:00:00.000Z",` +
		`"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"` + f.Bucket("us-east-1") + `"},"object":{"key":"old.envdr","sequencer":"01"}}}]}`
	b.send(t, removed)

	// Poison: not an envelope, a header cut short, an object that is gone, a malformed record.
	f.Put("us-east-1", "notes.txt", []byte("just a text file, not an envelope"))
	b.send(t, string(s3fixture.Notification("us-east-1", f.Bucket("us-east-1"), "notes.txt", 33, time.Now())))
	f.Put("us-east-1", "cut.envdr", sealed[:40])
	b.send(t, string(s3fixture.Notification("us-east-1", f.Bucket("us-east-1"), "cut.envdr", 40, time.Now())))
	b.send(t, string(s3fixture.Notification("us-east-1", f.Bucket("us-east-1"), "gone.envdr", 100, time.Now())))
	b.send(t, `{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","eventTime":"yesterday","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}`)

	d := b.daemon(t)
	b.waitDrained(t, d, 60*time.Second)

	rec := b.record(t, "us-east-1", hdr.RecordID())
	for _, r := range b.env.Regions {
		require.True(t, rec.Regions[r].Verified(), "region %s verified", r)
	}
	require.True(t, rec.CreatedAt.Equal(at), "created_at is the object's event time: got %s, want %s", rec.CreatedAt, at)

	reasons := map[string]string{}
	for _, m := range b.dlq(t) {
		reasons[aws.ToString(m.MessageAttributes["reason"].StringValue)] = aws.ToString(m.Body)
	}
	require.Len(t, reasons, 4, "DLQ reasons: %v", reasons)
	for _, want := range []string{envelope.ReasonNotEnvelope, envelope.ReasonBadHeader, envelope.ReasonObjectNotFound, envelope.ReasonBadNotification} {
		require.Contains(t, reasons, want)
	}
	require.Contains(t, reasons[envelope.ReasonNotEnvelope], "notes.txt", "the DLQ keeps the notification")

	require.Equal(t, 2, b.logs.FilterMessage("message acknowledged and ignored: nothing to replicate").Len(), "the test event and the delete are acked and ignored")
	require.Equal(t, 1, b.logs.FilterField(zap.String("ignored", replicate.IgnoredS3TestEvent)).Len())
	require.GreaterOrEqual(t, b.logs.FilterMessage("event replicated").Len(), 2, "both notifications of the envelope are acked")
}
