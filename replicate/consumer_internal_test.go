package replicate

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// fakeSQS records calls; deleteFail decides, per DeleteMessageBatch call (1-based), which entry
// IDs fail.
type fakeSQS struct {
	mu         sync.Mutex
	deletes    [][]string // receipt handles per DeleteMessageBatch call
	deleteFail func(call int, ids []string) []string
	sent       []*sqs.SendMessageInput
	visibility []int32
}

func (f *fakeSQS) ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	return &sqs.ReceiveMessageOutput{}, nil
}

func (f *fakeSQS) DeleteMessageBatch(_ context.Context, in *sqs.DeleteMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var handles, ids []string
	for _, e := range in.Entries {
		handles = append(handles, aws.ToString(e.ReceiptHandle))
		ids = append(ids, aws.ToString(e.Id))
	}
	f.deletes = append(f.deletes, handles)
	out := &sqs.DeleteMessageBatchOutput{}
	if f.deleteFail != nil {
		for _, id := range f.deleteFail(len(f.deletes), ids) {
			out.Failed = append(out.Failed, sqstypes.BatchResultErrorEntry{Id: aws.String(id), Code: aws.String("InternalError"), Message: aws.String("try again")})
		}
	}
	return out, nil
}

func (f *fakeSQS) ChangeMessageVisibility(_ context.Context, in *sqs.ChangeMessageVisibilityInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	f.mu.Lock()
	f.visibility = append(f.visibility, in.VisibilityTimeout)
	f.mu.Unlock()
	return &sqs.ChangeMessageVisibilityOutput{}, nil
}

func (f *fakeSQS) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	f.mu.Lock()
	f.sent = append(f.sent, in)
	f.mu.Unlock()
	return &sqs.SendMessageOutput{MessageId: aws.String("m-" + strconv.Itoa(len(f.sent)))}, nil
}

func (f *fakeSQS) GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	return &sqs.GetQueueAttributesOutput{}, nil
}

// deleteBatch retries exactly the failed entries. Before issue 13 it built the retry list in
// entries[:0], overwriting entries it still had to read: failures reported out of order retried
// one handle twice and lost the other.
func TestDeleteBatchRetriesTheFailedHandles(t *testing.T) {
	t.Parallel()
	f := &fakeSQS{deleteFail: func(call int, ids []string) []string {
		if call == 1 {
			return []string{"2", "0"}
		}
		return nil
	}}
	c := NewConsumer(ConsumerConfig{QueueURL: "q"}, f, nil, zap.NewNop(), nil)
	c.deleteBatch([]string{"h0", "h1", "h2"})
	require.Len(t, f.deletes, 2)
	require.ElementsMatch(t, []string{"h2", "h0"}, f.deletes[1])
}

// deleteBatch says when it gives up, naming how many messages stay undeleted.
func TestDeleteBatchLogsGivingUp(t *testing.T) {
	t.Parallel()
	f := &fakeSQS{deleteFail: func(_ int, ids []string) []string { return ids[:1] }}
	core, logs := observer.New(zap.WarnLevel)
	c := NewConsumer(ConsumerConfig{QueueURL: "q"}, f, nil, zap.New(core), nil)
	start := time.Now()
	c.deleteBatch([]string{"h0", "h1"})
	require.Less(t, time.Since(start), 10*time.Second)
	gaveUp := logs.FilterMessageSnippet("giving up")
	require.Equal(t, 1, gaveUp.Len(), "one error line when retries run out")
	e := gaveUp.All()[0]
	require.Equal(t, zap.ErrorLevel, e.Level)
	require.EqualValues(t, 1, e.ContextMap()["undeleted"])
}

type verdictHandler struct{ res Result }

func (h verdictHandler) Handle(context.Context, Message) Result { return h.res }

