package localaws_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/localtest"
)

// AWS's weakest documented global-table semantics, on DynamoDB Local:
//
//   - "Transactional operations provide ACID ... guarantees ONLY within the Region where the
//     write is made originally ... you may observe partially completed transactions in [the
//     other] Region as changes are replicated."
//     https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/V2globaltables_HowItWorks.html
//   - "Items are replicated individually. Items that are updated within a single transaction
//     might not be replicated together." "The sequence of write operations within a remote
//     Region might not match the sequence of write operations that happened within the source
//     Region." "last writer wins mechanism, based on the timestamp of the write operations."
//     https://docs.aws.amazon.com/prescriptive-guidance/latest/dynamodb-global-tables/overview.html

// seen reads items ids in one region's replica in one consistent BatchGetItem: which exist.
func seen(ctx context.Context, t *testing.T, c *dynamodb.Client, table string, ids ...string) map[string]bool {
	t.Helper()
	var keys []map[string]ddbtypes.AttributeValue
	for _, id := range ids {
		keys = append(keys, key(id))
	}
	out, err := c.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]ddbtypes.KeysAndAttributes{
		table: {Keys: keys, ConsistentRead: aws.Bool(true)}}})
	require.NoError(t, err)
	require.Empty(t, out.UnprocessedKeys)
	got := map[string]bool{}
	for _, it := range out.Responses[table] {
		got[it["id"].(*ddbtypes.AttributeValueMemberS).Value] = true
	}
	return got
}

// Two items written in one transaction in us-east-1 are observed in eu-west-1's replica with
// one present and the other not yet, in either order; in us-east-1 never apart.
func TestGlobalTableTransactionArrivesItemByItem(t *testing.T) {
	t.Parallel()
	env := localtest.NewWith(t, localtest.Options{Jitter: 1500 * time.Millisecond, Seed: 20})
	env.SetLag(200 * time.Millisecond)
	ctx := ctxT(t)
	db, table := ddbClients(env), env.Config.Table
	const pairs = 12
	put := func(id string) ddbtypes.TransactWriteItem {
		return ddbtypes.TransactWriteItem{Put: &ddbtypes.Put{TableName: aws.String(table), Item: map[string]ddbtypes.AttributeValue{
			"id": &ddbtypes.AttributeValueMemberS{Value: id}, "v": &ddbtypes.AttributeValueMemberS{Value: id}}}}
	}
	for i := range pairs {
		a, b := fmt.Sprintf("a%02d", i), fmt.Sprintf("b%02d", i)
		_, err := db["us-east-1"].TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{put(a), put(b)}})
		require.NoError(t, err)
		require.Equal(t, map[string]bool{a: true, b: true}, seen(ctx, t, db["us-east-1"], table, a, b), "atomic in the writing region")
	}

	// Poll eu-west-1 until every pair is there, noting which half arrived first.
	onlyA, onlyB := map[int]bool{}, map[int]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		complete := 0
		for i := range pairs {
			a, b := fmt.Sprintf("a%02d", i), fmt.Sprintf("b%02d", i)
			s := seen(ctx, t, db["eu-west-1"], table, a, b)
			switch {
			case s[a] && s[b]:
				complete++
			case s[a]:
				onlyA[i] = true
			case s[b]:
				onlyB[i] = true
			}
		}
		if complete == pairs {
			break
		}
		require.True(t, time.Now().Before(deadline), "eu-west-1 still lacks items after 10s")
	}
	t.Logf("pairs seen half-applied in eu-west-1: first item only %v, second item only %v", onlyA, onlyB)
	require.NotEmpty(t, onlyA, "never saw a transaction's first item without its second")
	require.NotEmpty(t, onlyB, "never saw a transaction's second item without its first")
	env.Settle()
	for _, r := range env.Regions {
		for i := range pairs {
			a, b := fmt.Sprintf("a%02d", i), fmt.Sprintf("b%02d", i)
			require.Equal(t, map[string]bool{a: true, b: true}, seen(ctx, t, db[r], table, a, b), r)
		}
	}
	st := pairStats(t, env, "us-east-1", "eu-west-1")
	require.Equal(t, "1.5s", st.Jitter)
	require.EqualValues(t, 2*pairs, st.Replicated)
	require.GreaterOrEqual(t, st.MaxLatencyMs, 200.0)
	require.Less(t, st.MaxLatencyMs, 1700.0+1000, "latency beyond lag + jitter (+1s for a busy machine)")
}

