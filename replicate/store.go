package replicate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/envdr/envdr/envelope"
)

// DynamoAPI is the part of the DynamoDB client the record store uses.
type DynamoAPI interface {
	GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

var _ DynamoAPI = (*dynamodb.Client)(nil)

// ErrRecordNotFound: no record with that ID in the table.
var ErrRecordNotFound = errors.New("record not found")

// ErrTooManyConflicts: a conditional write kept losing to other writers.
var ErrTooManyConflicts = errors.New("record kept changing under concurrent writers")

// Store reads and writes multi-wrapped records in one region's replica of the table. Every
// write is conditional on the record's version, so concurrent workers and redeliveries merge
// instead of overwriting each other.
type Store struct {
	Table  string
	Region string
	db     DynamoAPI
	// OnConflict, optional, is called for each lost conditional write (metrics).
	OnConflict func()
}

// NewStore returns the store of table in region, over db (that region's client).
func NewStore(table, region string, db DynamoAPI) *Store {
	return &Store{Table: table, Region: region, db: db}
}

// Attribute names of the record item; see docs/FORMAT.md.
const (
	attrID         = "id"
	attrVersion    = "version"
	attrContext    = "context"
	attrCommitment = "commitment"
	attrSource     = "source_region"
	attrSourceKey  = "source_key_arn"
	attrCreatedAt  = "created_at"
	attrRegions    = "regions"
	attrKeyARN     = "key_arn"
	attrWrapped    = "wrapped_dek"
	attrWrappedAt  = "wrapped_at"
	attrVerifiedAt = "verified_at"
	attrLastError  = "last_error"
	attrLastErrAt  = "last_error_at"
)

// Get reads a record with a strongly consistent read.
func (s *Store) Get(ctx context.Context, id string) (*envelope.Record, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.Table), ConsistentRead: aws.Bool(true),
		Key: map[string]ddbtypes.AttributeValue{attrID: &ddbtypes.AttributeValueMemberS{Value: id}},
	})
	if err != nil {
		return nil, fmt.Errorf("region %s: read record %s from table %s: %w", s.Region, id, s.Table, err)
	}
	if len(out.Item) == 0 {
		return nil, fmt.Errorf("region %s: record %s in table %s: %w", s.Region, id, s.Table, ErrRecordNotFound)
	}
	rec, err := decodeItem(out.Item)
	if err != nil {
		return nil, fmt.Errorf("region %s: record %s in table %s: %w", s.Region, id, s.Table, err)
	}
	return rec, nil
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

func (s *Store) update(ctx context.Context, id string, known *envelope.Record, haveKnown bool, mutate func(cur *envelope.Record) (*envelope.Record, error)) (*envelope.Record, error) {
	for attempt := 0; attempt < 16; attempt++ {
		var (
			cur *envelope.Record
			err error
		)
		if attempt == 0 && haveKnown {
			if known != nil {
				cur = known.Clone()
			}
		} else if cur, err = s.Get(ctx, id); err != nil && !errors.Is(err, ErrRecordNotFound) {
			return nil, err
		}
		next, err := mutate(cur)
		if err != nil {
			return nil, err
		}
		if next == nil {
			return cur, nil
		}
		in := &dynamodb.PutItemInput{TableName: aws.String(s.Table)}
		if cur == nil {
			next.Version = 1
			in.ConditionExpression = aws.String("attribute_not_exists(#id)")
			in.ExpressionAttributeNames = map[string]string{"#id": attrID}
		} else {
			next.Version = cur.Version + 1
			in.ConditionExpression = aws.String("#v = :v")
			in.ExpressionAttributeNames = map[string]string{"#v": attrVersion}
			in.ExpressionAttributeValues = map[string]ddbtypes.AttributeValue{
				":v": &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(cur.Version, 10)}}
		}
		in.Item = encodeItem(next)
		_, err = s.db.PutItem(ctx, in)
		if err == nil {
			return next, nil
		}
		var ccf *ddbtypes.ConditionalCheckFailedException
		if !errors.As(err, &ccf) {
			return nil, fmt.Errorf("region %s: write record %s to table %s: %w", s.Region, id, s.Table, err)
		}
		if s.OnConflict != nil {
			s.OnConflict()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt*attempt) * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("region %s: record %s: %w", s.Region, id, ErrTooManyConflicts)
}