// A re-sent event carries its original send time. Before issue 13 a requeued message was a fresh
// message in every way: its age restarted and nothing could tell how long it had been cycling.
func TestRequeueCarriesFirstSentTime(t *testing.T) {
	t.Parallel()
	f := &fakeSQS{}
	c := NewConsumer(ConsumerConfig{QueueURL: "q", DLQURL: "dlq", MaxReceives: 2, MaxAge: 72 * time.Hour}, f,
		verdictHandler{Result{Verdict: Retry, Reason: "regions_pending"}}, zap.NewNop(), nil)
	sent := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	c.work(context.Background(), Message{ID: "m1", Body: "{}", ReceiptHandle: "h1", ReceiveCount: 1, SentAt: sent})
	require.Len(t, f.sent, 1)
	a := f.sent[0].MessageAttributes[AttrFirstSent]
	require.Equal(t, strconv.FormatInt(sent.UnixMilli(), 10), aws.ToString(a.StringValue))

	// Re-sent again: still the first send time, not the previous copy's.
	orig := sent.Add(-24 * time.Hour)
	c.work(context.Background(), Message{ID: "m2", Body: "{}", ReceiptHandle: "h2", ReceiveCount: 1, SentAt: sent, FirstSentAt: orig})
	require.Len(t, f.sent, 2)
	require.Equal(t, strconv.FormatInt(orig.UnixMilli(), 10), aws.ToString(f.sent[1].MessageAttributes[AttrFirstSent].StringValue))
}

// An event still not replicated max_age after it was first sent goes to the DLQ with reason
// expired (and a metric) instead of cycling until SQS's retention drops it silently.
func TestExpiredEventGoesToDLQ(t *testing.T) {
	t.Parallel()
	f := &fakeSQS{}
	m := NewMetrics()
	c := NewConsumer(ConsumerConfig{QueueURL: "q", DLQURL: "dlq", MaxReceives: 10, MaxAge: 72 * time.Hour}, f,
		verdictHandler{Result{Verdict: Retry, Reason: "regions_pending", EnvelopeID: "rec-1", Err: errors.New("waiting for eu-west-1")}}, zap.NewNop(), m)
	old := time.Now().Add(-73 * time.Hour)
	c.work(context.Background(), Message{ID: "m1", Body: "{}", ReceiptHandle: "h1", ReceiveCount: 3, SentAt: time.Now(), FirstSentAt: old})
	require.Len(t, f.sent, 1)
	require.Equal(t, "dlq", aws.ToString(f.sent[0].QueueUrl))
	require.Equal(t, ReasonExpired, aws.ToString(f.sent[0].MessageAttributes["reason"].StringValue))
	require.Contains(t, aws.ToString(f.sent[0].MessageAttributes["error"].StringValue), "max_age")
	require.Equal(t, 1.0, testutil.ToFloat64(m.DLQ.WithLabelValues(ReasonExpired)))
	require.Equal(t, "h1", <-c.deletes, "deleted from the queue")

	// A young one is left for redelivery.
	c.work(context.Background(), Message{ID: "m2", Body: "{}", ReceiptHandle: "h2", ReceiveCount: 3, SentAt: time.Now()})
	require.Len(t, f.sent, 1)
}

// receive reads the original send time, and the oldest-age gauge uses it.
func TestOldestAgeUsesFirstSentTime(t *testing.T) {
	t.Parallel()
	orig := time.Now().Add(-5 * time.Hour)
	f := &receivingSQS{msgs: []sqstypes.Message{{MessageId: aws.String("m1"), Body: aws.String("{}"), ReceiptHandle: aws.String("h1"),
		Attributes: map[string]string{"SentTimestamp": strconv.FormatInt(time.Now().UnixMilli(), 10), "ApproximateReceiveCount": "1"},
		MessageAttributes: map[string]sqstypes.MessageAttributeValue{AttrFirstSent: {DataType: aws.String("Number"),
			StringValue: aws.String(strconv.FormatInt(orig.UnixMilli(), 10))}}}}}
	c := NewConsumer(ConsumerConfig{QueueURL: "q"}, f, nil, zap.NewNop(), nil)
	msgs, err := c.receive(context.Background(), 1)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.WithinDuration(t, orig, msgs[0].FirstSentAt, time.Millisecond)
	require.Contains(t, f.in.MessageAttributeNames, AttrFirstSent)
	require.InDelta(t, 5*3600, oldestAge(msgs).Seconds(), 5)
}

