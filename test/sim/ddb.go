package sim

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// globalTable is an in-process DynamoDB global table at AWS's weakest documented semantics
// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/V2globaltables_HowItWorks.html):
//
//   - each region has its own replica; a write is applied to the local replica at once and its
//     condition is checked there only;
//   - every item a write touches (each item of a transaction or batch too) is sent to every other
//     replica on its own, after lag + a uniform random jitter drawn per item and per direction,
//     so the items of one transaction reach another region in any order and at different times
//     (a transaction is atomic only in the region that wrote it);
//   - concurrent writes of one item resolve by last writer wins on the write's time, taken from
//     the writing region's clock, which is skewed per region (so the later write in real time
//     can lose); equal times break by region name;
//   - a lost region neither sends nor receives; its changes wait and flow when it returns.
//
// It serves the DynamoDB JSON 1.0 protocol for what envdr's store emits (GetItem, BatchGetItem,
// PutItem, DeleteItem, TransactWriteItems, BatchWriteItem, Scan, DescribeTable) and evaluates the
// condition expressions replicate.Store builds (attribute_not_exists, attribute_exists, a = :v);
// any other expression is refused, so a new one cannot pass unchecked.
type globalTable struct {
	table   string
	regions []string
	net     *network

	mu        sync.Mutex
	replicas  map[string]map[string]*version // region -> item id -> version
	lag       time.Duration
	jitter    time.Duration
	lagTo     map[string]time.Duration // extra lag into a region (a replica far behind)
	skew      map[string]time.Duration
	rng       *rand.Rand
	pending   int
	history   []applied // every version applied to any replica, in order (for I3)
	inflightD map[*delivery]bool
	wg        sync.WaitGroup
	closed    bool
	writes    int
}

// version is one write of an item.
type version struct {
	img    map[string]json.RawMessage // nil: deleted
	at     time.Time                  // write time on the writer's clock
	region string                     // writer
	seq    int64
}

func (v *version) newer(o *version) bool {
	if o == nil {
		return true
	}
	if !v.at.Equal(o.at) {
		return v.at.After(o.at)
	}
	if v.region != o.region {
		return v.region > o.region
	}
	return v.seq > o.seq
}

// applied is one version landing in one replica.
type applied struct {
	region, id string
	prev, next map[string]json.RawMessage
	local      bool
}

func newGlobalTable(table string, regions []string, n *network, seed uint64) *globalTable {
	g := &globalTable{table: table, regions: regions, net: n, replicas: map[string]map[string]*version{},
		lagTo: map[string]time.Duration{}, skew: map[string]time.Duration{}, rng: rand.New(rand.NewPCG(seed, 0xdd))}
	for _, r := range regions {
		g.replicas[r] = map[string]*version{}
	}
	return g
}

func (g *globalTable) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}

var seqCounter struct {
	sync.Mutex
	n int64
}

func nextSeq() int64 {
	seqCounter.Lock()
	defer seqCounter.Unlock()
	seqCounter.n++
	return seqCounter.n
}

// writeLocked applies a local write of item id in region and sends it on. g.mu is held.
func (g *globalTable) writeLocked(region, id string, img map[string]json.RawMessage) {
	rep := g.replicas[region]
	at := time.Now().Add(g.skew[region])
	if cur := rep[id]; cur != nil && !at.After(cur.at) {
		// The local replica applies its own write whatever the clocks say; its stamp moves just
		// past the item's, so the replicas still converge on it.
		at = cur.at.Add(time.Nanosecond)
	}
	v := &version{img: img, at: at, region: region, seq: nextSeq()}
	g.history = append(g.history, applied{region: region, id: id, prev: imgOf(rep[id]), next: img, local: true})
	rep[id] = v
	g.writes++
	for _, to := range g.regions {
		if to == region {
			continue
		}
		d := g.lag + g.lagTo[to]
		if g.jitter > 0 {
			d += time.Duration(g.rng.Int64N(int64(g.jitter) + 1))
		}
		g.pending++
		g.wg.Add(1)
		g.deliverAfter(region, to, id, v, d)
	}
}