// Scan streams every record of one parallel-scan segment to fn, page by page (constant memory).
func (s *Store) Scan(ctx context.Context, segment, total int, fn func(*envelope.Record) error) error {
	var start map[string]ddbtypes.AttributeValue
	for {
		in := &dynamodb.ScanInput{TableName: aws.String(s.Table), ExclusiveStartKey: start, ConsistentRead: aws.Bool(true)}
		if total > 1 {
			in.Segment, in.TotalSegments = aws.Int32(int32(segment)), aws.Int32(int32(total))
		}
		out, err := s.db.Scan(ctx, in)
		if err != nil {
			return fmt.Errorf("region %s: scan table %s: %w", s.Region, s.Table, err)
		}
		for _, item := range out.Items {
			rec, err := decodeItem(item)
			if err != nil {
				id := "?"
				if v, ok := item[attrID].(*ddbtypes.AttributeValueMemberS); ok {
					id = v.Value
				}
				return fmt.Errorf("region %s: record %s in table %s: %w", s.Region, id, s.Table, err)
			}
			if err := fn(rec); err != nil {
				return err
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			return nil
		}
		start = out.LastEvaluatedKey
	}
}

func encodeTime(t time.Time) ddbtypes.AttributeValue {
	return &ddbtypes.AttributeValueMemberS{Value: t.UTC().Format(time.RFC3339Nano)}
}

func encodeItem(r *envelope.Record) map[string]ddbtypes.AttributeValue {
	ctx := map[string]ddbtypes.AttributeValue{}
	for k, v := range r.Context.Map() {
		ctx[k] = &ddbtypes.AttributeValueMemberS{Value: v}
	}
	regs := map[string]ddbtypes.AttributeValue{}
	for name, w := range r.Regions {
		m := map[string]ddbtypes.AttributeValue{}
		if w.KeyARN != "" {
			m[attrKeyARN] = &ddbtypes.AttributeValueMemberS{Value: w.KeyARN}
		}
		if len(w.Wrapped) > 0 {
			m[attrWrapped] = &ddbtypes.AttributeValueMemberB{Value: w.Wrapped}
		}
		if !w.WrappedAt.IsZero() {
			m[attrWrappedAt] = encodeTime(w.WrappedAt)
		}
		if !w.VerifiedAt.IsZero() {
			m[attrVerifiedAt] = encodeTime(w.VerifiedAt)
		}
		if w.LastError != "" {
			m[attrLastError] = &ddbtypes.AttributeValueMemberS{Value: w.LastError}
		}
		if !w.LastErrorAt.IsZero() {
			m[attrLastErrAt] = encodeTime(w.LastErrorAt)
		}
		regs[name] = &ddbtypes.AttributeValueMemberM{Value: m}
	}
	return map[string]ddbtypes.AttributeValue{
		attrID:         &ddbtypes.AttributeValueMemberS{Value: r.ID},
		attrVersion:    &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(r.Version, 10)},
		attrContext:    &ddbtypes.AttributeValueMemberM{Value: ctx},
		attrCommitment: &ddbtypes.AttributeValueMemberB{Value: r.Commitment},
		attrSource:     &ddbtypes.AttributeValueMemberS{Value: r.SourceRegion},
		attrSourceKey:  &ddbtypes.AttributeValueMemberS{Value: r.SourceKeyARN},
		attrCreatedAt:  encodeTime(r.CreatedAt),
		attrRegions:    &ddbtypes.AttributeValueMemberM{Value: regs},
	}
}

