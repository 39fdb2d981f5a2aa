package localaws

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/envdr/envdr/internal/config"
)

// S3 event notifications to SQS, as S3 sends them
// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html):
// one message per event, {"Records":[{eventVersion "2.1", eventSource "aws:s3", awsRegion,
// eventTime, eventName "ObjectCreated:Put" (or :Copy, :CompleteMultipartUpload), userIdentity,
// requestParameters, responseElements, s3: {s3SchemaVersion "1.0", configurationId, bucket {name,
// ownerIdentity, arn}, object {key (URL-encoded), size, eTag, versionId, sequencer}}}]}, and
// {"Service":"Amazon S3","Event":"s3:TestEvent",...} to each queue when a configuration is set.
// Only ObjectCreated events are emulated; a replica written by replication notifies in its
// destination bucket like any other write. Delivery is asynchronous, per region in write order,
// and waits while the region is down.

// s3NotificationConfig is a bucket's NotificationConfiguration (queue destinations only).
type s3NotificationConfig struct {
	XMLName xml.Name        `xml:"http://s3.amazonaws.com/doc/2006-03-01/ NotificationConfiguration"`
	Queues  []s3QueueConfig `xml:"QueueConfiguration"`
	// Destinations the stand-in does not deliver to: a configuration naming one is refused.
	Topics      []struct{} `xml:"TopicConfiguration"`
	Lambdas     []struct{} `xml:"CloudFunctionConfiguration"`
	EventBridge *struct{}  `xml:"EventBridgeConfiguration"`
}

type s3QueueConfig struct {
	ID     string          `xml:"Id,omitempty"`
	Queue  string          `xml:"Queue"`
	Events []string        `xml:"Event"`
	Filter *s3NotifyFilter `xml:"Filter,omitempty"`
}

type s3NotifyFilter struct {
	Rules []s3FilterRule `xml:"S3Key>FilterRule"`
}

type s3FilterRule struct {
	Name  string `xml:"Name"`
	Value string `xml:"Value"`
}

// s3EventTypes are the event types a configuration may name (the stand-in sends only the
// ObjectCreated ones).
var s3EventTypes = map[string]bool{
	"s3:ObjectCreated:*": true, "s3:ObjectCreated:Put": true, "s3:ObjectCreated:Post": true,
	"s3:ObjectCreated:Copy": true, "s3:ObjectCreated:CompleteMultipartUpload": true,
	"s3:ObjectRemoved:*": true, "s3:ObjectRemoved:Delete": true, "s3:ObjectRemoved:DeleteMarkerCreated": true,
}

// matches reports whether an event (eventName "ObjectCreated:Put") of key is one q sends.
func (q s3QueueConfig) matches(event, key string) bool {
	ok := false
	for _, e := range q.Events {
		e = strings.TrimPrefix(e, "s3:")
		if e == event || (strings.HasSuffix(e, ":*") && strings.HasPrefix(event, strings.TrimSuffix(e, "*"))) {
			ok = true
			break
		}
	}
	if !ok || q.Filter == nil {
		return ok
	}
	for _, r := range q.Filter.Rules {
		switch strings.ToLower(r.Name) {
		case "prefix":
			ok = ok && strings.HasPrefix(key, r.Value)
		case "suffix":
			ok = ok && strings.HasSuffix(key, r.Value)
		}
	}
	return ok
}