func imgOf(v *version) map[string]json.RawMessage {
	if v == nil {
		return nil
	}
	return v.img
}

// delivery is one change on its way to one replica.
type delivery struct {
	from, to, id string
	v            *version
	timer        *time.Timer
}

// deliverAfter applies v in to after d, once both regions are up. g.mu is held.
func (g *globalTable) deliverAfter(from, to, id string, v *version, d time.Duration) {
	dl := &delivery{from: from, to: to, id: id, v: v}
	if g.inflightD == nil {
		g.inflightD = map[*delivery]bool{}
	}
	g.inflightD[dl] = true
	dl.timer = time.AfterFunc(d, func() { g.deliver(dl) })
}

func (g *globalTable) deliver(dl *delivery) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.inflightD, dl)
	if g.closed {
		g.pending--
		g.wg.Done()
		return
	}
	if !g.net.isUp(dl.from) || !g.net.isUp(dl.to) {
		g.deliverAfter(dl.from, dl.to, dl.id, dl.v, 20*time.Millisecond) // still pending, still in wg
		return
	}
	rep := g.replicas[dl.to]
	if dl.v.newer(rep[dl.id]) {
		g.history = append(g.history, applied{region: dl.to, id: dl.id, prev: imgOf(rep[dl.id]), next: dl.v.img})
		rep[dl.id] = dl.v
	}
	g.pending--
	g.wg.Done()
}

// flush delivers every change on its way now (the end of a schedule: lag no longer matters, and
// the checker must not wait out a 30 s lag). Regions must be up.
func (g *globalTable) flush() {
	g.mu.Lock()
	var due []*delivery
	for dl := range g.inflightD {
		if dl.timer.Stop() {
			due = append(due, dl)
		}
	}
	g.mu.Unlock()
	// Deliver in write order per item, so last writer wins sees them as they were written.
	sort.Slice(due, func(i, j int) bool { return due[i].v.seq < due[j].v.seq })
	for _, dl := range due {
		g.deliver(dl)
	}
}

// settled reports whether no change is on its way.
func (g *globalTable) settled() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pending == 0
}

// snapshot returns region's replica: item id -> image.
func (g *globalTable) snapshot(region string) map[string]map[string]json.RawMessage {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]map[string]json.RawMessage{}
	for id, v := range g.replicas[region] {
		if v.img != nil {
			out[id] = v.img
		}
	}
	return out
}

// handler serves region's DynamoDB endpoint.
func (g *globalTable) handler(region string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "DynamoDB_20120810.")
		out, e := g.serve(region, op, body)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		if e != nil {
			w.WriteHeader(400)
			m := map[string]any{"__type": "com.amazonaws.dynamodb.v20120810#" + e.code, "message": e.msg}
			if e.reasons != nil {
				m["CancellationReasons"] = e.reasons
			}
			_ = json.NewEncoder(w).Encode(m)
			return
		}
		w.WriteHeader(200)
		_ = json.NewEncoder(w).Encode(out)
	})
}

type ddbErr struct {
	code, msg string
	reasons   []map[string]string
}

type attrs = map[string]json.RawMessage

type writeReq struct {
	TableName                 string
	Item                      attrs
	Key                       attrs
	ConditionExpression       string
	ExpressionAttributeNames  map[string]string
	ExpressionAttributeValues attrs
}

func keyID(k attrs) (string, error) {
	var s struct{ S string }
	if err := json.Unmarshal(k["id"], &s); err != nil || s.S == "" {
		return "", fmt.Errorf("key lacks a string id")
	}
	return s.S, nil
}

