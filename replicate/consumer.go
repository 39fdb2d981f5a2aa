package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/sethvargo/go-retry"
	"go.uber.org/zap"
)

// SQSAPI is the part of the SQS client the consumer uses.
type SQSAPI interface {
	ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	ChangeMessageVisibility(context.Context, *sqs.ChangeMessageVisibilityInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
	SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
	GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

var _ SQSAPI = (*sqs.Client)(nil)

// AttrFirstSent is the message attribute that carries, through re-sends, when the event was
// first sent (Unix milliseconds, a Number).
const AttrFirstSent = "envdr-first-sent"

// ReasonExpired is the DLQ reason of an event not replicated within worker.max_age.
const ReasonExpired = "expired"

// AttrCutShort is the message attribute that counts, through re-sends, how often the event came
// back at the queue's redrive limit because its attempt there was cut short (a crash, kill -9,
// or a stop past the shutdown grace) before any verdict (a Number).
const AttrCutShort = "envdr-cut-short"

// ReasonCutShort is the DLQ reason of an event whose attempts at the redrive limit were cut
// short cutShortLimit times: SQS would otherwise redrive it with no reason at all.
const ReasonCutShort = "cut_short"

// cutShortLimit is how many cut-short attempts at the redrive limit an event gets before it is
// dead-lettered with ReasonCutShort (one that crashes the daemon every time must end somewhere).
const cutShortLimit = 3

// Message is one received SQS message.
type Message struct {
	ID            string
	Body          string
	ReceiptHandle string
	ReceiveCount  int
	SentAt        time.Time // when this copy was sent
	FirstSentAt   time.Time // when the event was first sent (AttrFirstSent), zero if never re-sent
	CutShort      int       // AttrCutShort: attempts at the redrive limit cut short so far
}

// Origin is when the event was first sent: FirstSentAt, else SentAt (zero if unknown).
func (m Message) Origin() time.Time {
	if !m.FirstSentAt.IsZero() {
		return m.FirstSentAt
	}
	return m.SentAt
}

// Verdict says what to do with a message after handling it.
type Verdict int

const (
	// Ack: the replication policy is met; delete the message.
	Ack Verdict = iota
	// Retry: progress is recorded but the policy is not met; leave the message for redelivery.
	Retry
	// Poison: the event can never succeed; send it to the DLQ with Reason, then delete it.
	Poison
)

func (v Verdict) String() string {
	switch v {
	case Ack:
		return "acked"
	case Retry:
		return "retry"
	case Poison:
		return "poison"
	}
	return "unknown"
}

// Result is the outcome of handling one message.
type Result struct {
	Verdict    Verdict
	Reason     string // short machine reason: for poison the DLQ reason, for retry what is missing
	Err        error
	EnvelopeID string
	Regions    map[string]string // region -> state (wrapped, verified, failed: ..., deferred)
	// Ignored, with Verdict Ack, says why the message was acknowledged with nothing to
	// replicate (an S3 test event, an S3 event that is not an object creation); Err says more.
	Ignored string
}

// Handler handles one message; it must be safe for concurrent use and idempotent.
type Handler interface {
	Handle(ctx context.Context, m Message) Result
}

// ConsumerConfig tunes the consumer.
type ConsumerConfig struct {
	QueueURL string
	DLQURL   string
	// Concurrency bounds the messages worked on at once; the consumer fetches only when a slot
	// is free.
	Concurrency int
	// Visibility is the visibility timeout asked for on receive and renewed while working.
	Visibility time.Duration
	// WaitTime is the long-poll wait (≤ 20 s).
	WaitTime time.Duration
	// RetryBase is the first redelivery delay for a Retry verdict (doubling with the receive count,
	// capped at Visibility).
	RetryBase time.Duration
	// MaxReceives is the queue's redrive maxReceiveCount (0: read it from the queue). A Retry at
	// the last receive before redrive re-sends the event as a fresh message first, so a long
	// region outage never pushes valid events into the DLQ.
	MaxReceives int
	// MaxAge ends the retries: an event whose policy is still not met this long after it was
	// first sent goes to the DLQ with reason expired. 0: never. It must be below the queue's
	// retention (Start checks), or SQS would drop the event first.
	MaxAge time.Duration
	// CallTimeout bounds each SQS call (send, delete, change visibility, queue attributes); a
	// receive gets WaitTime on top. A queue endpoint that stops answering then fails the call
	// instead of holding a worker or the fetch loop (config worker.sqs_timeout).
	CallTimeout time.Duration
}

func (c *ConsumerConfig) withDefaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 16
	}
	if c.Visibility <= 0 {
		c.Visibility = 60 * time.Second
	}
	if c.WaitTime <= 0 || c.WaitTime > 20*time.Second {
		c.WaitTime = 20 * time.Second
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 2 * time.Second
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 10 * time.Second
	}
}