// itemError names the attribute of a malformed item.
func itemError(attr, want string) error {
	return fmt.Errorf("%w: attribute %s: want %s", envelope.ErrBadRecord, attr, want)
}

func getS(m map[string]ddbtypes.AttributeValue, k string, required bool) (string, error) {
	v, ok := m[k]
	if !ok {
		if required {
			return "", itemError(k, "a string (missing)")
		}
		return "", nil
	}
	s, ok := v.(*ddbtypes.AttributeValueMemberS)
	if !ok {
		return "", itemError(k, "a string")
	}
	return s.Value, nil
}

func getTime(m map[string]ddbtypes.AttributeValue, k string, required bool) (time.Time, error) {
	s, err := getS(m, k, required)
	if err != nil || s == "" {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, itemError(k, "an RFC 3339 time")
	}
	return t, nil
}

func getB(m map[string]ddbtypes.AttributeValue, k string) ([]byte, error) {
	v, ok := m[k]
	if !ok {
		return nil, nil
	}
	b, ok := v.(*ddbtypes.AttributeValueMemberB)
	if !ok {
		return nil, itemError(k, "binary")
	}
	return b.Value, nil
}

func decodeItem(item map[string]ddbtypes.AttributeValue) (*envelope.Record, error) {
	var (
		r   envelope.Record
		err error
	)
	if r.ID, err = getS(item, attrID, true); err != nil {
		return nil, err
	}
	vn, ok := item[attrVersion].(*ddbtypes.AttributeValueMemberN)
	if !ok {
		return nil, itemError(attrVersion, "a number")
	}
	if r.Version, err = strconv.ParseInt(vn.Value, 10, 64); err != nil {
		return nil, itemError(attrVersion, "a whole number")
	}
	cm, ok := item[attrContext].(*ddbtypes.AttributeValueMemberM)
	if !ok {
		return nil, itemError(attrContext, "a map")
	}
	ctx := map[string]string{}
	for k, v := range cm.Value {
		s, ok := v.(*ddbtypes.AttributeValueMemberS)
		if !ok {
			return nil, itemError(attrContext+"."+k, "a string")
		}
		ctx[k] = s.Value
	}
	if r.Context, err = envelope.ParseContext(ctx); err != nil {
		return nil, err
	}
	if r.Commitment, err = getB(item, attrCommitment); err != nil {
		return nil, err
	}
	if r.SourceRegion, err = getS(item, attrSource, true); err != nil {
		return nil, err
	}
	if r.SourceKeyARN, err = getS(item, attrSourceKey, false); err != nil {
		return nil, err
	}
	if r.CreatedAt, err = getTime(item, attrCreatedAt, false); err != nil {
		return nil, err
	}
	rm, ok := item[attrRegions].(*ddbtypes.AttributeValueMemberM)
	if !ok {
		return nil, itemError(attrRegions, "a map")
	}
	r.Regions = make(map[string]*envelope.RegionWrap, len(rm.Value))
	names := make([]string, 0, len(rm.Value))
	for name := range rm.Value {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		wm, ok := rm.Value[name].(*ddbtypes.AttributeValueMemberM)
		if !ok {
			return nil, itemError(attrRegions+"."+name, "a map")
		}
		w := &envelope.RegionWrap{}
		if w.KeyARN, err = getS(wm.Value, attrKeyARN, false); err != nil {
			return nil, err
		}
		if w.Wrapped, err = getB(wm.Value, attrWrapped); err != nil {
			return nil, err
		}
		if w.WrappedAt, err = getTime(wm.Value, attrWrappedAt, false); err != nil {
			return nil, err
		}
		if w.VerifiedAt, err = getTime(wm.Value, attrVerifiedAt, false); err != nil {
			return nil, err
		}
		if w.LastError, err = getS(wm.Value, attrLastError, false); err != nil {
			return nil, err
		}
		if w.LastErrorAt, err = getTime(wm.Value, attrLastErrAt, false); err != nil {
			return nil, err
		}
		r.Regions[name] = w
	}
	return &r, nil
}
