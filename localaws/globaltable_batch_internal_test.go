package localaws

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeReplicas stands in for DynamoDB Local behind GlobalTables' deliveries: it serves
// BatchWriteItem only, on tables keyed by "id", keeps each region's items, and answers each
// call as answer says (the call's number from 1 and its ids, in request order).
type fakeReplicas struct {
	mu     sync.Mutex
	items  map[string]map[string]string // region -> id -> attribute v ("" for an item without)
	calls  [][]string                   // each BatchWriteItem's ids, in order
	answer func(n int, ids []string) (status int, unprocessed map[string]bool)
}

func (f *fakeReplicas) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if op := r.Header.Get("X-Amz-Target"); op != ddbTargetPrefix+"BatchWriteItem" {
		http.Error(w, "unexpected "+op, http.StatusBadRequest)
		return
	}
	// Credential=envdrlocal/20260101/REGION/dynamodb/aws4_request (backendAuth)
	region := strings.Split(r.Header.Get("Authorization"), "/")[2]
	body, _ := io.ReadAll(r.Body)
	var req struct {
		RequestItems map[string][]json.RawMessage
	}
	if err := json.Unmarshal(body, &req); err != nil || len(req.RequestItems) != 1 {
		http.Error(w, fmt.Sprintf("bad request (%v): %s", err, body), http.StatusBadRequest)
		return
	}
	type attr struct{ S string }
	type writeRequest struct {
		PutRequest    *struct{ Item map[string]attr }
		DeleteRequest *struct{ Key map[string]attr }
	}
	for table, raw := range req.RequestItems {
		reqs := make([]writeRequest, len(raw))
		ids := make([]string, len(raw))
		for i, b := range raw {
			if err := json.Unmarshal(b, &reqs[i]); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if p := reqs[i].PutRequest; p != nil {
				ids[i] = p.Item["id"].S
			} else {
				ids[i] = reqs[i].DeleteRequest.Key["id"].S
			}
		}
		f.mu.Lock()
		f.calls = append(f.calls, ids)
		n := len(f.calls)
		f.mu.Unlock()
		status, left := f.answer(n, ids)
		if status != http.StatusOK {
			code := "InternalServerError"
			if status == http.StatusBadRequest {
				code = "ResourceNotFoundException"
			}
			writeDDBError(w, status, code, "scripted")
			return
		}
		var again []json.RawMessage
		f.mu.Lock()
		for i, rq := range reqs {
			switch {
			case left[ids[i]]:
				again = append(again, raw[i])
			case rq.PutRequest != nil:
				if f.items[region] == nil {
					f.items[region] = map[string]string{}
				}
				f.items[region][ids[i]] = rq.PutRequest.Item["v"].S
			default:
				delete(f.items[region], ids[i])
			}
		}
		f.mu.Unlock()
		out := map[string]any{"UnprocessedItems": map[string]any{}}
		if len(again) > 0 {
			out["UnprocessedItems"] = map[string]any{table: again}
		}
		_ = json.NewEncoder(w).Encode(out)
	}
}

func (f *fakeReplicas) item(region, id string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.items[region][id]
	return v, ok
}

func (f *fakeReplicas) callSizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for _, c := range f.calls {
		out = append(out, len(c))
	}
	return out
}

// batchTest is GlobalTables between regions a and b over a fakeReplicas, with b down until up.
type batchTest struct {
	g    *GlobalTables
	fake *fakeReplicas
	bUp  atomic.Bool
}

func newBatchTest(t *testing.T, answer func(n int, ids []string) (int, map[string]bool)) *batchTest {
	t.Helper()
	if answer == nil {
		answer = func(int, []string) (int, map[string]bool) { return http.StatusOK, nil }
	}
	bt := &batchTest{fake: &fakeReplicas{items: map[string]map[string]string{}, answer: answer}}
	srv := httptest.NewServer(bt.fake)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	bt.g = NewGlobalTables(u, []string{"a", "b"}, func(r string) bool { return r == "a" || bt.bUp.Load() }, http.DefaultTransport)
	t.Cleanup(bt.g.Close)
	require.NoError(t, bt.g.SetLag("", "", 0))
	return bt
}

