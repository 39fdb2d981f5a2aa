package localaws

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/envdr/envdr/localaws/admin"
)

// Global tables, as DynamoDB global tables version 2019.11.21 run them:
// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/V2globaltables_HowItWorks.html
//
//   - every region has its own replica (here: DynamoDB Local's database for the stand-in's
//     access key and that region, one file per region, no -sharedDb);
//   - a write is applied to the local replica at once, conditions are checked against that
//     replica only, and the change is sent to every other replica asynchronously, after a lag;
//   - items replicate individually: each item a transaction or batch wrote leaves for each
//     other replica on its own, after the lag plus a random jitter of its own (0 by default),
//     so another region can see part of a transaction, its items in any order. Two writes of
//     one item arrive in write order;
//   - concurrent writes to one item are resolved per item by last writer wins on the time of
//     the write, as the writing region's clock (which may be skewed) stamped it, so every
//     replica converges on the same item; the losing write is discarded (counted as a conflict
//     here). Equal times are broken by region name, so every replica picks the same winner;
//   - deletes replicate like writes;
//   - a region that is down neither sends nor receives changes, and catches up in order when
//     it returns.
//
// Every table is a global table with a replica in every region of the stack: CreateTable and
// DeleteTable through any region's endpoint act on all of them (in AWS: CreateTable, then
// UpdateTable ReplicaUpdates).

// DefaultReplicationLag is the stand-in's replication lag between every pair of regions.
const DefaultReplicationLag = 250 * time.Millisecond

// ddbAccessKey is the access key every region's proxy presents to DynamoDB Local, whatever the
// caller signed with: DynamoDB Local keeps one database per (access key, region), and a
// region's data must not split by principal. Letters and digits only (DynamoDB Local's rule).
const ddbAccessKey = "envdrlocal"

const ddbTargetPrefix = "DynamoDB_20120810."

// ErrUnsupportedOperation: a DynamoDB operation the stand-in's replication cannot follow.
var ErrUnsupportedOperation = errors.New("localaws: operation not supported by the stand-in's global tables")

// itemVersion identifies one write of an item: when it happened and in which region.
type itemVersion struct {
	At     time.Time
	Region string
}

// newer reports whether v wins over o under last writer wins.
func (v itemVersion) newer(o itemVersion) bool {
	if !v.At.Equal(o.At) {
		return v.At.After(o.At)
	}
	return v.Region > o.Region
}

// change is one item write on its way from one replica to another.
type change struct {
	table string
	key   json.RawMessage // the item's key attributes, DynamoDB JSON
	image json.RawMessage // the whole item after the write; nil for a delete
	ver   itemVersion
	// written is when the write happened by the stand-in's own (unskewed) clock: the lag and
	// the ReplicationLatency count from it, whatever the writing region's clock said.
	written time.Time
	due     time.Time
}

// PairStats are one replication direction's counters (the admin wire type, localaws/admin).
type PairStats = admin.PairStats

// GlobalTables replicates every table between the regions of a Stack. It also serves each
// region's DynamoDB endpoint (Handler), which is where it sees the writes.
type GlobalTables struct {
	backend *url.URL
	regions []string
	isUp    func(region string) bool
	client  *http.Client

	stripes map[string]*[256]sync.Mutex

	mu      sync.Mutex
	meta    map[string]map[string]itemVersion // region -> table|key -> last write applied
	pairs   map[[2]string]*pair
	schemas map[string][]string // region|table -> key attribute names
	clocks  map[string]*regionClock
	rng     *rand.Rand // the jitter's draws; seeded by SetSeed for a reproducible schedule

	stop chan struct{}
	wg   sync.WaitGroup
}

type pair struct {
	from, to    string
	lag, jitter time.Duration
	// queue holds the changes not yet applied, ordered by due time (stable: a tie keeps write
	// order); its first inflight changes are being applied by deliver.
	queue    []change
	inflight int
	wake     chan struct{}

	replicated, conflicts, writes int64
	lastLat, maxLat               time.Duration
}