func (g *globalTable) serve(region, op string, body []byte) (any, *ddbErr) {
	bad := func(err error) *ddbErr { return &ddbErr{code: "ValidationException", msg: err.Error()} }
	g.mu.Lock()
	defer g.mu.Unlock()
	rep := g.replicas[region]
	switch op {
	case "DescribeTable":
		n := 0
		for _, v := range rep {
			if v.img != nil {
				n++
			}
		}
		return map[string]any{"Table": map[string]any{"TableName": g.table, "TableStatus": "ACTIVE", "ItemCount": n,
			"KeySchema": []map[string]string{{"AttributeName": "id", "KeyType": "HASH"}}}}, nil
	case "GetItem":
		var in writeReq
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, bad(err)
		}
		id, err := keyID(in.Key)
		if err != nil {
			return nil, bad(err)
		}
		if v := rep[id]; v != nil && v.img != nil {
			return map[string]any{"Item": v.img}, nil
		}
		return map[string]any{}, nil
	case "BatchGetItem":
		var in struct {
			RequestItems map[string]struct{ Keys []attrs }
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, bad(err)
		}
		resp := map[string][]attrs{}
		for t, ka := range in.RequestItems {
			resp[t] = []attrs{}
			for _, k := range ka.Keys {
				id, err := keyID(k)
				if err != nil {
					return nil, bad(err)
				}
				if v := rep[id]; v != nil && v.img != nil {
					resp[t] = append(resp[t], v.img)
				}
			}
		}
		return map[string]any{"Responses": resp, "UnprocessedKeys": map[string]any{}}, nil
	case "PutItem", "DeleteItem":
		var in writeReq
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, bad(err)
		}
		id, img, err := target(op, in)
		if err != nil {
			return nil, bad(err)
		}
		ok, err := condition(in, imgOf(rep[id]))
		if err != nil {
			return nil, bad(err)
		}
		if !ok {
			return nil, &ddbErr{code: "ConditionalCheckFailedException", msg: "The conditional request failed"}
		}
		g.writeLocked(region, id, img)
		return map[string]any{}, nil
	case "TransactWriteItems":
		var in struct {
			TransactItems []struct {
				Put, Delete, ConditionCheck, Update *writeReq
			}
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, bad(err)
		}
		type w struct {
			id  string
			img attrs
			put bool
		}
		var ws []w
		reasons := make([]map[string]string, len(in.TransactItems))
		failed, seen := false, map[string]bool{}
		for i, it := range in.TransactItems {
			reasons[i] = map[string]string{"Code": "None"}
			var req *writeReq
			op := ""
			switch {
			case it.Put != nil:
				req, op = it.Put, "PutItem"
			case it.Delete != nil:
				req, op = it.Delete, "DeleteItem"
			default:
				return nil, bad(fmt.Errorf("sim: only Put and Delete in a transaction"))
			}
			id, img, err := target(op, *req)
			if err != nil {
				return nil, bad(err)
			}
			if seen[id] {
				return nil, bad(fmt.Errorf("transaction request cannot include multiple operations on one item"))
			}
			seen[id] = true
			ok, err := condition(*req, imgOf(rep[id]))
			if err != nil {
				return nil, bad(err)
			}
			if !ok {
				failed = true
				reasons[i] = map[string]string{"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}
			}
			ws = append(ws, w{id: id, img: img, put: op == "PutItem"})
		}
		if failed {
			return nil, &ddbErr{code: "TransactionCanceledException", msg: "Transaction cancelled, please refer cancellation reasons for specific reasons", reasons: reasons}
		}
		for _, x := range ws {
			g.writeLocked(region, x.id, x.img)
		}
		return map[string]any{}, nil
	case "BatchWriteItem":
		var in struct {
			RequestItems map[string][]struct {
				PutRequest    *struct{ Item attrs }
				DeleteRequest *struct{ Key attrs }
			}
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, bad(err)
		}
		for _, reqs := range in.RequestItems {
			for _, rq := range reqs {
				switch {
				case rq.PutRequest != nil:
					id, err := keyID(rq.PutRequest.Item)
					if err != nil {
						return nil, bad(err)
					}
					g.writeLocked(region, id, rq.PutRequest.Item)
				case rq.DeleteRequest != nil:
					id, err := keyID(rq.DeleteRequest.Key)
					if err != nil {
						return nil, bad(err)
					}
					g.writeLocked(region, id, nil)
				}
			}
		}
		return map[string]any{"UnprocessedItems": map[string]any{}}, nil
	case "Scan":
		var in struct {
			Segment, TotalSegments, Limit int
			ExclusiveStartKey             attrs
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, bad(err)
		}
		ids := make([]string, 0, len(rep))
		for id, v := range rep {
			if v.img == nil {
				continue
			}
			if in.TotalSegments > 1 {
				h := fnv.New32a()
				_, _ = h.Write([]byte(id))
				if int(h.Sum32()%uint32(in.TotalSegments)) != in.Segment {
					continue
				}
			}
			ids = append(ids, id)
		}
		sort.Strings(ids)
		if in.ExclusiveStartKey != nil {
			after, err := keyID(in.ExclusiveStartKey)
			if err != nil {
				return nil, bad(err)
			}
			i := sort.SearchStrings(ids, after)
			for i < len(ids) && ids[i] <= after {
				i++
			}
			ids = ids[i:]
		}
		limit := in.Limit
		if limit <= 0 || limit > 200 {
			limit = 200
		}
		out := map[string]any{}
		if len(ids) > limit {
			ids = ids[:limit]
			out["LastEvaluatedKey"] = map[string]any{"id": map[string]string{"S": ids[len(ids)-1]}}
		}
		items := make([]attrs, 0, len(ids))
		for _, id := range ids {
			items = append(items, rep[id].img)
		}
		out["Items"], out["Count"], out["ScannedCount"] = items, len(items), len(items)
		return out, nil
	}
	return nil, &ddbErr{code: "UnknownOperationException", msg: "sim: operation " + op + " is not modelled"}
}

