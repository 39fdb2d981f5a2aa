package localaws

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Last writer wins per item, on the time of the write; equal times go to the larger region name
// so that every replica picks the same winner.
// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/V2globaltables_HowItWorks.html
func TestItemVersionNewer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		name string
		a, b itemVersion
		want bool
	}{
		{"later wins", itemVersion{t0.Add(time.Nanosecond), "eu-west-1"}, itemVersion{t0, "us-east-1"}, true},
		{"earlier loses", itemVersion{t0, "us-east-1"}, itemVersion{t0.Add(time.Nanosecond), "eu-west-1"}, false},
		{"tie: larger region", itemVersion{t0, "us-east-1"}, itemVersion{t0, "eu-west-1"}, true},
		{"tie: smaller region", itemVersion{t0, "eu-west-1"}, itemVersion{t0, "us-east-1"}, false},
		{"same write", itemVersion{t0, "eu-west-1"}, itemVersion{t0, "eu-west-1"}, false},
	} {
		t.Run(c.name, func(t *testing.T) { require.Equal(t, c.want, c.a.newer(c.b)) })
	}
}

func TestQueueRegion(t *testing.T) {
	for url, want := range map[string]string{
		"http://sqs.eu-west-1.localhost:24681/000000000000/envdr-events": "eu-west-1",
		"https://sqs.us-east-1.amazonaws.com/111122223333/q":             "us-east-1",
		"http://127.0.0.1:24681/000000000000/envdr-events":               "",
		"::not a url": "",
	} {
		require.Equal(t, want, queueRegion(url), url)
	}
}

func TestTouchedItems(t *testing.T) {
	g := &GlobalTables{schemas: map[string][]string{"us-east-1|t": {"id"}}}
	for _, c := range []struct {
		op, body string
		want     []string
		bad      bool
	}{
		{"PutItem", `{"TableName":"t","Item":{"id":{"S":"a"},"v":{"N":"1"}}}`, []string{`t|{"id":{"S":"a"}}`}, false},
		{"UpdateItem", `{"TableName":"t","Key":{"id":{"S":"b"}}}`, []string{`t|{"id":{"S":"b"}}`}, false},
		{"DeleteItem", `{"TableName":"t","Key":{"id":{"S":"c"}}}`, []string{`t|{"id":{"S":"c"}}`}, false},
		{"BatchWriteItem", `{"RequestItems":{"t":[{"PutRequest":{"Item":{"id":{"S":"d"}}}},{"DeleteRequest":{"Key":{"id":{"S":"e"}}}}]}}`,
			[]string{`t|{"id":{"S":"d"}}`, `t|{"id":{"S":"e"}}`}, false},
		{"TransactWriteItems", `{"TransactItems":[{"Put":{"TableName":"t","Item":{"id":{"S":"f"}}}},{"ConditionCheck":{"TableName":"t","Key":{"id":{"S":"g"}}}},{"Delete":{"TableName":"t","Key":{"id":{"S":"h"}}}}]}`,
			[]string{`t|{"id":{"S":"f"}}`, `t|{"id":{"S":"h"}}`}, false},
		{"PutItem", `{"TableName":"t","Item":{"v":{"N":"1"}}}`, nil, true}, // no key attribute
		{"PutItem", `not json`, nil, true},
	} {
		refs, err := g.touched(t.Context(), "us-east-1", c.op, []byte(c.body))
		if c.bad {
			require.Error(t, err, c.body)
			continue
		}
		require.NoError(t, err, c.body)
		var got []string
		for _, r := range refs {
			got = append(got, r.id())
		}
		require.Equal(t, c.want, got, c.body)
	}
}