// NewGlobalTables starts replication between regions over the DynamoDB Local at backend.
// isUp tells whether a region is reachable (Stack.IsUp).
func NewGlobalTables(backend *url.URL, regions []string, isUp func(string) bool, tr http.RoundTripper) *GlobalTables {
	g := &GlobalTables{
		backend: backend, regions: append([]string(nil), regions...), isUp: isUp,
		client:  &http.Client{Transport: tr, Timeout: 30 * time.Second},
		stripes: map[string]*[256]sync.Mutex{},
		meta:    map[string]map[string]itemVersion{},
		pairs:   map[[2]string]*pair{},
		schemas: map[string][]string{},
		clocks:  map[string]*regionClock{},
		rng:     rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0)),
		stop:    make(chan struct{}),
	}
	for _, from := range regions {
		g.clocks[from] = &regionClock{}
		g.stripes[from] = &[256]sync.Mutex{}
		g.meta[from] = map[string]itemVersion{}
		for _, to := range regions {
			if from == to {
				continue
			}
			p := &pair{from: from, to: to, lag: DefaultReplicationLag, wake: make(chan struct{}, 1)}
			g.pairs[[2]string{from, to}] = p
			g.wg.Add(1)
			go g.deliver(p)
		}
	}
	return g
}

// Close stops replication; changes not yet applied are dropped (the stand-in is going away).
func (g *GlobalTables) Close() {
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	g.wg.Wait()
}

// SetLag sets the replication lag from one region to another; "" for from or to means every
// region. It applies to changes written from now on.
func (g *GlobalTables) SetLag(from, to string, lag time.Duration) error {
	return g.setPairs(from, to, "lag", lag, func(p *pair) { p.lag = lag })
}