// bounded returns ctx limited to one SQS call's timeout (plus extra, a receive's long poll).
func (c *Consumer) bounded(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.CallTimeout+extra)
}

// Consumer is the SQS side of the daemon: it long-polls in batches of up to 10, bounded by free
// worker slots, keeps the visibility of messages being worked on, deletes acknowledged ones in
// batches, routes poison to the DLQ, and stops in two steps (stop fetching, then cancel work).
type Consumer struct {
	cfg     ConsumerConfig
	q       SQSAPI
	h       Handler
	log     *zap.Logger
	metrics *Metrics

	slots     chan struct{}
	deletes   chan string
	fetchStop context.CancelFunc
	workStop  context.CancelFunc
	workers   sync.WaitGroup
	stopOnce  sync.Once
	startOnce sync.Once
	stopped   chan struct{}
	fetchDone chan struct{}
	delDone   chan struct{}
}

// NewConsumer builds a consumer; Start runs it.
func NewConsumer(cfg ConsumerConfig, q SQSAPI, h Handler, log *zap.Logger, m *Metrics) *Consumer {
	cfg.withDefaults()
	if m == nil {
		m = NewMetrics()
	}
	return &Consumer{
		cfg: cfg, q: q, h: h, log: log, metrics: m,
		slots:     make(chan struct{}, cfg.Concurrency),
		deletes:   make(chan string, 4*cfg.Concurrency),
		stopped:   make(chan struct{}),
		fetchDone: make(chan struct{}),
		delDone:   make(chan struct{}),
	}
}

// Start begins fetching and working; it returns at once. ctx bounds the whole service.
func (c *Consumer) Start(ctx context.Context) error {
	err := errors.New("consumer already started")
	c.startOnce.Do(func() {
		err = nil
		maxReceives, retention := c.readQueueAttributes(ctx)
		if c.cfg.MaxReceives == 0 {
			c.cfg.MaxReceives = maxReceives
		}
		if c.cfg.MaxAge > 0 && retention > 0 && c.cfg.MaxAge >= retention {
			err = fmt.Errorf("worker.max_age %s is not below the retention of queue %s (%s): events would be dropped by SQS before they expire to the DLQ; lower worker.max_age or raise the queue's MessageRetentionPeriod",
				c.cfg.MaxAge, c.cfg.QueueURL, retention)
			return
		}
		fetchCtx, fetchStop := context.WithCancel(ctx)
		workCtx, workStop := context.WithCancel(context.WithoutCancel(ctx))
		c.fetchStop, c.workStop = fetchStop, workStop
		go c.deleter()
		go func() {
			defer close(c.fetchDone)
			c.fetchLoop(fetchCtx, workCtx)
		}()
		go func() {
			<-c.fetchDone
			c.workers.Wait()
			close(c.deletes)
			<-c.delDone
			workStop()
			close(c.stopped)
		}()
	})
	return err
}