// write records a local write of item id in region (v "" is a delete), as GlobalTables.write does.
func (bt *batchTest) write(region, id, v string) {
	key := json.RawMessage(fmt.Sprintf(`{"id":{"S":%q}}`, id))
	var img json.RawMessage
	if v != "" {
		img = json.RawMessage(fmt.Sprintf(`{"id":{"S":%q},"v":{"S":%q}}`, id, v))
	}
	bt.g.record(region, itemRef{table: "t", key: key}, img)
}

func (bt *batchTest) stats(t *testing.T, from, to string) PairStats {
	t.Helper()
	for _, p := range bt.g.Stats() {
		if p.From == from && p.To == to {
			return p
		}
	}
	t.Fatalf("no pair %s -> %s", from, to)
	return PairStats{}
}

func (bt *batchTest) settle(t *testing.T, from, to string) PairStats {
	t.Helper()
	require.Eventually(t, func() bool { return bt.stats(t, from, to).Pending == 0 }, 5*time.Second, 5*time.Millisecond)
	return bt.stats(t, from, to)
}

// Changes waiting at the head of the queue leave in BatchWriteItem calls of up to 25, in order;
// a second write of an item already in the batch starts the next batch, so it lands last.
func TestDeliverBatchesInOrder(t *testing.T) {
	bt := newBatchTest(t, nil)
	for i := range 30 {
		bt.write("a", fmt.Sprintf("i%02d", i), "1")
	}
	bt.write("a", "i27", "2")
	bt.write("a", "i30", "1")
	bt.write("a", "i03", "") // a delete, in the next batch with i27's second write
	bt.bUp.Store(true)

	st := bt.settle(t, "a", "b")
	require.Equal(t, []int{25, 5, 3}, bt.fake.callSizes())
	require.EqualValues(t, 33, st.Replicated)
	require.EqualValues(t, 3, st.Writes)
	require.Zero(t, st.Conflicts)
	v, _ := bt.fake.item("b", "i27")
	require.Equal(t, "2", v, "the later write of i27 was applied last")
	_, ok := bt.fake.item("b", "i03")
	require.False(t, ok, "i03's delete")
}

// Items a BatchWriteItem leaves unprocessed are re-sent until applied, and count as replicated
// only then; after a backend error the changes not applied stay at the head of the queue.
func TestDeliverResendsUnprocessedAndKeepsFailed(t *testing.T) {
	release := make(chan struct{})
	bt := newBatchTest(t, func(n int, ids []string) (int, map[string]bool) {
		switch n {
		case 1: // the first call leaves its last two unprocessed, the second fails
			return http.StatusOK, map[string]bool{ids[len(ids)-1]: true, ids[len(ids)-2]: true}
		case 2:
			return http.StatusInternalServerError, nil
		case 3:
			<-release
		}
		return http.StatusOK, nil
	})
	for i := range 10 {
		bt.write("a", fmt.Sprintf("i%d", i), "1")
	}
	bt.bUp.Store(true)

	require.Eventually(t, func() bool { return len(bt.fake.callSizes()) == 3 }, 5*time.Second, 5*time.Millisecond)
	st := bt.stats(t, "a", "b")
	require.EqualValues(t, 8, st.Replicated, "the unprocessed two are not replicated yet")
	require.Equal(t, 2, st.Pending, "the unprocessed two wait at the head of the queue")
	close(release)

	st = bt.settle(t, "a", "b")
	require.Equal(t, []int{10, 2, 2}, bt.fake.callSizes())
	require.EqualValues(t, 10, st.Replicated)
	require.EqualValues(t, 3, st.Writes)
	for i := range 10 {
		_, ok := bt.fake.item("b", fmt.Sprintf("i%d", i))
		require.True(t, ok, "i%d", i)
	}
}