// setPairs applies set to every replication direction from -> to ("" for every region), after
// checking d (the lag or jitter, named what) and the region names.
func (g *GlobalTables) setPairs(from, to, what string, d time.Duration, set func(*pair)) error {
	if d < 0 {
		return fmt.Errorf("localaws: replication %s %s: must be 0 or more", what, d)
	}
	for _, r := range []string{from, to} {
		if r != "" && g.stripes[r] == nil {
			return fmt.Errorf("%w %q", ErrUnknownRegion, r)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, p := range g.pairs {
		if (from == "" || k[0] == from) && (to == "" || k[1] == to) {
			set(p)
		}
	}
	return nil
}

// SetJitter sets the replication jitter from one region to another ("" for from or to means
// every region): each change then waits its direction's lag plus a random delay in [0, jitter],
// drawn for each item and destination, so the items of one transaction or batch arrive in
// another region at different times and in any order. It applies to changes written from now
// on.
func (g *GlobalTables) SetJitter(from, to string, jitter time.Duration) error {
	return g.setPairs(from, to, "jitter", jitter, func(p *pair) { p.jitter = jitter })
}

// Delay is how long a change written now waits to replicate from one region to another: the
// pair's lag plus a draw of its jitter. S3 replication (s3replication.go) takes its delays here,
// so one lag setting and one seeded schedule cover both.
func (g *GlobalTables) Delay(from, to string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.pairs[[2]string{from, to}]
	if p == nil {
		return 0
	}
	d := p.lag
	if p.jitter > 0 {
		d += time.Duration(g.rng.Int64N(int64(p.jitter) + 1))
	}
	return d
}

// SetSeed restarts the jitter's random source from seed: the same writes, made in the same
// order with the same lags, then get the same delays, so a simulation can replay a schedule.
func (g *GlobalTables) SetSeed(seed uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rng = rand.New(rand.NewPCG(seed, 0))
}

// SetSkew offsets region's write clock by skew (negative: behind) from now on. Last writer
// wins compares the times the writing regions' clocks gave, so a write made later in real time
// in a region whose clock is behind can lose to an earlier one, as with real clocks. AWS keeps
// its clocks far closer than the few hundred milliseconds a test uses.
func (g *GlobalTables) SetSkew(region string, skew time.Duration) error {
	c := g.clocks[region]
	if c == nil {
		return fmt.Errorf("%w %q", ErrUnknownRegion, region)
	}
	c.skew.Store(int64(skew))
	return nil
}

// Skew returns every region's write clock offset.
func (g *GlobalTables) Skew() map[string]time.Duration {
	out := map[string]time.Duration{}
	for r, c := range g.clocks {
		out[r] = time.Duration(c.skew.Load())
	}
	return out
}

// Stats returns every replication direction's counters, ordered by (from, to).
func (g *GlobalTables) Stats() []PairStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]PairStats, 0, len(g.pairs))
	for _, p := range g.pairs {
		out = append(out, PairStats{
			From: p.from, To: p.to, Lag: p.lag.String(), Jitter: p.jitter.String(), Replicated: p.replicated, Conflicts: p.conflicts, Writes: p.writes,
			Pending: len(p.queue), LastLatencyMs: ms(p.lastLat), MaxLatencyMs: ms(p.maxLat),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].From != out[j].From {
			return out[i].From < out[j].From
		}
		return out[i].To < out[j].To
	})
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Handler serves region's DynamoDB endpoint: it forwards to the region's replica and sends
// every successful write on to the other replicas.
func (g *GlobalTables) Handler(region string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err != nil {
			return // the client went away
		}
		op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), ddbTargetPrefix)
		var status int
		var hdr http.Header
		var resp []byte
		switch op {
		case "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems":
			status, hdr, resp, err = g.write(r.Context(), region, op, r.Header, body)
		case "CreateTable", "DeleteTable":
			status, hdr, resp, err = g.everywhere(r.Context(), region, op, r.Header, body)
		case "ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction", "RestoreTableFromBackup",
			"RestoreTableToPointInTime", "ImportTable":
			writeDDBError(w, http.StatusBadRequest, "ValidationException",
				fmt.Sprintf("%s: %v; use the item operations (PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems)", op, ErrUnsupportedOperation))
			return
		default:
			status, hdr, resp, err = g.forward(r.Context(), region, r.Header, body)
		}
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			writeDDBError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "envdr local stand-in: DynamoDB backend unreachable: "+err.Error())
			return
		}
		for _, k := range []string{"Content-Type", "X-Amz-Crc32", "X-Amzn-Requestid"} {
			if v := hdr.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		w.WriteHeader(status)
		_, _ = w.Write(resp)
	})
}

// forward sends a request to region's replica, presenting the stand-in's access key.
func (g *GlobalTables) forward(ctx context.Context, region string, in http.Header, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.backend.String()+"/", bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	for _, k := range []string{"Content-Type", "X-Amz-Target", "X-Amz-Date"} {
		if v := in.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	}
	req.Header.Set("Authorization", backendAuth(region))
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, out, nil
}

// call sends one operation of the stand-in's own to region's replica.
func (g *GlobalTables) call(ctx context.Context, region, op string, in any) (int, []byte, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return 0, nil, err
	}
	h := http.Header{}
	h.Set("X-Amz-Target", ddbTargetPrefix+op)
	h.Set("Content-Type", "application/x-amz-json-1.0")
	status, _, out, err := g.forward(ctx, region, h, b)
	if err == nil && status/100 != 2 {
		err = fmt.Errorf("%s in %s: HTTP %d: %s", op, region, status, bytes.TrimSpace(out))
	}
	return status, out, err
}

// backendAuth is a SigV4 Authorization header naming the stand-in's access key and region.
// DynamoDB Local reads the access key and region from it and checks no signature.
func backendAuth(region string) string {
	return fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/20260101/%s/dynamodb/aws4_request, SignedHeaders=host, Signature=%s",
		ddbAccessKey, region, strings.Repeat("0", 64))
}