// Stop stops fetching at once, lets in-flight work finish until ctx is done, then cancels it.
// Unfinished messages are not deleted and come back after their visibility timeout. Safe to
// call more than once.
func (c *Consumer) Stop(ctx context.Context) {
	c.stopOnce.Do(func() {
		if c.fetchStop == nil {
			close(c.stopped)
			return
		}
		c.fetchStop()
		select {
		case <-c.stopped:
		case <-ctx.Done():
			c.log.Warn("grace period over: cancelling in-flight work; unfinished messages will be redelivered")
			c.workStop()
		}
	})
	<-c.stopped
}

// Stopped is closed when the consumer has fully stopped.
func (c *Consumer) Stopped() <-chan struct{} { return c.stopped }

// readQueueAttributes reads the queue's redrive maxReceiveCount and its retention (0 when
// unknown).
func (c *Consumer) readQueueAttributes(ctx context.Context) (maxReceives int, retention time.Duration) {
	ctx, cancel := c.bounded(ctx, 0)
	defer cancel()
	out, err := c.q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(c.cfg.QueueURL), AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameRedrivePolicy, sqstypes.QueueAttributeNameMessageRetentionPeriod},
	})
	if err != nil {
		c.log.Warn("cannot read the queue's redrive policy and retention; events are not re-sent before redrive", zap.Error(err))
		return 0, 0
	}
	var rp struct {
		MaxReceiveCount json.Number `json:"maxReceiveCount"`
	}
	if s := out.Attributes[string(sqstypes.QueueAttributeNameRedrivePolicy)]; s != "" && json.Unmarshal([]byte(s), &rp) == nil {
		if n, err := strconv.Atoi(rp.MaxReceiveCount.String()); err == nil {
			maxReceives = n
		}
	}
	if s := out.Attributes[string(sqstypes.QueueAttributeNameMessageRetentionPeriod)]; s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			retention = time.Duration(n) * time.Second
		}
	}
	return maxReceives, retention
}

func (c *Consumer) fetchLoop(fetchCtx, workCtx context.Context) {
	// A failed receive backs off 200 ms doubling to 10 s (jittered); a good one starts over.
	newBackoff := func() retry.Backoff {
		return retry.WithJitterPercent(25, retry.WithCappedDuration(10*time.Second, retry.NewExponential(200*time.Millisecond)))
	}
	backoff := newBackoff()
	for {
		// Take at least one free slot before fetching: fetch only when a worker can start.
		select {
		case c.slots <- struct{}{}:
		case <-fetchCtx.Done():
			return
		}
		free := c.gatherSlots(fetchCtx)
		msgs, err := c.receive(fetchCtx, free)
		for i := len(msgs); i < free; i++ {
			<-c.slots // give back what this fetch did not use
		}
		if err != nil {
			if fetchCtx.Err() != nil {
				return
			}
			wait, _ := backoff.Next()
			c.log.Warn("receive failed; backing off", zap.String("queue", c.cfg.QueueURL), zap.Duration("backoff", wait), zap.Error(err))
			select {
			case <-time.After(wait):
			case <-fetchCtx.Done():
				return
			}
			continue
		}
		backoff = newBackoff()
		for _, m := range msgs {
			c.workers.Add(1)
			goTask(func() {
				defer func() { <-c.slots; c.workers.Done() }()
				c.work(workCtx, m)
			})
		}
		c.metrics.OldestAge.Set(oldestAge(msgs).Seconds())
	}
}

// fetchGather is how long a fetch waits for more free workers when fewer than 10 are free, so a
// busy daemon receives in batches of 10 rather than one message a call as each worker frees up.
const fetchGather = 25 * time.Millisecond

