package regions_test

import (
	"context"
	"net"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// The SDK's log lines go through zap (JSON, source=aws-sdk): with debug on, each retry of a
// call to an unreachable endpoint is one zap debug entry; at info, none.
func TestSDKLogsGoThroughZap(t *testing.T) {
	cfg, err := config.Parse([]byte(`home_region: us-east-1
table: t
regions:
  - name: us-east-1
    key: arn:aws:kms:us-east-1:111122223333:key/mrk-1
    endpoints: {dynamodb: "http://` + closedPort(t) + `"}
local: {admin: "http://127.0.0.1:1", access_key: AKIAENVDRLOCAL000000, secret_key: x}
`))
	require.NoError(t, err)
	for _, c := range []struct {
		level   zapcore.Level
		entries bool
	}{{zapcore.DebugLevel, true}, {zapcore.InfoLevel, false}} {
		core, logs := observer.New(c.level)
		sl := regions.NewSDKLogger(zap.New(core))
		topo, err := regions.New(context.Background(), cfg, regions.Options{SDKLogger: &sl})
		require.NoError(t, err)
		r, err := topo.Region("us-east-1")
		require.NoError(t, err)
		_, err = r.DynamoDB().DescribeTable(context.Background(), &dynamodb.DescribeTableInput{TableName: aws.String("t")})
		require.Error(t, err)
		if !c.entries {
			require.Zero(t, logs.Len(), "%v", logs.All())
			continue
		}
		retries := logs.FilterField(zap.String("source", "aws-sdk")).FilterMessageSnippet("retrying request").All()
		require.NotEmpty(t, retries, "entries: %v", logs.All())
		require.Equal(t, zapcore.DebugLevel, retries[0].Level)
		require.Contains(t, retries[0].Message, "DynamoDB/DescribeTable")
	}
}