// target is the item a Put or Delete writes and its new image (nil for a delete).
func target(op string, in writeReq) (string, attrs, error) {
	if op == "PutItem" {
		id, err := keyID(in.Item)
		return id, in.Item, err
	}
	id, err := keyID(in.Key)
	return id, nil, err
}

var (
	reNotExists = regexp.MustCompile(`^attribute_not_exists\s*\(\s*(#\w+)\s*\)$`)
	reExists    = regexp.MustCompile(`^attribute_exists\s*\(\s*(#\w+)\s*\)$`)
	reEqual     = regexp.MustCompile(`^\(?\s*(#\w+)\s*=\s*(:\w+)\s*\)?$`)
)

// condition evaluates the condition expressions replicate.Store builds against cur (nil:
// absent). Anything else is an error: the model must not pass a condition it does not know.
func condition(in writeReq, cur attrs) (bool, error) {
	c := strings.TrimSpace(in.ConditionExpression)
	if c == "" {
		return true, nil
	}
	name := func(ref string) (string, error) {
		n, ok := in.ExpressionAttributeNames[ref]
		if !ok {
			return "", fmt.Errorf("sim: condition %q: no name %s", c, ref)
		}
		return n, nil
	}
	if m := reNotExists.FindStringSubmatch(c); m != nil {
		n, err := name(m[1])
		if err != nil {
			return false, err
		}
		_, has := cur[n]
		return !has, nil
	}
	if m := reExists.FindStringSubmatch(c); m != nil {
		n, err := name(m[1])
		if err != nil {
			return false, err
		}
		_, has := cur[n]
		return has, nil
	}
	if m := reEqual.FindStringSubmatch(c); m != nil {
		n, err := name(m[1])
		if err != nil {
			return false, err
		}
		v, ok := in.ExpressionAttributeValues[m[2]]
		if !ok {
			return false, fmt.Errorf("sim: condition %q: no value %s", c, m[2])
		}
		got, has := cur[n]
		return has && canon(got) == canon(v), nil
	}
	return false, fmt.Errorf("sim: condition expression %q is not modelled", c)
}

func canon(raw json.RawMessage) string {
	var x any
	if err := json.Unmarshal(raw, &x); err != nil {
		return string(raw)
	}
	b, _ := json.Marshal(x)
	return string(b)
}
