package recovery

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/replicate"
)

// itemCounter answers DescribeTable with a fixed item count.
type itemCounter int64

func (n itemCounter) DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	return &dynamodb.DescribeTableOutput{Table: &ddbtypes.TableDescription{ItemCount: aws.Int64(int64(n))}}, nil
}

// The case: 82 records in three regions are 328 items; progress must count 82.
func TestApproxRecordsCountsRecordsNotItems(t *testing.T) {
	store := replicate.NewStore("t", "us-east-1", nil, []string{"us-east-1", "eu-west-1", "ap-southeast-2"})
	n, err := ApproxRecords(context.Background(), store, itemCounter(328), 3)
	require.NoError(t, err)
	require.EqualValues(t, 82, n)
}

func TestProgressLineShowsTotalAndTimeLeft(t *testing.T) {
	require.Equal(t, "29 of about 82 records (35%, 29/s), about 2s left", progressLine(29, 82, time.Second))
	require.Equal(t, "90 records (90/s)", progressLine(90, 82, time.Second), "past the estimate: count and rate only")
	require.Equal(t, "5 records (5/s)", progressLine(5, 0, time.Second))

	var out bytes.Buffer
	p := NewProgress(&out, "verify", false)
	p.every = 0
	p.SetTotal(10)
	p.Add(5)
	p.Finish()
	require.Contains(t, out.String(), "verify: 5 of about 10 records (50%")
	require.Contains(t, out.String(), "left")
	require.Contains(t, out.String(), "verify: 5 records done in")
}