// gatherSlots takes more free slots (one is taken): every one free now, and when that is fewer
// than 10, those that free up within fetchGather. It returns how many it holds.
func (c *Consumer) gatherSlots(ctx context.Context) int {
	free := 1
	var deadline <-chan time.Time
	for free < 10 && free < cap(c.slots) {
		select {
		case c.slots <- struct{}{}:
			free++
			continue
		default:
		}
		// Every other slot is a busy worker's: wait a little for some to finish.
		if deadline == nil {
			t := time.NewTimer(fetchGather)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case c.slots <- struct{}{}:
			free++
			continue
		case <-deadline:
		case <-ctx.Done():
		}
		break
	}
	return free
}

// oldestAge is the age of the oldest event among msgs, from when each was first sent (a re-sent
// event keeps its original send time).
func oldestAge(msgs []Message) time.Duration {
	var oldest time.Duration
	for _, m := range msgs {
		if o := m.Origin(); !o.IsZero() {
			oldest = max(oldest, time.Since(o))
		}
	}
	return oldest
}

func (c *Consumer) receive(ctx context.Context, n int) ([]Message, error) {
	ctx, cancel := c.bounded(ctx, c.cfg.WaitTime)
	defer cancel()
	out, err := c.q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:            aws.String(c.cfg.QueueURL),
		MaxNumberOfMessages: int32(n),
		WaitTimeSeconds:     int32(c.cfg.WaitTime / time.Second),
		VisibilityTimeout:   int32(c.cfg.Visibility / time.Second),
		MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{
			sqstypes.MessageSystemAttributeNameApproximateReceiveCount, sqstypes.MessageSystemAttributeNameSentTimestamp},
		MessageAttributeNames: []string{AttrFirstSent, AttrCutShort},
	})
	if err != nil {
		return nil, err
	}
	msgs := make([]Message, 0, len(out.Messages))
	for _, m := range out.Messages {
		msg := Message{ID: aws.ToString(m.MessageId), Body: aws.ToString(m.Body), ReceiptHandle: aws.ToString(m.ReceiptHandle)}
		if s, ok := m.Attributes[string(sqstypes.MessageSystemAttributeNameApproximateReceiveCount)]; ok {
			msg.ReceiveCount, _ = strconv.Atoi(s)
		}
		if s, ok := m.Attributes[string(sqstypes.MessageSystemAttributeNameSentTimestamp)]; ok {
			if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
				msg.SentAt = time.UnixMilli(ms)
			}
		}
		if a, ok := m.MessageAttributes[AttrFirstSent]; ok {
			if ms, err := strconv.ParseInt(aws.ToString(a.StringValue), 10, 64); err == nil && ms > 0 {
				msg.FirstSentAt = time.UnixMilli(ms)
			}
		}
		if a, ok := m.MessageAttributes[AttrCutShort]; ok {
			msg.CutShort, _ = strconv.Atoi(aws.ToString(a.StringValue))
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// work handles one message while keeping it invisible to other consumers.
func (c *Consumer) work(ctx context.Context, m Message) {
	c.metrics.InFlight.Inc()
	defer c.metrics.InFlight.Dec()
	start := time.Now()
	log := c.log.With(zap.String("message_id", m.ID), zap.Int("receive_count", m.ReceiveCount))
	if c.atRedriveLimit(ctx, m, log) {
		return
	}

	hb := c.startHeartbeat(ctx, m, log)
	res := c.h.Handle(ctx, m)
	hb.stop()

	fields := []zap.Field{zap.String("id", res.EnvelopeID), zap.String("outcome", res.Verdict.String()),
		zap.Any("regions", res.Regions), zap.Duration("duration", time.Since(start))}
	if res.Reason != "" {
		fields = append(fields, zap.String("reason", res.Reason))
	}
	if res.Err != nil {
		fields = append(fields, zap.Error(res.Err))
	}
	switch res.Verdict {
	case Ack:
		if res.Ignored != "" {
			c.metrics.Events.WithLabelValues("ignored", res.Ignored).Inc()
			log.Info("message acknowledged and ignored: nothing to replicate", append(fields, zap.String("ignored", res.Ignored))...)
			c.deletes <- m.ReceiptHandle
			return
		}
		c.metrics.Events.WithLabelValues("acked", "").Inc()
		log.Info("event replicated", fields...)
		c.deletes <- m.ReceiptHandle
	case Poison:
		if err := c.toDLQ(context.WithoutCancel(ctx), m, res); err != nil {
			c.metrics.Events.WithLabelValues("retry", "dlq_send_failed").Inc()
			log.Error("poison event, but sending it to the DLQ failed; leaving it for redelivery",
				append(fields, zap.NamedError("dlq_error", err))...)
			return
		}
		c.metrics.Events.WithLabelValues("poison", res.Reason).Inc()
		c.metrics.DLQ.WithLabelValues(res.Reason).Inc()
		log.Warn("poison event sent to the DLQ", fields...)
		c.deletes <- m.ReceiptHandle
	default:
		if ctx.Err() != nil {
			// At the redrive limit, leaving it would let SQS dead-letter it with no reason on
			// the next receive: re-send it as a fresh message first.
			if c.cfg.MaxReceives > 1 && m.ReceiveCount >= c.cfg.MaxReceives-1 {
				if err := c.requeue(context.WithoutCancel(ctx), m, m.CutShort); err == nil {
					c.metrics.Requeued.Inc()
					c.metrics.Events.WithLabelValues("requeued", "shutdown").Inc()
					log.Info("shutting down at the redrive limit: event re-sent as a fresh message", fields...)
					c.deletes <- m.ReceiptHandle
					return
				}
			}
			c.metrics.Events.WithLabelValues("retry", "shutdown").Inc()
			log.Info("shutting down: event left for redelivery", fields...)
			return
		}
		if origin := m.Origin(); c.cfg.MaxAge > 0 && !origin.IsZero() && time.Since(origin) > c.cfg.MaxAge {
			c.expire(ctx, m, res, origin, log, fields)
			return
		}
		if c.cfg.MaxReceives > 0 && m.ReceiveCount >= c.cfg.MaxReceives-1 {
			if err := c.requeue(ctx, m, m.CutShort); err == nil {
				c.metrics.Requeued.Inc()
				c.metrics.Events.WithLabelValues("requeued", res.Reason).Inc()
				log.Warn("policy not met before redrive: event re-sent as a fresh message", fields...)
				c.deletes <- m.ReceiptHandle
				return
			} else {
				log.Error("re-sending the event failed; leaving it for redelivery", zap.Error(err))
			}
		}
		c.metrics.Events.WithLabelValues("retry", res.Reason).Inc()
		log.Warn("policy not met: event left for redelivery", fields...)
		c.delayRedelivery(ctx, m)
	}
}

// expire ends an event that kept failing past max_age: to the DLQ with reason expired, then
// deleted. If the DLQ send fails, the event stays for redelivery (and expires next time).
func (c *Consumer) expire(ctx context.Context, m Message, res Result, origin time.Time, log *zap.Logger, fields []zap.Field) {
	last := res.Reason
	cause := res.Err
	if cause == nil {
		cause = errors.New(last)
	}
	res.Reason = ReasonExpired
	res.Err = fmt.Errorf("record %s: not replicated within worker.max_age %s (first sent %s, %d receives); last: %s: %w",
		res.EnvelopeID, c.cfg.MaxAge, origin.UTC().Format(time.RFC3339), m.ReceiveCount, last, cause)
	fields = append(fields, zap.Time("first_sent", origin), zap.Duration("max_age", c.cfg.MaxAge))
	if err := c.toDLQ(context.WithoutCancel(ctx), m, res); err != nil {
		c.metrics.Events.WithLabelValues("retry", "dlq_send_failed").Inc()
		log.Error("event expired, but sending it to the DLQ failed; leaving it for redelivery",
			append(fields, zap.NamedError("dlq_error", err))...)
		return
	}
	c.metrics.Events.WithLabelValues("expired", last).Inc()
	c.metrics.DLQ.WithLabelValues(ReasonExpired).Inc()
	log.Error("event expired: not replicated within max_age; sent to the DLQ", fields...)
	c.deletes <- m.ReceiptHandle
}

// heartbeat keeps a message invisible while it is worked on: every third of the visibility
// timeout it extends the timeout again. It is a timer, not a goroutine, until it fires: most
// events finish long before the first extension, and a goroutine, a ticker and a context per event
// were a measurable part of the daemon's CPU per envelope (issue 14).
type heartbeat struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
	cancel  context.CancelFunc // the extension in flight, if any
	running sync.WaitGroup
}