// Last writer wins across a batch: a change whose item the destination holds a newer write of
// is discarded (a conflict) and the rest of its batch applied; a table deleted everywhere
// (ResourceNotFoundException) swallows its changes, as for a single change.
func TestDeliverBatchSkipsOlderAndMissingTable(t *testing.T) {
	missing := atomic.Bool{}
	bt := newBatchTest(t, func(int, []string) (int, map[string]bool) {
		if missing.Load() {
			return http.StatusBadRequest, nil
		}
		return http.StatusOK, nil
	})
	bt.write("a", "x", "from-a")
	bt.write("a", "y", "from-a")
	bt.write("b", "x", "from-b") // later: wins in b, and in a once b's change arrives
	bt.bUp.Store(true)

	st := bt.settle(t, "a", "b")
	require.EqualValues(t, 1, st.Conflicts)
	require.EqualValues(t, 1, st.Replicated)
	_, ok := bt.fake.item("b", "x")
	require.False(t, ok, "a's older write of x reached b") // the fake holds replicated writes only
	v, _ := bt.fake.item("b", "y")
	require.Equal(t, "from-a", v)
	bt.settle(t, "b", "a")
	v, _ = bt.fake.item("a", "x")
	require.Equal(t, "from-b", v)

	missing.Store(true)
	bt.write("a", "z", "from-a")
	st = bt.settle(t, "a", "b")
	require.EqualValues(t, 2, st.Replicated)
}

func TestDueBatch(t *testing.T) {
	now := time.Unix(1000, 0)
	ch := func(table, id string, due time.Duration, size int) change {
		return change{table: table, key: json.RawMessage(`{"id":{"S":"` + id + `"}}`), image: make(json.RawMessage, size), due: now.Add(due)}
	}
	ids := func(b []change) string {
		var s []string
		for _, c := range b {
			s = append(s, c.table+":"+strings.TrimSuffix(strings.TrimPrefix(string(c.key), `{"id":{"S":"`), `"}}`))
		}
		return strings.Join(s, " ")
	}
	var many []change
	for i := range 30 {
		many = append(many, ch("t", fmt.Sprint(i), 0, 10))
	}
	for _, c := range []struct {
		name  string
		queue []change
		want  string
		wait  time.Duration
	}{
		{"empty", nil, "", time.Hour},
		{"head not due", []change{ch("t", "a", time.Second, 1), ch("t", "b", 0, 1)}, "", time.Second},
		{"up to the first not due", []change{ch("t", "a", 0, 1), ch("t", "b", -time.Second, 1), ch("t", "c", time.Millisecond, 1), ch("t", "d", 0, 1)}, "t:a t:b", 0},
		{"up to a second write of an item", []change{ch("t", "a", 0, 1), ch("t", "b", 0, 1), ch("t", "a", 0, 1)}, "t:a t:b", 0},
		{"one table", []change{ch("t", "a", 0, 1), ch("u", "b", 0, 1), ch("t", "c", 0, 1)}, "t:a", 0},
		{"16 MB", []change{ch("t", "a", 0, 7<<20), ch("t", "b", 0, 7<<20), ch("t", "c", 0, 7<<20)}, "t:a t:b", 0},
		{"one change over 16 MB goes alone", []change{ch("t", "a", 0, 17<<20), ch("t", "b", 0, 1)}, "t:a", 0},
		{"25", many, ids(many[:25]), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &pair{queue: c.queue}
			b, wait := p.dueBatch(now)
			require.Equal(t, c.want, ids(b))
			require.Equal(t, c.wait, wait)
		})
	}
}

func TestDequeueKeepsUndoneAtHead(t *testing.T) {
	ch := func(id string) change { return change{table: "t", key: json.RawMessage(id)} }
	p := &pair{queue: []change{ch("a"), ch("b"), ch("c"), ch("d"), ch("e")}}
	batch := append([]change(nil), p.queue[:4]...)
	p.dequeue(batch, []bool{true, false, true, false})
	var got []string
	for _, c := range p.queue {
		got = append(got, string(c.key))
	}
	require.Equal(t, []string{"b", "d", "e"}, got)
}
