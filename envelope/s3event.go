package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// S3 notification reasons (the DLQ reason attribute) for objects that arrive by S3 event
// notification rather than as replication events (docs/FORMAT.md §7).
const (
	ReasonBadNotification = "bad_s3_notification" // S3-looking JSON that is not a valid notification
	ReasonNotEnvelope     = "not_envelope"        // the object does not start with the envelope magic
	ReasonBadHeader       = "bad_header"          // an envelope whose header fails its checks
	ReasonObjectNotFound  = "object_not_found"    // the object (that version) is gone
)

// S3TestEvent is the Event of the message S3 sends when a notification configuration is set.
const S3TestEvent = "s3:TestEvent"

// S3Notification is an S3 event notification message (the SQS body S3 sends), as documented in
// https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html.
type S3Notification struct {
	// Test is set for s3:TestEvent (no records).
	Test bool
	// Bucket of the test event.
	Bucket  string
	Records []S3ObjectEvent
}

// S3ObjectEvent is one record of a notification: one object event.
type S3ObjectEvent struct {
	EventName string    // "ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload", ...
	Region    string    // awsRegion: the bucket's region
	Time      time.Time // eventTime
	Bucket    string
	Key       string // decoded (notifications carry it URL-encoded, a space as '+')
	Size      int64
	VersionID string // empty when the bucket is not versioned
	Sequencer string
}

// Created reports an ObjectCreated event (Put, Post, Copy, CompleteMultipartUpload).
func (e *S3ObjectEvent) Created() bool { return strings.HasPrefix(e.EventName, "ObjectCreated:") }

// URI is the object's s3://bucket/key.
func (e *S3ObjectEvent) URI() string { return "s3://" + e.Bucket + "/" + e.Key }

type s3Wire struct {
	Service string `json:"Service"`
	Event   string `json:"Event"`
	Bucket  string `json:"Bucket"`
	Records []struct {
		EventSource string `json:"eventSource"`
		AWSRegion   string `json:"awsRegion"`
		EventTime   string `json:"eventTime"`
		EventName   string `json:"eventName"`
		S3          struct {
			Bucket struct {
				Name string `json:"name"`
			} `json:"bucket"`
			Object struct {
				Key       string `json:"key"`
				Size      int64  `json:"size"`
				VersionID string `json:"versionId"`
				Sequencer string `json:"sequencer"`
			} `json:"object"`
		} `json:"s3"`
	} `json:"Records"`
}

// ParseS3Notification recognises and parses an S3 event notification. ok is false when body is
// not one (a replication event, say: it has no "Records" from aws:s3 and is no s3:TestEvent), and
// then err is nil. With ok true, err is an *EventError (ReasonBadNotification) for a
// notification that cannot be used.
func ParseS3Notification(body []byte) (n *S3Notification, ok bool, err error) {
	// Cheap test first: every replication event goes through here.
	if !bytes.Contains(body, []byte(`"aws:s3"`)) && !bytes.Contains(body, []byte(S3TestEvent)) {
		return nil, false, nil
	}
	var w s3Wire
	if json.Unmarshal(body, &w) != nil {
		return nil, false, nil // not JSON of this shape: the event decoder says what is wrong
	}
	if w.Event == S3TestEvent {
		return &S3Notification{Test: true, Bucket: w.Bucket}, true, nil
	}
	if len(w.Records) == 0 {
		return nil, false, nil
	}
	n = &S3Notification{}
	for i, r := range w.Records {
		if r.EventSource != "aws:s3" {
			return nil, true, &EventError{Code: ReasonBadNotification, Field: fmt.Sprintf("Records[%d].eventSource", i), Detail: fmt.Sprintf("%q, want aws:s3", r.EventSource)}
		}
		key, err := url.QueryUnescape(r.S3.Object.Key)
		if err != nil || key == "" {
			return nil, true, &EventError{Code: ReasonBadNotification, Field: fmt.Sprintf("Records[%d].s3.object.key", i), Detail: "missing or not URL-encoded"}
		}
		if r.S3.Bucket.Name == "" {
			return nil, true, &EventError{Code: ReasonBadNotification, Field: fmt.Sprintf("Records[%d].s3.bucket.name", i), Detail: "missing"}
		}
		at, err := time.Parse(time.RFC3339Nano, r.EventTime)
		if err != nil {
			return nil, true, &EventError{Code: ReasonBadNotification, Field: fmt.Sprintf("Records[%d].eventTime", i), Detail: err.Error()}
		}
		n.Records = append(n.Records, S3ObjectEvent{EventName: r.EventName, Region: r.AWSRegion, Time: at.UTC(),
			Bucket: r.S3.Bucket.Name, Key: key, Size: r.S3.Object.Size, VersionID: r.S3.Object.VersionID, Sequencer: r.S3.Object.Sequencer})
	}
	return n, true, nil
}

// HeaderReason classifies an error reading an object's envelope header for the DLQ: an object
// that is no envelope at all (ReasonNotEnvelope), or one whose header fails its checks
// (ReasonBadHeader); ok is false for any other error (the read failed: retry).
func HeaderReason(err error) (reason string, ok bool) {
	var fe *FormatError
	if !errors.As(err, &fe) {
		return "", false
	}
	if fe.Field == "magic" || (fe.Field == "header" && fe.Offset == 0) { // or an empty object
		return ReasonNotEnvelope, true
	}
	return ReasonBadHeader, true
}
