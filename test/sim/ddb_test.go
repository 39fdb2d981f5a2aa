package sim

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

func put(t *testing.T, g *globalTable, region, id, val, cond string) *ddbErr {
	t.Helper()
	body := fmt.Sprintf(`{"TableName":"t","Item":{"id":{"S":%q},"v":{"S":%q}}`, id, val)
	if cond != "" {
		body += fmt.Sprintf(`,"ConditionExpression":%q,"ExpressionAttributeNames":{"#0":"id"}`, cond)
	}
	_, e := g.serve(region, "PutItem", []byte(body+"}"))
	return e
}

func valueIn(g *globalTable, region, id string) string {
	img := g.snapshot(region)[id]
	var s struct{ S string }
	_ = json.Unmarshal(img["v"], &s)
	return s.S
}

// Last writer wins on the writers' skewed clocks, and every replica converges on the winner; a
// condition is checked in the writer's replica only.
func TestGlobalTableLastWriterWinsOnSkewedClocks(t *testing.T) {
	n := newNetwork(1)
	g := newGlobalTable("t", Regions, n, 1)
	defer g.close()
	g.lag = 50 * time.Millisecond
	g.skew["us-east-1"] = 300 * time.Millisecond // its writes look 300 ms later than they are
	if e := put(t, g, "us-east-1", "a", "first", "attribute_not_exists (#0)"); e != nil {
		t.Fatal(e.msg)
	}
	// eu-west-1 has not seen it yet: its own condition holds there.
	if e := put(t, g, "eu-west-1", "a", "second", "attribute_not_exists (#0)"); e != nil {
		t.Fatalf("the condition was checked outside the writer's replica: %s", e.msg)
	}
	g.flush()
	for _, r := range Regions {
		if got := valueIn(g, r, "a"); got != "first" {
			t.Errorf("%s holds %q; want the write with the later clock, %q", r, got, "first")
		}
	}
}

// The items of one transaction reach another replica one by one, at different times.
func TestGlobalTableTransactionItemsReplicateOnTheirOwn(t *testing.T) {
	n := newNetwork(2)
	g := newGlobalTable("t", Regions, n, 2)
	defer g.close()
	g.jitter = 400 * time.Millisecond
	items := ""
	for i := 0; i < 20; i++ {
		if i > 0 {
			items += ","
		}
		items += fmt.Sprintf(`{"Put":{"TableName":"t","Item":{"id":{"S":"k%d"},"v":{"S":"x"}}}}`, i)
	}
	if _, e := g.serve("us-east-1", "TransactWriteItems", []byte(`{"TransactItems":[`+items+`]}`)); e != nil {
		t.Fatal(e.msg)
	}
	half := false
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		got := len(g.snapshot("eu-west-1"))
		if got > 0 && got < 20 {
			half = true
		}
		if got == 20 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !half {
		t.Error("eu-west-1 never held part of the transaction: its items did not replicate on their own")
	}
	if got := len(g.snapshot("eu-west-1")); got != 20 {
		t.Errorf("eu-west-1 holds %d of 20 items", got)
	}
}