type receivingSQS struct {
	fakeSQS
	msgs []sqstypes.Message
	in   *sqs.ReceiveMessageInput
}

func (f *receivingSQS) ReceiveMessage(_ context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	f.in = in
	return &sqs.ReceiveMessageOutput{Messages: f.msgs}, nil
}

// Start refuses a max_age that is not below the queue's retention: the event would be dropped
// by SQS before it could expire to the DLQ.
func TestMaxAgeMustBeBelowRetention(t *testing.T) {
	t.Parallel()
	f := &attrSQS{attrs: map[string]string{"MessageRetentionPeriod": strconv.Itoa(2 * 24 * 3600)}}
	c := NewConsumer(ConsumerConfig{QueueURL: "q", MaxAge: 72 * time.Hour}, f, verdictHandler{}, zap.NewNop(), nil)
	err := c.Start(context.Background())
	require.ErrorContains(t, err, "max_age")
	require.ErrorContains(t, err, "retention")
}

type attrSQS struct {
	fakeSQS
	attrs map[string]string
}

func (f *attrSQS) GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	return &sqs.GetQueueAttributesOutput{Attributes: f.attrs}, nil
}

// A message worked on for longer than a third of the visibility timeout has its visibility
// extended every third, and not once more after the work ends.
func TestHeartbeatExtendsUntilStopped(t *testing.T) {
	t.Parallel()
	f := &fakeSQS{}
	c := NewConsumer(ConsumerConfig{QueueURL: "q", Visibility: 60 * time.Millisecond}, f, nil, zap.NewNop(), nil)
	hb := c.startHeartbeat(context.Background(), Message{ID: "m1", ReceiptHandle: "h1"}, zap.NewNop())
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.visibility) >= 3
	}, 5*time.Second, 5*time.Millisecond, "three extensions every 20 ms")
	hb.stop()
	f.mu.Lock()
	n := len(f.visibility)
	f.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.visibility, n, "an extension after stop")
}

// A heartbeat stopped while an extension hangs cancels it and returns; a message that finishes
// first never extends at all.
func TestHeartbeatStopCancelsAHangingExtension(t *testing.T) {
	t.Parallel()
	f := &hangingSQS{started: make(chan struct{}, 1)}
	c := NewConsumer(ConsumerConfig{QueueURL: "q", Visibility: 30 * time.Millisecond, CallTimeout: time.Hour}, f, nil, zap.NewNop(), nil)
	hb := c.startHeartbeat(context.Background(), Message{ID: "m1", ReceiptHandle: "h1"}, zap.NewNop())
	<-f.started
	done := make(chan struct{})
	go func() { hb.stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("stop waited on a hanging extension instead of cancelling it")
	}
	require.ErrorIs(t, f.err, context.Canceled)

	quick := &fakeSQS{}
	c = NewConsumer(ConsumerConfig{QueueURL: "q", Visibility: time.Minute}, quick, nil, zap.NewNop(), nil)
	c.startHeartbeat(context.Background(), Message{ID: "m2", ReceiptHandle: "h2"}, zap.NewNop()).stop()
	require.Empty(t, quick.visibility)
}

type hangingSQS struct {
	fakeSQS
	started chan struct{}
	err     error
}

func (f *hangingSQS) ChangeMessageVisibility(ctx context.Context, _ *sqs.ChangeMessageVisibilityInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	f.started <- struct{}{}
	<-ctx.Done()
	f.err = ctx.Err()
	return nil, f.err
}

// countingHandler counts the events it is given.
type countingHandler struct {
	mu sync.Mutex
	n  int
}

func (h *countingHandler) Handle(context.Context, Message) Result {
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
	return Result{Verdict: Ack}
}

