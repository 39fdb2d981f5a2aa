package localaws_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// Global tables as DynamoDB global tables version 2019.11.21 run them:
// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/V2globaltables_HowItWorks.html
// (asynchronous replication, last writer wins per item, conditions checked in the local replica).

func putV(ctx context.Context, t *testing.T, c *dynamodb.Client, table, id, v string) {
	t.Helper()
	_, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: map[string]ddbtypes.AttributeValue{
		"id": &ddbtypes.AttributeValueMemberS{Value: id}, "v": &ddbtypes.AttributeValueMemberS{Value: v}}})
	require.NoError(t, err)
}

// getV reads attribute v of item id in one replica ("" when the item is absent).
func getV(ctx context.Context, t *testing.T, c *dynamodb.Client, table, id string) string {
	t.Helper()
	g, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: key(id), ConsistentRead: aws.Bool(true)})
	require.NoError(t, err)
	if g.Item == nil {
		return ""
	}
	s, _ := g.Item["v"].(*ddbtypes.AttributeValueMemberS)
	require.NotNil(t, s, "item %s without v", id)
	return s.Value
}

func ddbClients(env *localtest.Env) map[string]*dynamodb.Client {
	out := map[string]*dynamodb.Client{}
	for _, r := range env.Regions {
		out[r] = regionClients(env, r).ddb
	}
	return out
}

// newGlobalTableTest starts a stand-in for t with replication lag: its Env, a context for its
// calls, each region's DynamoDB and the table.
func newGlobalTableTest(t *testing.T, lag time.Duration) (*localtest.Env, context.Context, map[string]*dynamodb.Client, string) {
	t.Helper()
	env := localtest.New(t)
	env.SetLag(lag)
	return env, ctxT(t), ddbClients(env), env.Config.Table
}

func TestGlobalTableReplicatesAfterLag(t *testing.T) {
	t.Parallel()
	env, ctx, db, table := newGlobalTableTest(t, time.Second)

	start := time.Now()
	putV(ctx, t, db["us-east-1"], table, "a", "1")
	require.Equal(t, "1", getV(ctx, t, db["us-east-1"], table, "a"), "the local replica has the write at once")
	require.Equal(t, "", getV(ctx, t, db["eu-west-1"], table, "a"), "eu-west-1 has the write before the lag passed")
	require.Less(t, time.Since(start), time.Second, "the check above came too late to mean anything")
	for _, r := range []string{"eu-west-1", "ap-southeast-2"} {
		require.Eventually(t, func() bool { return getV(ctx, t, db[r], table, "a") == "1" }, 5*time.Second, 20*time.Millisecond, r)
	}
	require.GreaterOrEqual(t, time.Since(start), time.Second)

	// Deletes replicate too.
	env.SetLag(100 * time.Millisecond)
	_, err := db["eu-west-1"].DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table), Key: key("a")})
	require.NoError(t, err)
	for _, r := range []string{"us-east-1", "ap-southeast-2"} {
		require.Eventually(t, func() bool { return getV(ctx, t, db[r], table, "a") == "" }, 5*time.Second, 20*time.Millisecond, r)
	}

	// Counters: per direction, with the measured latency at least the lag.
	var usEU localaws.PairStats
	for _, p := range env.Stack.GlobalTables().Stats() {
		if p.From == "us-east-1" && p.To == "eu-west-1" {
			usEU = p
		}
	}
	require.EqualValues(t, 1, usEU.Replicated)
	require.GreaterOrEqual(t, usEU.MaxLatencyMs, 1000.0)
}

func TestGlobalTableConflictsConvergeLastWriterWins(t *testing.T) {
	t.Parallel()
	env, ctx, db, table := newGlobalTableTest(t, 500*time.Millisecond)

	// Conditions are checked against the local replica only: both creates succeed.
	create := func(r string) error {
		_, err := db[r].PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table),
			ConditionExpression: aws.String("attribute_not_exists(id)"),
			Item:                map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "c"}, "v": &ddbtypes.AttributeValueMemberS{Value: r}}})
		return err
	}
	require.NoError(t, create("us-east-1"))
	require.NoError(t, create("eu-west-1"), "the condition saw another region's replica")

	// Every replica converges on the last write (eu-west-1's).
	for _, r := range env.Regions {
		require.Eventually(t, func() bool { return getV(ctx, t, db[r], table, "c") == "eu-west-1" }, 5*time.Second, 20*time.Millisecond, r)
	}
	var conflicts int64
	for _, p := range env.Stack.GlobalTables().Stats() {
		conflicts += p.Conflicts
	}
	require.GreaterOrEqual(t, conflicts, int64(1), "the discarded write is counted")

	// Many concurrent writers in all regions: still one value everywhere.
	var wg sync.WaitGroup
	for i, r := range env.Regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 5 {
				putV(ctx, t, db[r], table, "race", string(rune('a'+i))+string(rune('0'+j)))
			}
		}()
	}
	wg.Wait()
	require.Eventually(t, func() bool {
		v := getV(ctx, t, db["us-east-1"], table, "race")
		return v != "" && v == getV(ctx, t, db["eu-west-1"], table, "race") && v == getV(ctx, t, db["ap-southeast-2"], table, "race")
	}, 10*time.Second, 50*time.Millisecond, "replicas did not converge")
}