// With jitter on, what held without it still holds: the lag of one direction is a floor, a
// lost region catches up with the last write of each item, batches apply, and a write that
// loses by last writer wins is counted as a conflict.
func TestGlobalTableJitterKeepsLagCatchUpAndConflicts(t *testing.T) {
	t.Parallel()
	env := localtest.NewWith(t, localtest.Options{Jitter: 300 * time.Millisecond})
	ctx := ctxT(t)
	db, table := ddbClients(env), env.Config.Table
	g := env.Stack.GlobalTables()

	t.Run("lag per direction is a floor", func(t *testing.T) {
		env.SetLag(50 * time.Millisecond)
		require.NoError(t, g.SetLag("us-east-1", "eu-west-1", time.Second))
		start := time.Now()
		putV(ctx, t, db["us-east-1"], table, "slow", "1")
		require.Eventually(t, func() bool { return getV(ctx, t, db["ap-southeast-2"], table, "slow") == "1" }, 5*time.Second, 10*time.Millisecond)
		require.Less(t, time.Since(start), time.Second, "the other direction waited for eu-west-1's lag")
		require.Equal(t, "", getV(ctx, t, db["eu-west-1"], table, "slow"))
		require.Eventually(t, func() bool { return getV(ctx, t, db["eu-west-1"], table, "slow") == "1" }, 5*time.Second, 10*time.Millisecond)
		require.GreaterOrEqual(t, time.Since(start), time.Second)
		env.SetLag(50 * time.Millisecond)
		env.Settle()
	})

	t.Run("a lost region catches up, each item's writes in order", func(t *testing.T) {
		env.Down("eu-west-1")
		for i := range 20 {
			putV(ctx, t, db["us-east-1"], table, "k", fmt.Sprint(i))
			batchPut(ctx, t, db["us-east-1"], table, ids("cu", 0, 10), fmt.Sprint(i))
		}
		time.Sleep(500 * time.Millisecond) // past lag + jitter: nothing may arrive while down
		require.Equal(t, 220, pairStats(t, env, "us-east-1", "eu-west-1").Pending)
		env.Up("eu-west-1")
		env.Settle()
		require.Equal(t, "19", getV(ctx, t, db["eu-west-1"], table, "k"))
		for _, id := range ids("cu", 0, 10) {
			require.Equal(t, "19", getV(ctx, t, db["eu-west-1"], table, id), id)
		}
		st := pairStats(t, env, "us-east-1", "eu-west-1")
		require.Zero(t, st.Conflicts, "a later write of an item overtook an earlier one")
	})

	t.Run("conflicts are counted and converge", func(t *testing.T) {
		env.SetLag(500 * time.Millisecond)
		before := pairStats(t, env, "us-east-1", "eu-west-1").Conflicts
		start := time.Now()
		putV(ctx, t, db["us-east-1"], table, "c", "us-east-1")
		putV(ctx, t, db["eu-west-1"], table, "c", "eu-west-1")
		require.Less(t, time.Since(start), 500*time.Millisecond, "eu-west-1 wrote after us-east-1's change arrived")
		env.Settle()
		for _, r := range env.Regions {
			require.Equal(t, "eu-west-1", getV(ctx, t, db[r], table, "c"), r)
		}
		require.Equal(t, before+1, pairStats(t, env, "us-east-1", "eu-west-1").Conflicts)

		raceAndConverge(ctx, t, env, db, table, 3)
	})
}

