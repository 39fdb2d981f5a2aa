package envelope_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
)

// The shapes are S3's, from
// https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html.
func TestParseS3Notification(t *testing.T) {
	put := `{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"eu-west-1","eventTime":"2026-12-07T10:11:12.345Z",` +
		`"eventName":"ObjectCreated:CompleteMultipartUpload","s3":{"s3SchemaVersion":"1.0","bucket":{"name":"data-eu","arn":"arn:aws:s3:::data-eu"},` +
		`"object":{"key":"reports/a+b%2Bc%C3%A9.envdr","size":1234,"versionId":"v1","sequencer":"0055AED6DCD90281E5"}}}]}`
	n, ok, err := envelope.ParseS3Notification([]byte(put))
	require.True(t, ok)
	require.NoError(t, err)
	require.Len(t, n.Records, 1)
	r := n.Records[0]
	require.True(t, r.Created())
	require.Equal(t, "reports/a b+cé.envdr", r.Key, "URL-decoded, + is a space")
	require.Equal(t, "s3://data-eu/reports/a b+cé.envdr", r.URI())
	require.Equal(t, "eu-west-1", r.Region)
	require.Equal(t, int64(1234), r.Size)
	require.Equal(t, "v1", r.VersionID)
	require.True(t, r.Time.Equal(time.Date(2026, 12, 7, 10, 11, 12, 345e6, time.UTC)))

	n, ok, err = envelope.ParseS3Notification([]byte(`{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-07T10:00:00Z","Bucket":"data-eu","RequestId":"x","HostId":"y"}`))
	require.True(t, ok)
	require.NoError(t, err)
	require.True(t, n.Test)
	require.Equal(t, "data-eu", n.Bucket)

	// Not S3's: a replication event (even one whose data_uri mentions aws:s3) and garbage go to
	// the event decoder.
	for _, body := range []string{
		`{"version":1,"id":"x","data_uri":"aws:s3"}`,
		`{"version":1,`,
		`{"Records":[]}`,
	} {
		_, ok, err = envelope.ParseS3Notification([]byte(body))
		require.False(t, ok, body)
		require.NoError(t, err)
	}

	for name, body := range map[string]string{
		"bad time":   `{"Records":[{"eventSource":"aws:s3","eventTime":"yesterday","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}`,
		"no key":     `{"Records":[{"eventSource":"aws:s3","eventTime":"2026-12-07T10:00:00Z","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{}}}]}`,
		"no bucket":  `{"Records":[{"eventSource":"aws:s3","eventTime":"2026-12-07T10:00:00Z","eventName":"ObjectCreated:Put","s3":{"object":{"key":"k"}}}]}`,
		"bad escape": `{"Records":[{"eventSource":"aws:s3","eventTime":"2026-12-07T10:00:00Z","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%zz"}}}]}`,
		"mixed":      `{"Records":[{"eventSource":"aws:sqs"},{"eventSource":"aws:s3"}]}`,
	} {
		_, ok, err := envelope.ParseS3Notification([]byte(body))
		require.True(t, ok, name)
		var ee *envelope.EventError
		require.True(t, errors.As(err, &ee), name)
		require.Equal(t, envelope.ReasonBadNotification, ee.Reason(), name)
	}
}

func TestHeaderReason(t *testing.T) {
	_, err := envelope.ReadHeader(strings.NewReader("plain text, no magic"))
	reason, ok := envelope.HeaderReason(err)
	require.True(t, ok)
	require.Equal(t, envelope.ReasonNotEnvelope, reason)
	_, err = envelope.ReadHeader(strings.NewReader(""))
	reason, _ = envelope.HeaderReason(err)
	require.Equal(t, envelope.ReasonNotEnvelope, reason, "an empty object is no envelope")
	_, err = envelope.ReadHeader(strings.NewReader(string(envelope.Magic[:]) + "\x01"))
	reason, _ = envelope.HeaderReason(err)
	require.Equal(t, envelope.ReasonBadHeader, reason, "the magic, then the header cut short")
	_, ok = envelope.HeaderReason(errors.New("connection reset"))
	require.False(t, ok)
}