func TestGlobalTableRegionDownCatchesUpInOrder(t *testing.T) {
	t.Parallel()
	env, ctx, db, table := newGlobalTableTest(t, 50*time.Millisecond)

	env.Down("eu-west-1")
	for i := range 5 {
		putV(ctx, t, db["us-east-1"], table, "k", string(rune('0'+i))) // in order: 0..4
	}
	putV(ctx, t, db["ap-southeast-2"], table, "other", "x")
	time.Sleep(300 * time.Millisecond) // well past the lag: nothing may arrive while down
	for _, p := range env.Stack.GlobalTables().Stats() {
		if p.To == "eu-west-1" && p.From == "us-east-1" {
			require.Equal(t, 5, p.Pending, "changes for the lost region wait")
			require.Zero(t, p.Replicated)
		}
	}
	env.Up("eu-west-1")
	require.Eventually(t, func() bool {
		return getV(ctx, t, db["eu-west-1"], table, "k") == "4" && getV(ctx, t, db["eu-west-1"], table, "other") == "x"
	}, 5*time.Second, 20*time.Millisecond)

	// A lost region sends nothing either: its writes reach the others after it returns.
	env.Down("ap-southeast-2")
	_, err := regionClients(env, "ap-southeast-2").ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: key("k")})
	require.Error(t, err)
	env.Up("ap-southeast-2")
}

func TestGlobalTableTransactAndBatchWritesReplicate(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	db, table := ddbClients(env), aws.String(env.Config.Table)
	item := func(id string) map[string]ddbtypes.AttributeValue {
		return map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: id}, "v": &ddbtypes.AttributeValueMemberS{Value: id}}
	}
	_, err := db["us-east-1"].TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{
		{Put: &ddbtypes.Put{TableName: table, Item: item("t1")}},
		{Put: &ddbtypes.Put{TableName: table, Item: item("t2")}},
	}})
	require.NoError(t, err)
	_, err = db["eu-west-1"].BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]ddbtypes.WriteRequest{
		*table: {{PutRequest: &ddbtypes.PutRequest{Item: item("b1")}}, {PutRequest: &ddbtypes.PutRequest{Item: item("b2")}}},
	}})
	require.NoError(t, err)
	_, err = db["ap-southeast-2"].UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: table, Key: key("u1"),
		UpdateExpression:          aws.String("SET v = :v"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":v": &ddbtypes.AttributeValueMemberS{Value: "u1"}}})
	require.NoError(t, err)
	for _, r := range env.Regions {
		for _, id := range []string{"t1", "t2", "b1", "b2", "u1"} {
			require.Eventually(t, func() bool { return getV(ctx, t, db[r], *table, id) == id }, 5*time.Second, 20*time.Millisecond, "%s in %s", id, r)
		}
	}
}

func TestQueuesArePerRegion(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	euQ, _ := env.Queues("eu-west-1")
	usQ, _ := env.Queues("us-east-1")
	require.NotEqual(t, euQ, usQ)
	eu, us := regionClients(env, "eu-west-1").sqs, regionClients(env, "us-east-1").sqs

	_, err := eu.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(euQ), MessageBody: aws.String("for eu")})
	require.NoError(t, err)
	m, err := us.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(usQ), WaitTimeSeconds: 1})
	require.NoError(t, err)
	require.Empty(t, m.Messages, "eu-west-1's message reached us-east-1's queue")

	// Another region's queue URL is not found through this region's endpoint.
	_, err = us.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(euQ)})
	var nq *sqstypes.QueueDoesNotExist
	require.True(t, errors.As(err, &nq), "want QueueDoesNotExist, got %v", err)
	l, err := us.ListQueues(ctx, &sqs.ListQueuesInput{})
	require.NoError(t, err)
	require.NotContains(t, l.QueueUrls, euQ)
	require.Contains(t, l.QueueUrls, usQ)

	// Messages survive the loss of their region (a new client: the old one's pooled
	// connections went with the region).
	env.Down("eu-west-1")
	env.Up("eu-west-1")
	eu = regionClients(env, "eu-west-1").sqs
	m, err = eu.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(euQ), WaitTimeSeconds: 2})
	require.NoError(t, err)
	require.Len(t, m.Messages, 1)
	require.Equal(t, "for eu", aws.ToString(m.Messages[0].Body))
}