// A message received at the redrive limit (its attempt at the receive before was cut short: a
// crash, kill -9, a stop past the grace) is re-sent as a fresh message counting the cut-short
// attempts, and not worked: were this attempt cut short too, SQS would dead-letter it with no
// reason (issue 20). The third time it goes to the DLQ with reason cut_short. Before issue 20 it
// was worked as it was, and a second cut-short sent it to the DLQ with no reason.
func TestCutShortAtRedriveLimit(t *testing.T) {
	t.Parallel()
	f := &fakeSQS{}
	m := NewMetrics()
	h := &countingHandler{}
	c := NewConsumer(ConsumerConfig{QueueURL: "q", DLQURL: "dlq", MaxReceives: 5, Visibility: 30 * time.Second}, f, h, zap.NewNop(), m)
	body := `{"id":"0123456789abcdef0123456789abcdef"}`
	c.work(context.Background(), Message{ID: "m1", Body: body, ReceiptHandle: "h1", ReceiveCount: 5})
	require.Zero(t, h.n, "not worked at the limit")
	require.Len(t, f.sent, 1)
	require.Equal(t, "q", aws.ToString(f.sent[0].QueueUrl), "re-sent to the queue")
	require.Equal(t, "1", aws.ToString(f.sent[0].MessageAttributes[AttrCutShort].StringValue))
	deleted := func() [][]string { f.mu.Lock(); defer f.mu.Unlock(); return append([][]string(nil), f.deletes...) }
	// The copy at the limit is deleted at once, before work returns (not with a later batch).
	require.Equal(t, [][]string{{"h1"}}, deleted())

	// Below the limit it is worked as usual.
	c.work(context.Background(), Message{ID: "m2", Body: body, ReceiptHandle: "h2", ReceiveCount: 4, CutShort: 1})
	require.Equal(t, 1, h.n)
	require.Equal(t, "h2", <-c.deletes)

	// Cut short at the limit a second time: the copy counts 2.
	c.work(context.Background(), Message{ID: "m3", Body: body, ReceiptHandle: "h3", ReceiveCount: 5, CutShort: 1})
	require.Len(t, f.sent, 2)
	require.Equal(t, "2", aws.ToString(f.sent[1].MessageAttributes[AttrCutShort].StringValue))
	require.Equal(t, [][]string{{"h1"}, {"h3"}}, deleted())

	// The third time: the DLQ, with a reason.
	c.work(context.Background(), Message{ID: "m4", Body: body, ReceiptHandle: "h4", ReceiveCount: 5, CutShort: 2})
	require.Len(t, f.sent, 3)
	require.Equal(t, "dlq", aws.ToString(f.sent[2].QueueUrl))
	require.Equal(t, ReasonCutShort, aws.ToString(f.sent[2].MessageAttributes["reason"].StringValue))
	require.Equal(t, "0123456789abcdef0123456789abcdef", aws.ToString(f.sent[2].MessageAttributes["envelope_id"].StringValue))
	require.Contains(t, aws.ToString(f.sent[2].MessageAttributes["error"].StringValue), "cut short 3 times")
	require.Equal(t, 1.0, testutil.ToFloat64(m.DLQ.WithLabelValues(ReasonCutShort)))
	require.Equal(t, [][]string{{"h1"}, {"h3"}, {"h4"}}, deleted())
	require.Equal(t, 1, h.n)
}

// A daemon stopping while an event at the redrive limit is cut short re-sends it as a fresh
// message instead of leaving it for SQS to dead-letter with no reason.
func TestShutdownAtRedriveLimitRequeues(t *testing.T) {
	t.Parallel()
	f := &fakeSQS{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := NewConsumer(ConsumerConfig{QueueURL: "q", DLQURL: "dlq", MaxReceives: 5, Visibility: 30 * time.Second}, f,
		verdictHandler{Result{Verdict: Retry, Reason: "error", Err: context.Canceled}}, zap.NewNop(), nil)
	c.work(ctx, Message{ID: "m1", Body: "{}", ReceiptHandle: "h1", ReceiveCount: 4})
	require.Len(t, f.sent, 1)
	require.Equal(t, "q", aws.ToString(f.sent[0].QueueUrl))
	require.Equal(t, "h1", <-c.deletes)

	// Below the limit it is left for redelivery, as before.
	c.work(ctx, Message{ID: "m2", Body: "{}", ReceiptHandle: "h2", ReceiveCount: 2})
	require.Len(t, f.sent, 1)
}
