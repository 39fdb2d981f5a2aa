package localaws_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/localtest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSQSSendReceiveVisibilityBatchDelete(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	c := sqs.NewFromConfig(env.AWSConfig(env.Config.HomeRegion))
	q := aws.String(env.Config.QueueURL)

	// Long poll on an empty queue waits (about WaitTimeSeconds) and returns nothing.
	start := time.Now()
	out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q, WaitTimeSeconds: 1})
	require.NoError(t, err)
	require.Empty(t, out.Messages)
	require.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond, "long poll returned early")

	// A long poll in progress is answered as soon as a message arrives.
	got := make(chan []sqstypes.Message, 1)
	go func() {
		o, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q, WaitTimeSeconds: 10})
		if err != nil {
			got <- nil
			return
		}
		got <- o.Messages
	}()
	time.Sleep(200 * time.Millisecond) // let the poll start; the assertion below does not depend on it
	start = time.Now()
	_, err = c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q, MessageBody: aws.String("first")})
	require.NoError(t, err)
	msgs := <-got
	require.Len(t, msgs, 1)
	require.Equal(t, "first", aws.ToString(msgs[0].Body))
	require.Less(t, time.Since(start), 5*time.Second)

	// The received message is invisible until its visibility is changed back to 0.
	out, err = c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q})
	require.NoError(t, err)
	require.Empty(t, out.Messages, "message visible again before its visibility timeout")
	_, err = c.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: q, ReceiptHandle: msgs[0].ReceiptHandle, VisibilityTimeout: 0,
	})
	require.NoError(t, err)
	out, err = c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: q, WaitTimeSeconds: 2,
		MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameApproximateReceiveCount},
	})
	require.NoError(t, err)
	require.Len(t, out.Messages, 1)
	require.Equal(t, "2", out.Messages[0].Attributes[string(sqstypes.MessageSystemAttributeNameApproximateReceiveCount)])

	// Batch send, receive all, batch delete: the queue ends empty.
	var entries []sqstypes.SendMessageBatchRequestEntry
	for i := range 5 {
		entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(fmt.Sprintf("m%d", i))})
	}
	sb, err := c.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: q, Entries: entries})
	require.NoError(t, err)
	require.Len(t, sb.Successful, 5)
	handles := []sqstypes.DeleteMessageBatchRequestEntry{{Id: aws.String("first"), ReceiptHandle: out.Messages[0].ReceiptHandle}}
	for len(handles) < 6 {
		o, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q, MaxNumberOfMessages: 10, WaitTimeSeconds: 2})
		require.NoError(t, err)
		require.NotEmpty(t, o.Messages, "batch messages missing")
		for _, m := range o.Messages {
			handles = append(handles, sqstypes.DeleteMessageBatchRequestEntry{Id: m.MessageId, ReceiptHandle: m.ReceiptHandle})
		}
	}
	db, err := c.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: q, Entries: handles})
	require.NoError(t, err)
	require.Len(t, db.Successful, 6)
	require.Empty(t, db.Failed)
	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q, AttributeNames: []sqstypes.QueueAttributeName{
		sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
	}})
	require.NoError(t, err)
	require.Equal(t, "0", attrs.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
	require.Equal(t, "0", attrs.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
}

func TestSQSRedrivesToDLQAfterMaxReceiveCount(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	c := sqs.NewFromConfig(env.AWSConfig(env.Config.HomeRegion))
	q := aws.String(env.Config.QueueURL)

	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameRedrivePolicy}})
	require.NoError(t, err)
	var rp struct {
		MaxReceiveCount json.Number `json:"maxReceiveCount"`
	}
	require.NoError(t, json.Unmarshal([]byte(attrs.Attributes[string(sqstypes.QueueAttributeNameRedrivePolicy)]), &rp))
	require.Equal(t, strconv.Itoa(localaws.MaxReceiveCount), rp.MaxReceiveCount.String())

	_, err = c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q, MessageBody: aws.String("poison")})
	require.NoError(t, err)
	// Receive (and give back) MaxReceiveCount times, as a worker that keeps failing would.
	for i := 1; i <= localaws.MaxReceiveCount; i++ {
		o, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q, WaitTimeSeconds: 2})
		require.NoError(t, err)
		require.Len(t, o.Messages, 1, "receive %d", i)
		_, err = c.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: q, ReceiptHandle: o.Messages[0].ReceiptHandle})
		require.NoError(t, err)
	}
	o, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q, WaitTimeSeconds: 1})
	require.NoError(t, err)
	require.Empty(t, o.Messages, "message still on the queue after %d receives", localaws.MaxReceiveCount)
	d, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(env.Config.DLQURL), WaitTimeSeconds: 2})
	require.NoError(t, err)
	require.Len(t, d.Messages, 1)
	require.Equal(t, "poison", aws.ToString(d.Messages[0].Body))
}