// notification serves Get/PutBucketNotificationConfiguration.
func (s *S3) notification(w http.ResponseWriter, r *http.Request, bucket string) {
	bk := s.getBucket(bucket)
	if bk == nil {
		writeS3Error(w, r, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist", [2]string{"BucketName", bucket})
		return
	}
	if r.Method == http.MethodGet {
		s.mu.Lock()
		c := bk.notification
		s.mu.Unlock()
		if c == nil {
			c = &s3NotificationConfig{}
		}
		s.writeXML(w, r, c)
		return
	}
	var c s3NotificationConfig
	if err := xml.Unmarshal(readBody(r), &c); err != nil {
		writeS3Error(w, r, http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
		return
	}
	if len(c.Topics) > 0 || len(c.Lambdas) > 0 || c.EventBridge != nil {
		writeS3Error(w, r, http.StatusNotImplemented, "NotImplemented", "envdr local stand-in: only SQS queue destinations are emulated")
		return
	}
	region, _ := s.BucketRegion(bucket)
	for i := range c.Queues {
		q := &c.Queues[i]
		if q.ID == "" {
			q.ID = "envdr-" + strings.ToLower(requestID())
		}
		for _, e := range q.Events {
			if !s3EventTypes[e] {
				writeS3Error(w, r, http.StatusBadRequest, "InvalidArgument", "The event is not supported for notifications", [2]string{"ArgumentName", e})
				return
			}
		}
		arn := strings.Split(q.Queue, ":")
		if len(arn) != 6 || arn[0] != "arn" || arn[2] != "sqs" {
			writeS3Error(w, r, http.StatusBadRequest, "InvalidArgument", "The ARN is not well formed", [2]string{"ArgumentName", q.Queue})
			return
		}
		if arn[3] != region {
			writeS3Error(w, r, http.StatusBadRequest, "InvalidArgument", "The notification destination service region is not valid for the bucket location constraint",
				[2]string{"ArgumentName", q.Queue})
			return
		}
	}
	// S3 checks every destination by sending it s3:TestEvent; one it cannot reach fails the
	// whole configuration.
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	for _, q := range c.Queues {
		test, _ := json.Marshal(map[string]string{"Service": "Amazon S3", "Event": "s3:TestEvent",
			"Time": time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), "Bucket": bucket,
			"RequestId": requestID(), "HostId": "envdr-local"})
		if err := s.notif.sendNow(ctx, region, q.Queue, []string{string(test)}); err != nil {
			writeS3Error(w, r, http.StatusBadRequest, "InvalidArgument",
				"Unable to validate the following destination configurations: "+q.Queue+": "+err.Error(),
				[2]string{"ArgumentName", q.Queue})
			return
		}
	}
	s.mu.Lock()
	if len(c.Queues) == 0 {
		bk.notification = nil
	} else {
		bk.notification = &c
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// eventKey URL-encodes an object key as S3 does in event messages: as a form value (a space is
// "+"), with "/" left as it is.
func eventKey(key string) string {
	return strings.ReplaceAll(url.QueryEscape(key), "%2F", "/")
}

// eventMessage is the notification of a write of key (o) in bucket b. s.mu is held.
func eventMessage(b *s3Bucket, key string, o *s3Object, configID, principal, ip string) string {
	obj := map[string]any{
		"key":       eventKey(key),
		"size":      o.Size,
		"eTag":      strings.Trim(o.ETag, `"`),
		"sequencer": fmt.Sprintf("%018X", o.Seq),
	}
	if o.Version != "null" {
		obj["versionId"] = o.Version
	}
	rec := map[string]any{
		"eventVersion": "2.1",
		"eventSource":  "aws:s3",
		"awsRegion":    b.region,
		"eventTime":    o.At.UTC().Format("2006-01-02T15:04:05.000Z"),
		"eventName":    o.Event,
		"userIdentity": map[string]string{"principalId": principal},
		"requestParameters": map[string]string{
			"sourceIPAddress": ip,
		},
		"responseElements": map[string]string{
			"x-amz-request-id": requestID(),
			"x-amz-id-2":       "envdr-local",
		},
		"s3": map[string]any{
			"s3SchemaVersion": "1.0",
			"configurationId": configID,
			"bucket": map[string]any{
				"name":          b.name,
				"ownerIdentity": map[string]string{"principalId": "envdr-local"},
				"arn":           BucketARN(b.name),
			},
			"object": obj,
		},
	}
	out, _ := json.Marshal(map[string]any{"Records": []any{rec}})
	return string(out)
}

// s3Delivery is one event message on its way to a queue.
type s3Delivery struct {
	region, queueARN, body string
}

// s3Notifier sends event messages to the queues, through fauxqs directly (S3 delivers inside
// AWS, not through the caller's endpoint: no faults, no call counts), one worker per region.
type s3Notifier struct {
	backend string
	isUp    func(string) bool
	clients map[string]*sqs.Client

	mu     sync.Mutex
	queues map[string][]s3Delivery // region -> pending, in order
	urls   map[string]string       // queue ARN -> URL
	wake   map[string]chan struct{}
	sent   map[string]int64
	failed map[string]int64
	stop   chan struct{}
	wg     sync.WaitGroup
}

func newS3Notifier(backend *url.URL, regions []string, isUp func(string) bool) *s3Notifier {
	n := &s3Notifier{backend: backend.String(), isUp: isUp, clients: map[string]*sqs.Client{},
		queues: map[string][]s3Delivery{}, urls: map[string]string{}, wake: map[string]chan struct{}{},
		sent: map[string]int64{}, failed: map[string]int64{}, stop: make(chan struct{})}
	for _, r := range regions {
		// Signed for the queue's region: fauxqs keeps each region's queues apart by it.
		n.clients[r] = sqs.NewFromConfig(AWSConfig(r, config.Endpoints{SQS: n.backend}, AccessKey, SecretKey))
		n.wake[r] = make(chan struct{}, 1)
	}
	// The maps are complete before any worker reads them.
	for _, r := range regions {
		n.wg.Add(1)
		go n.run(r)
	}
	return n
}

func (n *s3Notifier) close() {
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	n.wg.Wait()
}

// send queues messages for delivery.
func (n *s3Notifier) send(msgs ...s3Delivery) {
	if len(msgs) == 0 {
		return
	}
	n.mu.Lock()
	for _, m := range msgs {
		n.queues[m.region] = append(n.queues[m.region], m)
	}
	n.mu.Unlock()
	for _, m := range msgs {
		select {
		case n.wake[m.region] <- struct{}{}:
		default:
		}
	}
}

// run delivers region's messages in order, batching per queue; a failed batch is retried.
func (n *s3Notifier) run(region string) {
	defer n.wg.Done()
	for {
		n.mu.Lock()
		pending := n.queues[region]
		n.mu.Unlock()
		if len(pending) == 0 || !n.isUp(region) {
			wait := time.Duration(0)
			if len(pending) > 0 {
				wait = 50 * time.Millisecond // down: look again soon
			}
			if !n.sleep(region, wait) {
				return
			}
			continue
		}
		// The longest run of messages to one queue, up to SendMessageBatch's 10.
		k := 1
		for k < len(pending) && k < 10 && pending[k].queueARN == pending[0].queueARN {
			k++
		}
		bodies := make([]string, k)
		for i := range k {
			bodies[i] = pending[i].body
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := n.sendNow(ctx, region, pending[0].queueARN, bodies)
		cancel()
		n.mu.Lock()
		if err == nil {
			n.queues[region] = n.queues[region][k:]
			n.sent[region] += int64(k)
		} else {
			n.failed[region]++
		}
		n.mu.Unlock()
		if err != nil && !n.sleep(region, 200*time.Millisecond) {
			return
		}
	}
}

// sleep waits d (0: until woken); false when the notifier stops.
func (n *s3Notifier) sleep(region string, d time.Duration) bool {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-n.stop:
		return false
	case <-n.wake[region]:
	case <-timer:
	}
	return true
}

// sendNow sends bodies to the queue of queueARN in region, at once.
func (n *s3Notifier) sendNow(ctx context.Context, region, queueARN string, bodies []string) error {
	c := n.clients[region]
	if c == nil {
		return fmt.Errorf("no region %s", region)
	}
	n.mu.Lock()
	qURL := n.urls[queueARN]
	n.mu.Unlock()
	if qURL == "" {
		name := queueARN[strings.LastIndexByte(queueARN, ':')+1:]
		out, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
		if err != nil {
			return fmt.Errorf("queue %s in %s: %w", queueARN, region, err)
		}
		qURL = aws.ToString(out.QueueUrl)
		n.mu.Lock()
		n.urls[queueARN] = qURL
		n.mu.Unlock()
	}
	if len(bodies) == 1 {
		_, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(qURL), MessageBody: aws.String(bodies[0])})
		if err != nil {
			return fmt.Errorf("SendMessage to %s in %s: %w", queueARN, region, err)
		}
		return nil
	}
	entries := make([]sqstypes.SendMessageBatchRequestEntry, len(bodies))
	for i, b := range bodies {
		entries[i] = sqstypes.SendMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), MessageBody: aws.String(b)}
	}
	out, err := c.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(qURL), Entries: entries})
	if err != nil {
		return fmt.Errorf("SendMessageBatch to %s in %s: %w", queueARN, region, err)
	}
	if len(out.Failed) > 0 {
		// Resend the whole batch: a duplicate notification is what S3 may send anyway.
		return fmt.Errorf("SendMessageBatch to %s in %s: %d of %d failed (%s)", queueARN, region, len(out.Failed), len(bodies), aws.ToString(out.Failed[0].Message))
	}
	return nil
}

// stats returns the messages sent and failed batches per region, and those pending.
func (n *s3Notifier) stats() (sent, failed map[string]int64, pending map[string]int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	sent, failed, pending = map[string]int64{}, map[string]int64{}, map[string]int{}
	for r, v := range n.sent {
		sent[r] = v
	}
	for r, v := range n.failed {
		failed[r] = v
	}
	for r, q := range n.queues {
		pending[r] = len(q)
	}
	return sent, failed, pending
}