// Last writer wins by write time, as the writing region's clock tells it: with eu-west-1's
// clock 400 ms behind, its write made after us-east-1's loses everywhere, eu-west-1 included
// once us-east-1's change arrives. A region never loses its own later write of an item it
// already holds, however far behind its clock.
func TestGlobalTableLastWriterWinsUnderClockSkew(t *testing.T) {
	t.Parallel()
	env := localtest.NewWith(t, localtest.Options{ClockSkew: map[string]time.Duration{"eu-west-1": -400 * time.Millisecond}})
	env.SetJitter(0)
	env.SetLag(200 * time.Millisecond)
	ctx := ctxT(t)
	db, table := ddbClients(env), env.Config.Table

	putV(ctx, t, db["us-east-1"], table, "s", "us-east-1")
	time.Sleep(50 * time.Millisecond) // later in real time, but not by the clocks
	putV(ctx, t, db["eu-west-1"], table, "s", "eu-west-1")
	require.Equal(t, "eu-west-1", getV(ctx, t, db["eu-west-1"], table, "s"), "the local write applies at once")
	env.Settle()
	for _, r := range env.Regions {
		require.Equal(t, "us-east-1", getV(ctx, t, db[r], table, "s"), r)
	}
	require.EqualValues(t, 1, pairStats(t, env, "eu-west-1", "us-east-1").Conflicts)
	require.EqualValues(t, 1, pairStats(t, env, "us-east-1", "eu-west-1").Replicated)

	// eu-west-1 now holds us-east-1's version; its next write (clock behind) still wins.
	putV(ctx, t, db["eu-west-1"], table, "s", "eu-west-1 again")
	env.Settle()
	for _, r := range env.Regions {
		require.Equal(t, "eu-west-1 again", getV(ctx, t, db[r], table, "s"), r)
	}
	require.Equal(t, "-400ms", env.Stack.Status()["eu-west-1"].ClockSkew)
}

// The admin endpoint's replication knobs: lag with jitter (and its seed) per direction, a lag
// without jitter leaving the jitter alone, clock skew per region; a bad value changes nothing.
func TestAdminReplicationJitterAndSkew(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	env.SetJitter(0) // whatever ENVDR_LOCAL_JITTER says
	ctx := ctxT(t)
	ac := localaws.NewAdminClient(env.Admin)
	jitterOf := func(from, to string) string { return pairStats(t, env, from, to).Jitter }

	seed := uint64(7)
	require.NoError(t, ac.SetLagJitter(ctx, "us-east-1", "eu-west-1", 400*time.Millisecond, 150*time.Millisecond, &seed))
	st := pairStats(t, env, "us-east-1", "eu-west-1")
	require.Equal(t, "400ms", st.Lag)
	require.Equal(t, "150ms", st.Jitter)
	require.Equal(t, "0s", jitterOf("eu-west-1", "us-east-1"), "one direction only")
	require.NoError(t, ac.SetLag(ctx, "us-east-1", "eu-west-1", 300*time.Millisecond))
	require.Equal(t, "150ms", jitterOf("us-east-1", "eu-west-1"), "a lag alone leaves the jitter")
	require.NoError(t, ac.SetLagJitter(ctx, "", "", 250*time.Millisecond, 0, nil))
	require.Equal(t, "0s", jitterOf("us-east-1", "eu-west-1"))

	require.Error(t, ac.SetLagJitter(ctx, "mars-north-1", "", time.Second, time.Second, nil))
	for _, q := range []string{"lag=1s&jitter=-1s", "lag=1s&jitter=soon", "lag=1s&jitter=1s&seed=x"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, env.Admin+"/replication/lag?"+q, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, q)
	}
	require.Equal(t, "250ms", pairStats(t, env, "us-east-1", "eu-west-1").Lag, "a bad request changed the lag")

	require.NoError(t, ac.SetSkew(ctx, "eu-west-1", -300*time.Millisecond))
	regions, err := ac.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, "-300ms", regions["eu-west-1"].ClockSkew)
	require.Empty(t, regions["us-east-1"].ClockSkew)
	require.Equal(t, -300*time.Millisecond, env.Stack.GlobalTables().Skew()["eu-west-1"])
	require.NoError(t, ac.SetSkew(ctx, "eu-west-1", 0))
	require.Zero(t, env.Stack.GlobalTables().Skew()["eu-west-1"])
	require.Error(t, ac.SetSkew(ctx, "mars-north-1", time.Second))
}