func (c *Consumer) startHeartbeat(ctx context.Context, m Message, log *zap.Logger) *heartbeat {
	h := &heartbeat{}
	every := c.cfg.Visibility / 3
	h.mu.Lock()
	defer h.mu.Unlock()
	h.t = time.AfterFunc(every, func() {
		h.mu.Lock()
		if h.stopped {
			h.mu.Unlock()
			return
		}
		cctx, cancel := c.bounded(ctx, 0)
		h.cancel = cancel
		h.running.Add(1)
		h.mu.Unlock()
		defer h.running.Done()

		_, err := c.q.ChangeMessageVisibility(cctx, &sqs.ChangeMessageVisibilityInput{
			QueueUrl: aws.String(c.cfg.QueueURL), ReceiptHandle: aws.String(m.ReceiptHandle),
			VisibilityTimeout: int32(c.cfg.Visibility / time.Second),
		})
		cancel()
		h.mu.Lock()
		stopped := h.stopped
		h.cancel = nil
		if !stopped {
			h.t.Reset(every)
		}
		h.mu.Unlock()
		if err != nil && !stopped && ctx.Err() == nil {
			log.Warn("extending visibility failed", zap.Error(err))
		}
	})
	return h
}

// stop ends the heartbeat: no extension starts after it, and one in flight is cancelled and
// waited for.
func (h *heartbeat) stop() {
	h.mu.Lock()
	h.stopped = true
	h.t.Stop()
	if h.cancel != nil {
		h.cancel()
	}
	h.mu.Unlock()
	h.running.Wait()
}

