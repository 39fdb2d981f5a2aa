package replicate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/sethvargo/go-retry"

	"github.com/envdr/envdr/envelope"
)

// DynamoAPI is the part of the DynamoDB client the record store uses.
type DynamoAPI interface {
	GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	BatchGetItem(context.Context, *dynamodb.BatchGetItemInput, ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
	PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	TransactWriteItems(context.Context, *dynamodb.TransactWriteItemsInput, ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
	Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

var _ DynamoAPI = (*dynamodb.Client)(nil)

// ErrRecordNotFound: no record with that ID in the table.
var ErrRecordNotFound = errors.New("record not found")

// ErrTooManyConflicts: a conditional write kept losing to other writers.
var ErrTooManyConflicts = errors.New("record kept changing under concurrent writers")

// Store reads and writes multi-wrapped records in one region's replica of the table.
//
// Layout (docs/FORMAT.md, "Records in DynamoDB"): a record is one header item (id = the
// envelope ID: context, commitment, source; written once, never changed) and one item per
// region (id = ENVELOPE_ID#REGION: that region's wrap, verified_at, last_error). Global tables
// resolve concurrent writes per item by last writer wins, so a writer touches only the items
// whose content it changes: verifying region X rewrites X's item alone, and cannot undo a wrap
// that another region's writer added meanwhile. Each item carries its own version, and every
// write is conditional on it, so concurrent workers and redeliveries in one region merge
// instead of overwriting each other.
//
// Records of the first layout (one item with a regions map) are still read; a region's own
// item, once written, takes precedence over its entry in that map.
type Store struct {
	Table  string
	Region string
	db     DynamoAPI
	// names are the regions whose items a read looks for (besides those a legacy item lists).
	names []string
	// OnConflict, optional, is called for each lost conditional write (metrics).
	OnConflict func()
	// reads coalesces concurrent Gets into batch reads; batchWrites, with a write linger,
	// different records' conditional writes into one transaction.
	reads       coalescer[*readReq]
	batchWrites coalescer[*writeReq]
}

// NewStore returns the store of table in region, over db (that region's client). regions are
// the configured regions, whose wraps a read gathers.
func NewStore(table, region string, db DynamoAPI, regions []string) *Store {
	names := append([]string(nil), regions...)
	if !slices.Contains(names, region) {
		names = append(names, region)
	}
	sort.Strings(names)
	s := &Store{Table: table, Region: region, db: db, names: names}
	s.initReads()
	s.initWrites()
	return s
}

// Attribute names used outside the item types' tags (headerItem, regionItem; docs/FORMAT.md).
const (
	attrID      = "id"
	attrVersion = "version"
	attrContext = "context"
	attrSource  = "source_region"
	attrRecord  = "record" // a region item's envelope ID; header items have none
)

// regionSep joins an envelope ID and a region name into a region item's id. Envelope IDs are
// hex, so no header id contains it.
const regionSep = "#"

func regionItemID(id, region string) string { return id + regionSep + region }

// Get reads a record (its header and every region's item) with strongly consistent reads,
// batched with the other Gets under way at the same time.
func (s *Store) Get(ctx context.Context, id string) (*envelope.Record, error) {
	r := s.get(ctx, id)
	if r.err != nil && !r.decoded {
		return nil, fmt.Errorf("region %s: read record %s from table %s: %w", s.Region, id, s.Table, r.err)
	}
	if r.err != nil {
		return nil, fmt.Errorf("region %s: record %s in table %s: %w", s.Region, id, s.Table, r.err)
	}
	if r.rec == nil {
		return nil, fmt.Errorf("region %s: record %s in table %s: %w", s.Region, id, s.Table, ErrRecordNotFound)
	}
	return r.rec, nil
}

type assembled struct {
	rec     *envelope.Record
	err     error
	decoded bool // err is the record's decoding error, not the read's
}

// assemble reads the header and region items of ids (BatchGetItem, consistent) and decodes
// each record.
func (s *Store) assemble(ctx context.Context, ids []string) (map[string]assembled, error) {
	keys := make([]map[string]ddbtypes.AttributeValue, 0, len(ids)*(1+len(s.names)))
	for _, id := range ids {
		keys = append(keys, idKey(id))
		for _, n := range s.names {
			keys = append(keys, idKey(regionItemID(id, n)))
		}
	}
	items, err := s.batchGet(ctx, keys)
	if err != nil {
		return nil, err
	}
	return s.decode(ids, items, nil), nil
}

// decode builds records from fetched items; headers may hold items already in hand (a scan).
func (s *Store) decode(ids []string, items map[string]map[string]ddbtypes.AttributeValue, headers map[string]map[string]ddbtypes.AttributeValue) map[string]assembled {
	out := make(map[string]assembled, len(ids))
	for _, id := range ids {
		h := headers[id]
		if h == nil {
			h = items[id]
		}
		if h == nil {
			out[id] = assembled{}
			continue
		}
		rec, err := decodeHeader(h)
		if err == nil {
			for _, n := range s.names {
				it := items[regionItemID(id, n)]
				if it == nil {
					continue
				}
				w, err2 := decodeRegionItem(it)
				if err2 != nil {
					err = fmt.Errorf("region item %s: %w", n, err2)
					break
				}
				rec.Regions[n] = w
				rec.Version = max(rec.Version, w.Version)
			}
		}
		out[id] = assembled{rec: rec, err: err, decoded: err != nil}
	}
	return out
}

// batchGet fetches items by key, 100 keys a call, retrying unprocessed keys.
func (s *Store) batchGet(ctx context.Context, keys []map[string]ddbtypes.AttributeValue) (map[string]map[string]ddbtypes.AttributeValue, error) {
	out := map[string]map[string]ddbtypes.AttributeValue{}
	for len(keys) > 0 {
		n := min(len(keys), 100)
		batch := keys[:n]
		keys = keys[n:]
		// Unprocessed keys (the table's read capacity) are asked for again, up to 16 times.
		b := retry.WithMaxRetries(16, retry.WithCappedDuration(200*time.Millisecond, retry.NewExponential(10*time.Millisecond)))
		err := retry.Do(ctx, b, func(ctx context.Context) error {
			res, err := s.db.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]ddbtypes.KeysAndAttributes{
				s.Table: {Keys: batch, ConsistentRead: aws.Bool(true)}}})
			if err != nil {
				return err
			}
			for _, it := range res.Responses[s.Table] {
				if id := itemID(it); id != "" {
					out[id] = it
				}
			}
			if batch = res.UnprocessedKeys[s.Table].Keys; len(batch) > 0 {
				return retry.RetryableError(fmt.Errorf("batch read of table %s: %d keys left unprocessed", s.Table, len(batch)))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Update applies mutate to the current record (nil when there is none) and writes the result
// conditionally on the version it read, retrying on conflict with a fresh read. mutate must be a
// pure function of its input (it may run several times) and return nil to write nothing.
func (s *Store) Update(ctx context.Context, id string, mutate func(cur *envelope.Record) (*envelope.Record, error)) (*envelope.Record, error) {
	return s.update(ctx, id, nil, false, mutate)
}

// UpdateFrom is Update starting from cur, a record the caller has just read (nil: known to be
// absent), which saves a read when nobody else wrote in between; a conflict reads afresh.
func (s *Store) UpdateFrom(ctx context.Context, cur *envelope.Record, id string, mutate func(cur *envelope.Record) (*envelope.Record, error)) (*envelope.Record, error) {
	return s.update(ctx, id, cur, true, mutate)
}

// errConflict marks a lost conditional write inside update's retry loop.
var errConflict = errors.New("conditional write lost")

func (s *Store) update(ctx context.Context, id string, known *envelope.Record, haveKnown bool, mutate func(cur *envelope.Record) (*envelope.Record, error)) (*envelope.Record, error) {
	var result *envelope.Record
	first := true
	// 16 tries; a lost write waits a few milliseconds (growing, jittered) before a fresh read.
	b := retry.WithMaxRetries(15, retry.WithJitterPercent(50, retry.WithCappedDuration(200*time.Millisecond, retry.NewExponential(time.Millisecond))))
	err := retry.Do(ctx, b, func(ctx context.Context) error {
		var (
			cur *envelope.Record
			err error
		)
		if first && haveKnown {
			if known != nil {
				cur = known.Clone()
			}
		} else if cur, err = s.Get(ctx, id); err != nil && !errors.Is(err, ErrRecordNotFound) {
			return err
		}
		first = false
		next, err := mutate(cur)
		if err != nil {
			return err
		}
		if next == nil {
			result = cur
			return nil
		}
		writes, err := s.writes(cur, next)
		if err != nil {
			return err
		}
		if len(writes) == 0 {
			result = cur
			return nil
		}
		if err = s.submit(ctx, id, writes); err == nil {
			result = next
			return nil
		}
		if !isConditionFailure(err) {
			return fmt.Errorf("region %s: write record %s to table %s: %w", s.Region, id, s.Table, err)
		}
		if s.OnConflict != nil {
			s.OnConflict()
		}
		return retry.RetryableError(errConflict)
	})
	if errors.Is(err, errConflict) {
		return nil, fmt.Errorf("region %s: record %s: %w", s.Region, id, ErrTooManyConflicts)
	}
	if err != nil {
		return nil, err
	}
	return result, nil
}

// writes lists the conditional writes that turn cur into next: the header when the record is
// new, a put of each region item whose state changed, and a delete of each region item next
// drops. It sets next's item versions to those the writes will leave, and next.Version to the
// largest (a record's version: it only increases, and every write of the record raises it).
func (s *Store) writes(cur, next *envelope.Record) ([]ddbtypes.TransactWriteItem, error) {
	var out []ddbtypes.TransactWriteItem
	table := aws.String(s.Table)
	put := func(item map[string]ddbtypes.AttributeValue, cond expression.ConditionBuilder) error {
		e, err := expression.NewBuilder().WithCondition(cond).Build()
		if err != nil {
			return fmt.Errorf("record %s: condition: %w", next.ID, err)
		}
		out = append(out, ddbtypes.TransactWriteItem{Put: &ddbtypes.Put{TableName: table, Item: item,
			ConditionExpression: e.Condition(), ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values()}})
		return nil
	}
	if cur == nil {
		next.Version = 1
		h, err := encodeHeader(next)
		if err != nil {
			return nil, err
		}
		if err := put(h, ifAbsent()); err != nil {
			return nil, err
		}
	} else {
		next.Version = cur.Version
		if !sameHeader(cur, next) {
			// Never from envdr's own mutations (the header's fields are immutable, and the merge
			// refuses to change them); a tool that deliberately edits them (tests of tampering)
			// rewrites the header.
			h, err := encodeHeader(next)
			if err != nil {
				return nil, err
			}
			if err := put(h, expression.AttributeExists(expression.Name(attrID))); err != nil {
				return nil, err
			}
		}
	}
	names := make([]string, 0, len(next.Regions))
	for n := range next.Regions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w := next.Regions[n]
		var old *envelope.RegionWrap
		if cur != nil {
			old = cur.Regions[n]
		}
		var version int64
		if old != nil {
			version = old.Version
			if sameRegionState(old, w) {
				w.Version = version
				continue
			}
		}
		w.Version = version + 1
		next.Version = max(next.Version, w.Version)
		item, err := encodeRegionItem(next.ID, n, w)
		if err != nil {
			return nil, err
		}
		cond := ifAbsent()
		if version != 0 {
			cond = ifVersion(version)
		}
		if err := put(item, cond); err != nil {
			return nil, err
		}
	}
	if cur != nil {
		for n, old := range cur.Regions {
			if _, kept := next.Regions[n]; kept || old.Version == 0 {
				continue // a first-layout entry (version 0) has no item of its own to delete
			}
			e, err := expression.NewBuilder().WithCondition(ifVersion(old.Version)).Build()
			if err != nil {
				return nil, fmt.Errorf("record %s: condition: %w", next.ID, err)
			}
			out = append(out, ddbtypes.TransactWriteItem{Delete: &ddbtypes.Delete{TableName: table, Key: idKey(regionItemID(next.ID, n)),
				ConditionExpression: e.Condition(), ExpressionAttributeNames: e.Names(), ExpressionAttributeValues: e.Values()}})
			next.Version = max(next.Version, old.Version+1)
		}
	}
	return out, nil
}

// ifAbsent: the item does not exist yet. ifVersion: the item is at version v.
func ifAbsent() expression.ConditionBuilder {
	return expression.AttributeNotExists(expression.Name(attrID))
}

func ifVersion(v int64) expression.ConditionBuilder {
	return expression.Name(attrVersion).Equal(expression.Value(v))
}

// write performs the writes: one PutItem or DeleteItem, or one transaction so that a region's
// replica never holds half of a change.
func (s *Store) write(ctx context.Context, items []ddbtypes.TransactWriteItem) error {
	if len(items) == 1 {
		if p := items[0].Put; p != nil {
			_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: p.TableName, Item: p.Item,
				ConditionExpression: p.ConditionExpression, ExpressionAttributeNames: p.ExpressionAttributeNames,
				ExpressionAttributeValues: p.ExpressionAttributeValues})
			return err
		}
	}
	_, err := s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
	return err
}

// isConditionFailure reports a lost conditional write, alone or inside a transaction.
func isConditionFailure(err error) bool {
	var ccf *ddbtypes.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return true
	}
	var tce *ddbtypes.TransactionCanceledException
	if errors.As(err, &tce) {
		for _, r := range tce.CancellationReasons {
			if aws.ToString(r.Code) == "ConditionalCheckFailed" || aws.ToString(r.Code) == "TransactionConflict" {
				return true
			}
		}
	}
	var tcf *ddbtypes.TransactionConflictException
	return errors.As(err, &tcf)
}

// sameHeader reports whether two records have the same header item.
func sameHeader(a, b *envelope.Record) bool {
	return a.ID == b.ID && a.Context.Equal(b.Context) && bytes.Equal(a.Commitment, b.Commitment) &&
		a.SourceRegion == b.SourceRegion && a.SourceKeyARN == b.SourceKeyARN && a.CreatedAt.Equal(b.CreatedAt)
}

// sameRegionState reports whether two region states are equal (versions aside).
func sameRegionState(a, b *envelope.RegionWrap) bool {
	return a.KeyARN == b.KeyARN && bytes.Equal(a.Wrapped, b.Wrapped) && a.WrappedAt.Equal(b.WrappedAt) &&
		a.VerifiedAt.Equal(b.VerifiedAt) && a.LastError == b.LastError && a.LastErrorAt.Equal(b.LastErrorAt)
}

// Scan streams every record of one parallel-scan segment to fn, page by page (constant memory).
func (s *Store) Scan(ctx context.Context, segment, total int, fn func(*envelope.Record) error) error {
	after := ""
	for {
		p, err := s.ScanPage(ctx, segment, total, after, 0)
		if err != nil {
			return err
		}
		if len(p.Bad) > 0 {
			return p.Bad[0].Err
		}
		for _, rec := range p.Records {
			if err := fn(rec); err != nil {
				return err
			}
		}
		if p.Next == "" {
			return nil
		}
		after = p.Next
	}
}

// records turns one page of scanned items into records: region items are skipped (each is read
// with its header), and every header's region items are fetched in batches.
func (s *Store) records(ctx context.Context, items []map[string]ddbtypes.AttributeValue) ([]*envelope.Record, []BadItem, error) {
	headers := map[string]map[string]ddbtypes.AttributeValue{}
	var ids []string
	var bad []BadItem
	for _, item := range items {
		id := itemID(item)
		if id == "" {
			bad = append(bad, BadItem{ID: "?", Err: fmt.Errorf("region %s: an item in table %s: %w", s.Region, s.Table, itemError(attrID, "a string"))})
			continue
		}
		if strings.Contains(id, regionSep) {
			continue
		}
		headers[id] = item
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, bad, nil
	}
	keys := make([]map[string]ddbtypes.AttributeValue, 0, len(ids)*len(s.names))
	for _, id := range ids {
		for _, n := range s.names {
			keys = append(keys, idKey(regionItemID(id, n)))
		}
	}
	regionItems, err := s.batchGet(ctx, keys)
	if err != nil {
		return nil, nil, fmt.Errorf("region %s: read region items from table %s: %w", s.Region, s.Table, err)
	}
	got := s.decode(ids, regionItems, headers)
	recs := make([]*envelope.Record, 0, len(ids))
	for _, id := range ids {
		a := got[id]
		if a.err != nil {
			bad = append(bad, BadItem{ID: id, Err: fmt.Errorf("region %s: record %s in table %s: %w", s.Region, id, s.Table, a.err)})
			continue
		}
		recs = append(recs, a.rec)
	}
	return recs, bad, nil
}

// The items' shapes (docs/FORMAT.md, "Records in DynamoDB"), marshaled with attributevalue.
// Times are RFC 3339 strings in UTC with nanoseconds; an unset time, key, wrap or error is left
// out of the item.

// headerItem is a record's header item: what never changes after the record is made. Regions is
// the first layout's per-region map, read only.
type headerItem struct {
	ID           string                 `dynamodbav:"id"`
	Version      *int64                 `dynamodbav:"version"`
	Context      map[string]string      `dynamodbav:"context"`
	Commitment   []byte                 `dynamodbav:"commitment,omitempty"`
	SourceRegion string                 `dynamodbav:"source_region"`
	SourceKeyARN string                 `dynamodbav:"source_key_arn,omitempty"`
	CreatedAt    time.Time              `dynamodbav:"created_at"`
	DataURI      string                 `dynamodbav:"data_uri,omitempty"`
	Regions      map[string]regionState `dynamodbav:"regions,omitempty"`
}

// regionState is a region's state: the attributes of its region item, or an entry of the first
// layout's regions map.
type regionState struct {
	KeyARN      string    `dynamodbav:"key_arn,omitempty"`
	Wrapped     []byte    `dynamodbav:"wrapped_dek,omitempty"`
	WrappedAt   time.Time `dynamodbav:"wrapped_at"`
	VerifiedAt  time.Time `dynamodbav:"verified_at"`
	LastError   string    `dynamodbav:"last_error,omitempty"`
	LastErrorAt time.Time `dynamodbav:"last_error_at"`
}

// regionItem is region Region's item of record Record.
type regionItem struct {
	ID      string `dynamodbav:"id"`
	Record  string `dynamodbav:"record"`
	Region  string `dynamodbav:"region"`
	Version *int64 `dynamodbav:"version"`
	regionState
}

func encodeItemTime(t time.Time) (ddbtypes.AttributeValue, error) {
	return &ddbtypes.AttributeValueMemberS{Value: t.UTC().Format(time.RFC3339Nano)}, nil
}

// marshalItem marshals one of the item types above.
func marshalItem(v any) (map[string]ddbtypes.AttributeValue, error) {
	m, err := attributevalue.MarshalMapWithOptions(v, func(o *attributevalue.EncoderOptions) {
		o.EncodeTime = encodeItemTime
		o.OmitEmptyTime = true
	})
	if err != nil {
		return nil, fmt.Errorf("encode item: %w", err)
	}
	return m, nil
}

// unmarshalItem decodes an item into one of the item types above; a malformed item is
// envelope.ErrBadRecord, with the attribute named.
func unmarshalItem(item map[string]ddbtypes.AttributeValue, v any) error {
	if err := attributevalue.UnmarshalMap(item, v); err != nil {
		return fmt.Errorf("%w: %v", envelope.ErrBadRecord, err)
	}
	return nil
}

// idKey is the table's key of an item (a key, not an item: built directly, as reads and scans
// build one per item they ask for).
func idKey(id string) map[string]ddbtypes.AttributeValue {
	return map[string]ddbtypes.AttributeValue{attrID: &ddbtypes.AttributeValueMemberS{Value: id}}
}

// itemID is an item's id ("" when it has none, or not a string).
func itemID(item map[string]ddbtypes.AttributeValue) string {
	if v, ok := item[attrID].(*ddbtypes.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

func toState(w *envelope.RegionWrap) regionState {
	return regionState{KeyARN: w.KeyARN, Wrapped: w.Wrapped, WrappedAt: w.WrappedAt, VerifiedAt: w.VerifiedAt,
		LastError: w.LastError, LastErrorAt: w.LastErrorAt}
}

func (st regionState) wrap() *envelope.RegionWrap {
	return &envelope.RegionWrap{KeyARN: st.KeyARN, Wrapped: st.Wrapped, WrappedAt: st.WrappedAt, VerifiedAt: st.VerifiedAt,
		LastError: st.LastError, LastErrorAt: st.LastErrorAt}
}

// encodeHeader is a record's header item, at version 1.
func encodeHeader(r *envelope.Record) (map[string]ddbtypes.AttributeValue, error) {
	one := int64(1)
	return marshalItem(headerItem{ID: r.ID, Version: &one, Context: r.Context.Map(), Commitment: r.Commitment,
		SourceRegion: r.SourceRegion, SourceKeyARN: r.SourceKeyARN, CreatedAt: r.CreatedAt, DataURI: r.DataURI})
}

// encodeRegionItem is region's item of record id, at w.Version.
func encodeRegionItem(id, region string, w *envelope.RegionWrap) (map[string]ddbtypes.AttributeValue, error) {
	v := w.Version
	return marshalItem(regionItem{ID: regionItemID(id, region), Record: id, Region: region, Version: &v, regionState: toState(w)})
}

// decodeRegionItem reads a region item, with its version.
func decodeRegionItem(item map[string]ddbtypes.AttributeValue) (*envelope.RegionWrap, error) {
	var it regionItem
	if err := unmarshalItem(item, &it); err != nil {
		return nil, err
	}
	if it.Version == nil {
		return nil, itemError(attrVersion, "a number (missing)")
	}
	w := it.wrap()
	w.Version = *it.Version
	return w, nil
}

// decodeHeader reads a header item, and the regions map of a first-layout item.
func decodeHeader(item map[string]ddbtypes.AttributeValue) (*envelope.Record, error) {
	var h headerItem
	if err := unmarshalItem(item, &h); err != nil {
		return nil, err
	}
	switch {
	case h.ID == "":
		return nil, itemError(attrID, "a string (missing)")
	case h.Version == nil:
		return nil, itemError(attrVersion, "a number (missing)")
	case h.Context == nil:
		return nil, itemError(attrContext, "a map (missing)")
	case h.SourceRegion == "":
		return nil, itemError(attrSource, "a string (missing)")
	}
	ctx, err := envelope.ParseContext(h.Context)
	if err != nil {
		return nil, err
	}
	r := &envelope.Record{ID: h.ID, Version: *h.Version, Context: ctx, Commitment: h.Commitment,
		SourceRegion: h.SourceRegion, SourceKeyARN: h.SourceKeyARN, CreatedAt: h.CreatedAt, DataURI: h.DataURI,
		Regions: make(map[string]*envelope.RegionWrap, len(h.Regions))}
	for name, st := range h.Regions {
		r.Regions[name] = st.wrap() // Version 0: the region has no item of its own yet
	}
	return r, nil
}

// itemError names the attribute of a malformed item.
func itemError(attr, want string) error {
	return fmt.Errorf("%w: attribute %s: want %s", envelope.ErrBadRecord, attr, want)
}