func TestDynamoDBConditionalWrites(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	c := localaws.NewDynamoDB(env.AWSConfig("eu-west-1"))
	table := aws.String(env.Config.Table)
	item := func(version int, region string) map[string]ddbtypes.AttributeValue {
		return map[string]ddbtypes.AttributeValue{
			"id":      &ddbtypes.AttributeValueMemberS{Value: "env-1"},
			"version": &ddbtypes.AttributeValueMemberN{Value: strconv.Itoa(version)},
			"region":  &ddbtypes.AttributeValueMemberS{Value: region},
		}
	}

	// Create only if absent.
	_, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: table, Item: item(1, "us-east-1"), ConditionExpression: aws.String("attribute_not_exists(id)")})
	require.NoError(t, err)
	_, err = c.PutItem(ctx, &dynamodb.PutItemInput{TableName: table, Item: item(1, "eu-west-1"), ConditionExpression: aws.String("attribute_not_exists(id)")})
	var ccf *ddbtypes.ConditionalCheckFailedException
	require.ErrorAs(t, err, &ccf)

	// Optimistic versioning: a write conditional on a stale version fails and returns the item.
	cond := func(expect int) *dynamodb.PutItemInput {
		return &dynamodb.PutItemInput{
			TableName: table, Item: item(expect+1, "eu-west-1"),
			ConditionExpression:                 aws.String("version = :v"),
			ExpressionAttributeValues:           map[string]ddbtypes.AttributeValue{":v": &ddbtypes.AttributeValueMemberN{Value: strconv.Itoa(expect)}},
			ReturnValuesOnConditionCheckFailure: ddbtypes.ReturnValuesOnConditionCheckFailureAllOld,
		}
	}
	_, err = c.PutItem(ctx, cond(1))
	require.NoError(t, err)
	_, err = c.PutItem(ctx, cond(1))
	require.ErrorAs(t, err, &ccf)
	require.Equal(t, &ddbtypes.AttributeValueMemberN{Value: "2"}, ccf.Item["version"])

	// A global table: the write made through eu-west-1 reaches ap-southeast-2's replica after
	// the replication lag.
	ap := localaws.NewDynamoDB(env.AWSConfig("ap-southeast-2"))
	require.Eventually(t, func() bool {
		g, err := ap.GetItem(ctx, &dynamodb.GetItemInput{TableName: table, ConsistentRead: aws.Bool(true),
			Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "env-1"}}})
		require.NoError(t, err)
		v, _ := g.Item["version"].(*ddbtypes.AttributeValueMemberN)
		return v != nil && v.Value == "2"
	}, 10*time.Second, 50*time.Millisecond, "version 2 never reached ap-southeast-2")
}

func TestDynamoDBTransactionCancellationReasons(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	c := localaws.NewDynamoDB(env.AWSConfig(env.Config.HomeRegion))
	put := func(id string) ddbtypes.TransactWriteItem {
		return ddbtypes.TransactWriteItem{Put: &ddbtypes.Put{
			TableName: aws.String(env.Config.Table), ConditionExpression: aws.String("attribute_not_exists(id)"),
			Item: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: id}},
		}}
	}
	_, err := c.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{put("a")}})
	require.NoError(t, err)
	_, err = c.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{put("b"), put("a")}})
	var tce *ddbtypes.TransactionCanceledException
	require.True(t, errors.As(err, &tce), "want TransactionCanceledException, got %v", err)
	require.Len(t, tce.CancellationReasons, 2)
	require.Equal(t, "ConditionalCheckFailed", aws.ToString(tce.CancellationReasons[1].Code))
}