// delayRedelivery sets the message to come back after a backoff that grows with its receive
// count, instead of a full visibility timeout, so a short outage heals quickly.
func (c *Consumer) delayRedelivery(ctx context.Context, m Message) {
	d := c.cfg.RetryBase << min(max(m.ReceiveCount-1, 0), 10)
	d = min(d, c.cfg.Visibility)
	d += time.Duration(rand.Int64N(int64(d/4) + 1))
	secs := int32(d / time.Second)
	if secs < 1 {
		secs = 1
	}
	ctx, cancel := c.bounded(ctx, 0)
	defer cancel()
	_, _ = c.q.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: aws.String(c.cfg.QueueURL), ReceiptHandle: aws.String(m.ReceiptHandle), VisibilityTimeout: secs,
	})
}

// atRedriveLimit handles a message received for the last time SQS allows before redrive: a
// Retry at the receive before it is always re-sent (work), so getting here means that attempt
// was cut short (a crash, kill -9, a stop past the grace). Were this attempt cut short too, SQS
// would dead-letter the event with no reason. So the event is re-sent as a fresh message
// (counting the cut-short attempts) and this copy deleted; after cutShortLimit such attempts it
// goes to the DLQ with ReasonCutShort instead. It reports whether it took the message.
func (c *Consumer) atRedriveLimit(ctx context.Context, m Message, log *zap.Logger) bool {
	if c.cfg.MaxReceives < 2 || m.ReceiveCount < c.cfg.MaxReceives {
		return false
	}
	n := m.CutShort + 1
	if n >= cutShortLimit {
		res := Result{Reason: ReasonCutShort, EnvelopeID: eventID(m.Body), Err: fmt.Errorf(
			"the event's attempts at the queue's redrive limit (receive %d of %d) were cut short %d times (a daemon crash, kill -9, or a stop past its grace) before any verdict; not worked again",
			m.ReceiveCount, c.cfg.MaxReceives, n)}
		if err := c.toDLQ(context.WithoutCancel(ctx), m, res); err != nil {
			log.Error("event cut short at the redrive limit, but sending it to the DLQ failed; leaving it for redelivery", zap.Error(err))
			return false
		}
		c.metrics.Events.WithLabelValues("poison", ReasonCutShort).Inc()
		c.metrics.DLQ.WithLabelValues(ReasonCutShort).Inc()
		log.Error("event cut short at the redrive limit again; sent to the DLQ", zap.String("id", res.EnvelopeID), zap.Int("cut_short", n), zap.Error(res.Err))
		c.deleteBatch([]string{m.ReceiptHandle})
		return true
	}
	if err := c.requeue(context.WithoutCancel(ctx), m, n); err != nil {
		log.Error("re-sending an event at the redrive limit failed; working it as it is", zap.Error(err))
		return false
	}
	c.metrics.Requeued.Inc()
	c.metrics.Events.WithLabelValues("requeued", ReasonCutShort).Inc()
	log.Warn("an attempt at the redrive limit was cut short: event re-sent as a fresh message", zap.Int("cut_short", n))
	// This copy is deleted at once, not with the next batch of deletes (up to 50 ms later): a
	// daemon killed between the re-send and the delete leaves this copy at the redrive limit,
	// and its next receive sends it to the DLQ with no reason while its fresh copy is worked
	// (test/faults TestCrash caught one). SQS has no send-and-delete in one call, so the window
	// is one DeleteMessageBatch round trip; the event is never lost either way (re-sent first).
	c.deleteBatch([]string{m.ReceiptHandle})
	return true
}