// A transaction of DynamoDB's maximum 100 items (conditional puts, an update, a delete) is read
// back in one BatchGetItem and each item replicates, the delete included; a cancelled
// transaction changes nothing anywhere.
func TestGlobalTableLargeTransactionReplicatesEachItem(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	db, table := ddbClients(env), aws.String(env.Config.Table)
	us := db["us-east-1"]
	putV(ctx, t, us, *table, "gone", "x")
	putV(ctx, t, us, *table, "upd", "old")
	env.Settle()
	var items []ddbtypes.TransactWriteItem
	for i := 0; i < 98; i++ {
		id := fmt.Sprintf("p%02d", i)
		items = append(items, ddbtypes.TransactWriteItem{Put: &ddbtypes.Put{TableName: table,
			Item:                map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: id}, "v": &ddbtypes.AttributeValueMemberS{Value: id}},
			ConditionExpression: aws.String("attribute_not_exists(id)")}})
	}
	items = append(items,
		ddbtypes.TransactWriteItem{Update: &ddbtypes.Update{TableName: table, Key: key("upd"), UpdateExpression: aws.String("SET v = :v"),
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":v": &ddbtypes.AttributeValueMemberS{Value: "new"}}}},
		ddbtypes.TransactWriteItem{Delete: &ddbtypes.Delete{TableName: table, Key: key("gone")}})
	_, err := us.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
	require.NoError(t, err)
	env.Settle()
	for _, r := range env.Regions {
		for i := 0; i < 98; i++ {
			id := fmt.Sprintf("p%02d", i)
			require.Equal(t, id, getV(ctx, t, db[r], *table, id), "%s in %s", id, r)
		}
		require.Equal(t, "new", getV(ctx, t, db[r], *table, "upd"), r)
		require.Equal(t, "", getV(ctx, t, db[r], *table, "gone"), r)
	}

	// One condition fails: nothing is written, in the region or elsewhere.
	_, err = us.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{
		{Put: &ddbtypes.Put{TableName: table, Item: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "q"}, "v": &ddbtypes.AttributeValueMemberS{Value: "q"}}}},
		{Put: &ddbtypes.Put{TableName: table, Item: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "p00"}, "v": &ddbtypes.AttributeValueMemberS{Value: "lost"}},
			ConditionExpression: aws.String("attribute_not_exists(id)")}},
	}})
	var tce *ddbtypes.TransactionCanceledException
	require.True(t, errors.As(err, &tce), "want TransactionCanceledException, got %v", err)
	time.Sleep(2 * localaws.DefaultReplicationLag)
	env.Settle()
	for _, r := range env.Regions {
		require.Equal(t, "", getV(ctx, t, db[r], *table, "q"), r)
		require.Equal(t, "p00", getV(ctx, t, db[r], *table, "p00"), r)
	}
}

// pairStats returns one replication direction's counters.
func pairStats(t *testing.T, env *localtest.Env, from, to string) localaws.PairStats {
	t.Helper()
	for _, p := range env.Stack.GlobalTables().Stats() {
		if p.From == from && p.To == to {
			return p
		}
	}
	t.Fatalf("no replication %s -> %s", from, to)
	return localaws.PairStats{}
}

// batchPut writes items id -> v in one BatchWriteItem.
func batchPut(ctx context.Context, t *testing.T, c *dynamodb.Client, table string, ids []string, v string) {
	t.Helper()
	var reqs []ddbtypes.WriteRequest
	for _, id := range ids {
		reqs = append(reqs, ddbtypes.WriteRequest{PutRequest: &ddbtypes.PutRequest{Item: map[string]ddbtypes.AttributeValue{
			"id": &ddbtypes.AttributeValueMemberS{Value: id}, "v": &ddbtypes.AttributeValueMemberS{Value: v}}}})
	}
	out, err := c.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]ddbtypes.WriteRequest{table: reqs}})
	require.NoError(t, err)
	require.Empty(t, out.UnprocessedItems)
}