// everywhere applies CreateTable or DeleteTable to every region's replica: the caller's region
// first (its answer is the caller's), then the others (an existing or missing table there is
// fine: the table may have been made before this stack).
func (g *GlobalTables) everywhere(ctx context.Context, region, op string, in http.Header, body []byte) (int, http.Header, []byte, error) {
	status, hdr, out, err := g.forward(ctx, region, in, body)
	if err != nil || status/100 != 2 {
		return status, hdr, out, err
	}
	var req struct{ TableName string }
	_ = json.Unmarshal(body, &req)
	g.mu.Lock()
	for _, r := range g.regions {
		delete(g.schemas, r+"|"+req.TableName)
	}
	g.mu.Unlock()
	for _, r := range g.regions {
		if r == region {
			continue
		}
		if _, _, _, err := g.forward(ctx, r, in, body); err != nil {
			return 0, nil, nil, fmt.Errorf("%s %s in %s: %w", op, req.TableName, r, err)
		}
	}
	return status, hdr, out, nil
}

// itemRef is one item a write touches.
type itemRef struct {
	table string
	key   json.RawMessage
}

func (i itemRef) id() string { return i.table + "|" + string(i.key) }

// write forwards a write and, if it succeeded, sends each item it touched, as it now is, to the
// other regions. The items are locked from before the write until their new images are read,
// so the image sent is this write's (or a later local write's, which is sent too).
func (g *GlobalTables) write(ctx context.Context, region, op string, in http.Header, body []byte) (int, http.Header, []byte, error) {
	refs, err := g.touched(ctx, region, op, body)
	if err != nil {
		// Not parseable: let the replica answer (it rejects malformed requests as AWS does);
		// a request it accepts was parseable, so nothing goes unreplicated.
		return g.forward(ctx, region, in, body)
	}
	unlock := g.lock(region, refs)
	defer unlock()
	// A caller that hangs up (or is killed) mid-request must not stop the write half way: the
	// replica may have applied it, and then its change has to leave for the other regions.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	status, hdr, out, err := g.forward(rctx, region, in, body)
	if err != nil || status/100 != 2 {
		return status, hdr, out, err
	}
	images, err := g.images(rctx, region, refs)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read back %d items after %s: %w", len(refs), op, err)
	}
	for i, ref := range refs {
		g.record(region, ref, images[i])
	}
	return status, hdr, out, nil
}

// maxBatchGetKeys is DynamoDB's limit of keys in one BatchGetItem call.
const maxBatchGetKeys = 100

// images reads the current state of refs in region (nil: no such item), in their order: one
// GetItem for a single item, else consistent BatchGetItem calls of up to 100 keys (a
// transaction of 100 items is read back in one call, not a hundred), any key the backend left
// unprocessed read with GetItem.
func (g *GlobalTables) images(ctx context.Context, region string, refs []itemRef) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, len(refs))
	if len(refs) == 1 {
		img, err := g.image(ctx, region, refs[0])
		out[0] = img
		return out, err
	}
	type keysAndAttributes struct {
		Keys           []json.RawMessage
		ConsistentRead bool
	}
	got := map[string]json.RawMessage{} // itemRef.id() -> image
	for start := 0; start < len(refs); start += maxBatchGetKeys {
		batch := refs[start:min(len(refs), start+maxBatchGetKeys)]
		req := map[string]*keysAndAttributes{}
		for _, r := range batch {
			if req[r.table] == nil {
				req[r.table] = &keysAndAttributes{ConsistentRead: true}
			}
			req[r.table].Keys = append(req[r.table].Keys, r.key)
		}
		_, body, err := g.call(ctx, region, "BatchGetItem", map[string]any{"RequestItems": req})
		if err != nil {
			return nil, err
		}
		var res struct {
			Responses map[string][]map[string]json.RawMessage
		}
		if err := json.Unmarshal(body, &res); err != nil {
			return nil, err
		}
		for table, items := range res.Responses {
			names, err := g.keySchema(ctx, region, table)
			if err != nil {
				return nil, err
			}
			for _, it := range items {
				k := map[string]json.RawMessage{}
				for _, n := range names {
					k[n] = it[n]
				}
				var ref []itemRef
				if err := addKey(&ref, table, k); err != nil {
					return nil, err
				}
				img, err := json.Marshal(it)
				if err != nil {
					return nil, err
				}
				got[ref[0].id()] = img
			}
		}
	}
	for i, r := range refs {
		if img, ok := got[r.id()]; ok {
			out[i] = img
			continue
		}
		// Absent (deleted), or left unprocessed by the backend: one read to tell which.
		img, err := g.image(ctx, region, r)
		if err != nil {
			return nil, err
		}
		out[i] = img
	}
	return out, nil
}

