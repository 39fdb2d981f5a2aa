package replicate

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/envdr/envdr/envelope"
)

// Page is one page of a parallel-scan segment.
type Page struct {
	// Records decoded from the page, in table order.
	Records []*envelope.Record
	// Bad holds the IDs (or "?") and errors of items that did not decode; the scan goes on.
	Bad []BadItem
	// Next is the ID to resume after ("" at the end of the segment). The table's only key is
	// the id, so one string is a complete, persistable resume point.
	Next string
}

// BadItem is an item of the table that is not a valid record.
type BadItem struct {
	ID  string
	Err error
}

// ScanPage reads one page (at most limit items; 0: DynamoDB's 1 MB default) of a parallel-scan
// segment, starting after the record ID after ("" from the start). Resumable scans (rewrap's
// checkpoint) persist Page.Next and pass it back as after.
func (s *Store) ScanPage(ctx context.Context, segment, total int, after string, limit int32) (*Page, error) {
	// Only header items come back: a segment's region items belong to records whose headers
	// hash to other segments, and each record's region items are read with its header anyway
	// (records). DynamoDB still reads them (Limit counts them), but neither sends nor decodes
	// them: three of every four items with three regions (issue 25, the cost per record).
	in := &dynamodb.ScanInput{TableName: aws.String(s.Table), ConsistentRead: aws.Bool(true),
		FilterExpression:         aws.String("attribute_not_exists(#record)"),
		ExpressionAttributeNames: map[string]string{"#record": attrRecord}}
	if total > 1 {
		in.Segment, in.TotalSegments = aws.Int32(int32(segment)), aws.Int32(int32(total))
	}
	if limit > 0 {
		in.Limit = aws.Int32(limit)
	}
	if after != "" {
		in.ExclusiveStartKey = idKey(after)
	}
	out, err := s.db.Scan(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("region %s: scan table %s (segment %d of %d): %w", s.Region, s.Table, segment, total, err)
	}
	recs, bad, err := s.records(ctx, out.Items)
	if err != nil {
		return nil, err
	}
	p := &Page{Records: recs, Bad: bad}
	if k := itemID(out.LastEvaluatedKey); k != "" {
		p.Next = k
	} else if len(out.LastEvaluatedKey) > 0 {
		return nil, fmt.Errorf("region %s: scan table %s: unexpected key schema in LastEvaluatedKey (want the string attribute %q only)", s.Region, s.Table, attrID)
	}
	return p, nil
}

// ApproxCount returns DynamoDB's approximate item count of the table (updated about every six
// hours in AWS; exact on DynamoDB Local), for progress bars only.
func (s *Store) ApproxCount(ctx context.Context, db interface {
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
}) (int64, error) {
	out, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.Table)})
	if err != nil {
		return 0, fmt.Errorf("region %s: describe table %s: %w", s.Region, s.Table, err)
	}
	return aws.ToInt64(out.Table.ItemCount), nil
}