func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%03d", prefix, i))
	}
	return out
}

// Changes are applied in BatchWriteItem calls of up to 25 distinct items: 102 changes waiting
// for a lost region reach it in 5 calls, and of two writes of one item the later lands last.
func TestGlobalTableReplicatesInBatches(t *testing.T) {
	t.Parallel()
	env, ctx, db, table := newGlobalTableTest(t, 50*time.Millisecond)
	env.SetJitter(0) // the calls counted below are those of changes due together
	us := db["us-east-1"]

	env.Down("eu-west-1")
	batchPut(ctx, t, us, table, ids("p", 0, 25), "1")
	batchPut(ctx, t, us, table, ids("p", 25, 50), "1")
	putV(ctx, t, us, table, "k", "first")
	batchPut(ctx, t, us, table, ids("p", 50, 60), "1")
	putV(ctx, t, us, table, "k", "second")
	batchPut(ctx, t, us, table, ids("p", 60, 85), "1")
	batchPut(ctx, t, us, table, ids("p", 85, 100), "1")
	time.Sleep(200 * time.Millisecond) // every change is due
	env.Up("eu-west-1")
	env.Settle()

	for _, r := range env.Regions {
		require.Equal(t, "second", getV(ctx, t, db[r], table, "k"), r)
		for _, id := range ids("p", 0, 100) {
			require.Equal(t, "1", getV(ctx, t, db[r], table, id), "%s in %s", id, r)
		}
	}
	// The queue for eu-west-1: p000-p049 | k p050-p059 | k p060-p083 | p084-p099.
	eu := pairStats(t, env, "us-east-1", "eu-west-1")
	require.EqualValues(t, 102, eu.Replicated)
	require.EqualValues(t, 5, eu.Writes, "BatchWriteItem calls to eu-west-1's replica")
	// ap-southeast-2 stayed up: its changes left as they came due, still many to a call.
	ap := pairStats(t, env, "us-east-1", "ap-southeast-2")
	require.EqualValues(t, 102, ap.Replicated)
	require.Less(t, ap.Writes, int64(30), "BatchWriteItem calls to ap-southeast-2's replica")
}

// Last writer wins holds for batched changes: an item written in two regions, amid other
// items, ends as the later write everywhere, and the earlier one is a conflict where it
// arrives after the later one was written.
func TestGlobalTableBatchedConflictsLastWriterWins(t *testing.T) {
	t.Parallel()
	env, ctx, db, table := newGlobalTableTest(t, 500*time.Millisecond)

	env.Down("ap-southeast-2")
	start := time.Now()
	batchPut(ctx, t, db["us-east-1"], table, append(ids("us", 0, 10), "c"), "us-east-1")
	batchPut(ctx, t, db["eu-west-1"], table, append(ids("eu", 0, 10), "c"), "eu-west-1")
	require.Less(t, time.Since(start), 500*time.Millisecond, "eu-west-1 wrote c after us-east-1's change arrived")
	time.Sleep(600 * time.Millisecond)
	env.Up("ap-southeast-2")
	env.Settle()
	for _, r := range env.Regions {
		require.Equal(t, "eu-west-1", getV(ctx, t, db[r], table, "c"), r)
		for _, id := range append(ids("us", 0, 10), ids("eu", 0, 10)...) {
			require.NotEmpty(t, getV(ctx, t, db[r], table, id), "%s in %s", id, r)
		}
	}
	require.EqualValues(t, 1, pairStats(t, env, "us-east-1", "eu-west-1").Conflicts)

	// Every region writes the same 25 items at once, five times over: every replica converges.
	raceAndConverge(ctx, t, env, db, table, 5)
}

// raceAndConverge has every region write the same 25 items at once, rounds times over, then
// requires every replica to hold the same value of each once replication settles.
func raceAndConverge(ctx context.Context, t *testing.T, env *localtest.Env, db map[string]*dynamodb.Client, table string, rounds int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, r := range env.Regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range rounds {
				batchPut(ctx, t, db[r], table, ids("race", 0, 25), fmt.Sprintf("%s-%d", r, j))
			}
		}()
	}
	wg.Wait()
	env.Settle()
	for _, id := range ids("race", 0, 25) {
		v := getV(ctx, t, db["us-east-1"], table, id)
		require.NotEmpty(t, v, id)
		for _, r := range env.Regions[1:] {
			require.Equal(t, v, getV(ctx, t, db[r], table, id), "%s in %s", id, r)
		}
	}
}