// record stamps a local write with region's clock and queues it for every other region, each
// with its own delay (lag and jitter). The item's lock is held (write), so the item's version
// in region cannot change meanwhile.
func (g *GlobalTables) record(region string, ref itemRef, image json.RawMessage) {
	g.mu.Lock()
	defer g.mu.Unlock()
	// Read under g.mu, after any deliver's dueBatch that came first: a change queued now is due
	// after every change being applied (enqueue relies on it).
	written := time.Now()
	id := ref.id()
	ver := itemVersion{At: g.clocks[region].stamp(written, g.meta[region][id].At), Region: region}
	g.meta[region][id] = ver
	for _, to := range g.regions {
		if to == region {
			continue
		}
		p := g.pairs[[2]string{region, to}]
		var jitter time.Duration
		if p.jitter > 0 {
			jitter = time.Duration(g.rng.Int64N(int64(p.jitter) + 1))
		}
		p.enqueue(change{table: ref.table, key: ref.key, image: image, ver: ver, written: written,
			due: written.Add(p.lag + jitter)})
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// image reads an item's current state in region (nil: no such item).
func (g *GlobalTables) image(ctx context.Context, region string, ref itemRef) (json.RawMessage, error) {
	_, out, err := g.call(ctx, region, "GetItem", map[string]any{"TableName": ref.table, "Key": ref.key, "ConsistentRead": true})
	if err != nil {
		return nil, err
	}
	var res struct{ Item json.RawMessage }
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, err
	}
	if len(res.Item) == 0 || string(res.Item) == "null" {
		return nil, nil
	}
	return res.Item, nil
}

// DynamoDB's limits of one BatchWriteItem call: put and delete requests, and request size.
const (
	maxBatchWriteItems = 25
	maxBatchWriteBytes = 16 << 20
)

// maxUnprocessedRounds bounds how often one delivery re-sends the requests a BatchWriteItem
// left unprocessed; past it the rest waits at the head of the queue for the next delivery.
const maxUnprocessedRounds = 5

// deliver applies one direction's changes in order, each once its lag has passed and while
// both regions are up, as many at a time as one BatchWriteItem takes (dueBatch).
func (g *GlobalTables) deliver(p *pair) {
	defer g.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		g.mu.Lock()
		batch, wait := p.dueBatch(time.Now())
		p.inflight = len(batch)
		g.mu.Unlock()
		if len(batch) > 0 {
			if !g.isUp(p.from) || !g.isUp(p.to) {
				g.mu.Lock()
				p.inflight = 0
				g.mu.Unlock()
				wait = 20 * time.Millisecond // a lost region neither sends nor receives
			} else {
				done, err := g.applyBatch(p, batch)
				g.mu.Lock()
				p.dequeue(batch, done)
				g.mu.Unlock()
				if err == nil {
					continue
				}
				wait = 50 * time.Millisecond // the backend hiccupped: try what is left again
			}
		}
		timer.Reset(wait)
		select {
		case <-g.stop:
			return
		case <-p.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// dueBatch returns a copy of the changes at the head of p's queue that are due at now, as many
// as one BatchWriteItem takes: up to 25 and 16 MB, of one table (a missing table fails the
// whole request, and is then treated as for a single change), and each item once (
// BatchWriteItem refuses two requests for one key, and a later write of an item must not
// overtake an earlier). With none due, it returns how long until the head is. g.mu is held.
func (p *pair) dueBatch(now time.Time) ([]change, time.Duration) {
	if len(p.queue) == 0 {
		return nil, time.Hour
	}
	if wait := p.queue[0].due.Sub(now); wait > 0 {
		return nil, wait
	}
	n, size := 0, 0
	items := map[string]bool{}
	for _, c := range p.queue {
		ref := itemRef{table: c.table, key: c.key}
		sz := requestSize(c)
		if n == maxBatchWriteItems || c.due.After(now) || c.table != p.queue[0].table || items[ref.id()] ||
			(n > 0 && size+sz > maxBatchWriteBytes) {
			break
		}
		items[ref.id()] = true
		n++
		size += sz
	}
	return append([]change(nil), p.queue[:n]...), 0
}

// requestSize is about what a change adds to a BatchWriteItem request.
func requestSize(c change) int { return len(c.table) + len(c.key) + len(c.image) + 64 }

// dequeue removes a batch taken from the head of p's queue (dueBatch) but for the changes not
// done, which stay at the head in their order. g.mu is held.
func (p *pair) dequeue(batch []change, done []bool) {
	j := len(batch)
	for i := len(batch) - 1; i >= 0; i-- {
		if !done[i] {
			j--
			p.queue[j] = batch[i]
		}
	}
	p.queue = p.queue[j:]
	p.inflight = 0
}

// applyBatch writes a batch of changes (distinct items of one table) into p.to's replica with
// BatchWriteItem, but for those whose item that replica holds a newer write of, which it
// discards as conflicts. The items' locks are held from the check to the recorded result, so no
// local write slips in between. It reports which changes are done (applied or discarded); on an
// error the others have to be tried again.
func (g *GlobalTables) applyBatch(p *pair, batch []change) ([]bool, error) {
	refs := make([]itemRef, len(batch))
	for i, c := range batch {
		refs[i] = itemRef{table: c.table, key: c.key}
	}
	unlock := g.lock(p.to, refs)
	defer unlock()
	done := make([]bool, len(batch))
	lat := make([]time.Duration, len(batch))
	g.mu.Lock()
	for i, c := range batch {
		lat[i] = time.Since(c.written)
		if cur, seen := g.meta[p.to][refs[i].id()]; seen && !c.ver.newer(cur) {
			done[i] = true
			p.conflicts++
			p.noteLatency(lat[i])
		}
	}
	g.mu.Unlock()
	for round := 0; slices.Contains(done, false); round++ {
		if round == maxUnprocessedRounds {
			return done, fmt.Errorf("BatchWriteItem in %s: items still unprocessed after %d rounds", p.to, round)
		}
		if round > 0 {
			time.Sleep(time.Duration(round) * 10 * time.Millisecond) // the backend is busy: back off
		}
		left, err := g.batchWrite(p, batch, done)
		if err != nil {
			return done, err
		}
		g.mu.Lock()
		for i, ref := range refs {
			if done[i] || left[ref.id()] {
				continue
			}
			done[i] = true
			g.meta[p.to][ref.id()] = batch[i].ver
			p.replicated++
			p.noteLatency(lat[i])
		}
		g.mu.Unlock()
	}
	return done, nil
}

// noteLatency records one change's replication latency. g.mu is held.
func (p *pair) noteLatency(lat time.Duration) {
	p.lastLat = lat
	p.maxLat = max(p.maxLat, lat)
}

// batchWrite sends the changes of batch not yet done to p.to's replica in one BatchWriteItem
// and returns the items it left unprocessed (by itemRef.id()).
func (g *GlobalTables) batchWrite(p *pair, batch []change, done []bool) (map[string]bool, error) {
	var reqs []map[string]any
	sent := map[string]bool{}
	for i, c := range batch {
		switch {
		case done[i]:
			continue
		case c.image == nil:
			reqs = append(reqs, map[string]any{"DeleteRequest": map[string]any{"Key": c.key}})
		default:
			reqs = append(reqs, map[string]any{"PutRequest": map[string]any{"Item": c.image}})
		}
		sent[itemRef{table: c.table, key: c.key}.id()] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.mu.Lock()
	p.writes++
	g.mu.Unlock()
	_, out, err := g.call(ctx, p.to, "BatchWriteItem", map[string]any{"RequestItems": map[string]any{batch[0].table: reqs}})
	// A table deleted meanwhile (everywhere) has nothing to replicate into.
	if err != nil && strings.Contains(err.Error(), "ResourceNotFoundException") {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	left, err := unprocessed(out, batch[0].key)
	if err != nil {
		return nil, fmt.Errorf("BatchWriteItem in %s: %w", p.to, err)
	}
	for id := range left {
		if !sent[id] {
			// Which of ours it stands for is unknown: count none of them as applied.
			return nil, fmt.Errorf("BatchWriteItem in %s: unprocessed item %s was not sent", p.to, id)
		}
	}
	return left, nil
}

// writeRequest is one entry of a BatchWriteItem request, or of its UnprocessedItems.
type writeRequest struct {
	PutRequest    *struct{ Item map[string]json.RawMessage }
	DeleteRequest *struct{ Key map[string]json.RawMessage }
}

// unprocessed reads the items a BatchWriteItem answer left unprocessed, by itemRef.id(); key is
// the key of any item of the request, for the names of the table's key attributes.
func unprocessed(answer []byte, key json.RawMessage) (map[string]bool, error) {
	var res struct {
		UnprocessedItems map[string][]writeRequest
	}
	if err := json.Unmarshal(answer, &res); err != nil {
		return nil, err
	}
	if len(res.UnprocessedItems) == 0 {
		return nil, nil
	}
	var names map[string]json.RawMessage
	if err := json.Unmarshal(key, &names); err != nil {
		return nil, err
	}
	var refs []itemRef
	for table, reqs := range res.UnprocessedItems {
		for _, r := range reqs {
			k := map[string]json.RawMessage{}
			switch {
			case r.PutRequest != nil:
				for n := range names {
					k[n] = r.PutRequest.Item[n]
				}
			case r.DeleteRequest != nil:
				k = r.DeleteRequest.Key
			}
			if err := addKey(&refs, table, k); err != nil {
				return nil, fmt.Errorf("unprocessed item: %w", err)
			}
		}
	}
	left := map[string]bool{}
	for _, r := range refs {
		left[r.id()] = true
	}
	return left, nil
}

// lock takes the stripes of refs in region in a fixed order and returns their unlock.
func (g *GlobalTables) lock(region string, refs []itemRef) func() {
	st := g.stripes[region]
	idx := make([]int, 0, len(refs))
	seen := map[int]bool{}
	for _, r := range refs {
		h := fnv.New32a()
		_, _ = h.Write([]byte(r.id()))
		i := int(h.Sum32() % uint32(len(st)))
		if !seen[i] {
			seen[i] = true
			idx = append(idx, i)
		}
	}
	sort.Ints(idx)
	for _, i := range idx {
		st[i].Lock()
	}
	return func() {
		for j := len(idx) - 1; j >= 0; j-- {
			st[idx[j]].Unlock()
		}
	}
}

// touched lists the items a write request changes.
func (g *GlobalTables) touched(ctx context.Context, region, op string, body []byte) ([]itemRef, error) {
	type put struct {
		TableName string
		Item      map[string]json.RawMessage
	}
	type keyed struct {
		TableName string
		Key       map[string]json.RawMessage
	}
	var refs []itemRef
	addPut := func(p put) error {
		names, err := g.keySchema(ctx, region, p.TableName)
		if err != nil {
			return err
		}
		k := map[string]json.RawMessage{}
		for _, n := range names {
			v, ok := p.Item[n]
			if !ok {
				return fmt.Errorf("item lacks key attribute %s", n)
			}
			k[n] = v
		}
		return addKey(&refs, p.TableName, k)
	}
	switch op {
	case "PutItem":
		var p put
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, err
		}
		if err := addPut(p); err != nil {
			return nil, err
		}
	case "UpdateItem", "DeleteItem":
		var k keyed
		if err := json.Unmarshal(body, &k); err != nil {
			return nil, err
		}
		if err := addKey(&refs, k.TableName, k.Key); err != nil {
			return nil, err
		}
	case "BatchWriteItem":
		var b struct {
			RequestItems map[string][]writeRequest
		}
		if err := json.Unmarshal(body, &b); err != nil {
			return nil, err
		}
		for table, reqs := range b.RequestItems {
			for _, rq := range reqs {
				var err error
				switch {
				case rq.PutRequest != nil:
					err = addPut(put{TableName: table, Item: rq.PutRequest.Item})
				case rq.DeleteRequest != nil:
					err = addKey(&refs, table, rq.DeleteRequest.Key)
				}
				if err != nil {
					return nil, err
				}
			}
		}
	case "TransactWriteItems":
		var t struct {
			TransactItems []struct {
				Put    *put
				Update *keyed
				Delete *keyed
			}
		}
		if err := json.Unmarshal(body, &t); err != nil {
			return nil, err
		}
		for _, it := range t.TransactItems {
			var err error
			switch {
			case it.Put != nil:
				err = addPut(*it.Put)
			case it.Update != nil:
				err = addKey(&refs, it.Update.TableName, it.Update.Key)
			case it.Delete != nil:
				err = addKey(&refs, it.Delete.TableName, it.Delete.Key)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	if len(refs) == 0 {
		return nil, errors.New("no items")
	}
	return refs, nil
}

// addKey appends an item reference with its key in canonical JSON (sorted attribute names).
func addKey(refs *[]itemRef, table string, key map[string]json.RawMessage) error {
	if table == "" || len(key) == 0 {
		return errors.New("missing table or key")
	}
	canon := map[string]any{}
	for k, v := range key {
		var x any
		if err := json.Unmarshal(v, &x); err != nil {
			return err
		}
		canon[k] = x
	}
	b, err := json.Marshal(canon)
	if err != nil {
		return err
	}
	*refs = append(*refs, itemRef{table: table, key: b})
	return nil
}

// keySchema returns a table's key attribute names (cached; CreateTable/DeleteTable forget it).
func (g *GlobalTables) keySchema(ctx context.Context, region, table string) ([]string, error) {
	g.mu.Lock()
	names, ok := g.schemas[region+"|"+table]
	g.mu.Unlock()
	if ok {
		return names, nil
	}
	_, out, err := g.call(ctx, region, "DescribeTable", map[string]string{"TableName": table})
	if err != nil {
		return nil, err
	}
	var d struct {
		Table struct {
			KeySchema []struct{ AttributeName string }
		}
	}
	if err := json.Unmarshal(out, &d); err != nil {
		return nil, err
	}
	for _, k := range d.Table.KeySchema {
		names = append(names, k.AttributeName)
	}
	g.mu.Lock()
	g.schemas[region+"|"+table] = names
	g.mu.Unlock()
	return names, nil
}

// writeDDBError answers in DynamoDB's JSON 1.0 error shape.
func writeDDBError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"__type":"com.amazonaws.dynamodb.v20120810#%s","message":%q}`, code, msg)
}
