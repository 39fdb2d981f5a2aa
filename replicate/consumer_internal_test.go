package replicate

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
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