// eventID is the envelope ID of an event body, for the DLQ's attributes ("" if it has none).
func eventID(body string) string {
	var ev struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal([]byte(body), &ev)
	return ev.ID
}

// requeue re-sends m's event as a fresh message (a fresh receive count), carrying when the event
// was first sent and its count of cut-short attempts.
func (c *Consumer) requeue(ctx context.Context, m Message, cutShort int) error {
	delay := int32(min(c.cfg.Visibility, 15*time.Minute) / time.Second)
	attrs := map[string]sqstypes.MessageAttributeValue{
		"envdr-requeued-from": {DataType: aws.String("String"), StringValue: aws.String(m.ID)},
	}
	if cutShort > 0 {
		attrs[AttrCutShort] = sqstypes.MessageAttributeValue{DataType: aws.String("Number"), StringValue: aws.String(strconv.Itoa(cutShort))}
	}
	if o := m.Origin(); !o.IsZero() {
		attrs[AttrFirstSent] = firstSentAttr(o)
	}
	ctx, cancel := c.bounded(ctx, 0)
	defer cancel()
	_, err := c.q.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl: aws.String(c.cfg.QueueURL), MessageBody: aws.String(m.Body), DelaySeconds: delay,
		MessageAttributes: attrs,
	})
	return err
}

func firstSentAttr(t time.Time) sqstypes.MessageAttributeValue {
	return sqstypes.MessageAttributeValue{DataType: aws.String("Number"), StringValue: aws.String(strconv.FormatInt(t.UnixMilli(), 10))}
}

// toDLQ sends a poison message to the DLQ with its reason as message attributes.
func (c *Consumer) toDLQ(ctx context.Context, m Message, res Result) error {
	if c.cfg.DLQURL == "" {
		return errors.New("no dlq_url configured")
	}
	errText := ""
	if res.Err != nil {
		errText = res.Err.Error()
		if len(errText) > 1024 {
			errText = errText[:1024]
		}
	}
	attrs := map[string]sqstypes.MessageAttributeValue{
		"reason":            {DataType: aws.String("String"), StringValue: aws.String(res.Reason)},
		"source_message_id": {DataType: aws.String("String"), StringValue: aws.String(m.ID)},
	}
	if errText != "" {
		attrs["error"] = sqstypes.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(errText)}
	}
	if o := m.Origin(); !o.IsZero() {
		attrs[AttrFirstSent] = firstSentAttr(o)
	}
	if res.EnvelopeID != "" {
		attrs["envelope_id"] = sqstypes.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(res.EnvelopeID)}
	}
	body := m.Body
	if body == "" {
		body = "(empty)" // SQS refuses empty bodies; the reason attribute says what was wrong
	}
	ctx, cancel := c.bounded(ctx, 0)
	defer cancel()
	_, err := c.q.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(c.cfg.DLQURL), MessageBody: aws.String(body), MessageAttributes: attrs})
	if err != nil {
		return fmt.Errorf("send to DLQ %s: %w", c.cfg.DLQURL, err)
	}
	return nil
}

// deleteEvery is the longest an acknowledged message waits to be deleted with others (a crash in
// between only redelivers it, and a redelivered event is a no-op).
const deleteEvery = 250 * time.Millisecond

// deleter deletes acknowledged messages in batches of up to 10, flushing at least every
// deleteEvery.
func (c *Consumer) deleter() {
	defer close(c.delDone)
	batch := make([]string, 0, 10)
	tick := time.NewTicker(deleteEvery)
	defer tick.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		c.deleteBatch(batch)
		batch = batch[:0]
	}
	for {
		select {
		case h, ok := <-c.deletes:
			if !ok {
				flush()
				return
			}
			batch = append(batch, h)
			if len(batch) == 10 {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

func (c *Consumer) deleteBatch(handles []string) {
	entries := make([]sqstypes.DeleteMessageBatchRequestEntry, len(handles))
	for i, h := range handles {
		entries[i] = sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(h)}
	}
	// Deleting finished work must not be cut short by shutdown.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const attempts = 5
	tries := 0
	// 5 tries, 100 ms doubling between them.
	b := retry.WithMaxRetries(attempts-1, retry.NewExponential(100*time.Millisecond))
	err := retry.Do(ctx, b, func(ctx context.Context) error {
		tries++
		actx, acancel := c.bounded(ctx, 0)
		out, err := c.q.DeleteMessageBatch(actx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(c.cfg.QueueURL), Entries: entries})
		acancel()
		if err == nil && len(out.Failed) == 0 {
			return nil
		}
		if err == nil {
			// A new slice: the retry list must not overwrite entries still being read.
			failed := make([]sqstypes.DeleteMessageBatchRequestEntry, 0, len(out.Failed))
			for _, f := range out.Failed {
				i, perr := strconv.Atoi(aws.ToString(f.Id))
				if perr != nil || i < 0 || i >= len(entries) {
					continue // not an ID we sent
				}
				failed = append(failed, sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(len(failed))), ReceiptHandle: entries[i].ReceiptHandle})
			}
			err = fmt.Errorf("%d entries failed, first: %s", len(out.Failed), aws.ToString(out.Failed[0].Message))
			if len(failed) == 0 {
				return err // nothing we sent to retry
			}
			entries = failed
		}
		if tries < attempts {
			c.log.Warn("batch delete failed; retrying (a message not deleted is redelivered and handled idempotently)", zap.Error(err))
		}
		return retry.RetryableError(err)
	})
	if err == nil {
		return
	}
	c.log.Error("batch delete failed; giving up: these messages come back after their visibility timeout and are handled again (idempotently)",
		zap.Int("undeleted", len(entries)), zap.Int("attempts", tries), zap.Error(err))
}
