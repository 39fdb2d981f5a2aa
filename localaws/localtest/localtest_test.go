package localtest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/localtest"
)

// Two Envs share the backends but nothing else, and each removes its queue and table when its
// test ends.
func TestEnvsAreIsolatedAndCleanedUp(t *testing.T) {
	var a, b *localtest.Env
	t.Run("a", func(t *testing.T) {
		a = localtest.New(t)
		t.Run("b", func(t *testing.T) {
			b = localtest.New(t)
			require.NotEqual(t, a.Config.QueueURL, b.Config.QueueURL)
			require.NotEqual(t, a.Config.Table, b.Config.Table)
			require.NotEqual(t, a.Keys["us-east-1"].MRK, b.Keys["us-east-1"].MRK)
			require.NotEqual(t, a.Endpoints("eu-west-1"), b.Endpoints("eu-west-1"))

			// Losing a region in one Env leaves the other's alone.
			b.Down("eu-west-1")
			_, err := kms.NewFromConfig(a.AWSConfig("eu-west-1")).DescribeKey(context.Background(),
				&kms.DescribeKeyInput{KeyId: aws.String(a.Keys["eu-west-1"].MRK)})
			require.NoError(t, err)

			// The config is what every envdr package loads.
			cfg, err := config.Load(b.ConfigPath)
			require.NoError(t, err)
			require.Equal(t, b.Admin, cfg.Local.Admin)
			require.Equal(t, b.Config.Regions, cfg.Regions)
			// b ends with eu-west-1 still down: cleanup must not need it.
		})
	})
	require.NotNil(t, b)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	direct := localaws.AWSConfig("us-east-1", config.Endpoints{SQS: a.Backends.SQS, DynamoDB: a.Backends.DynamoDB},
		localaws.AccessKey, localaws.SecretKey)
	for _, env := range []*localtest.Env{a, b} {
		_, err := sqs.NewFromConfig(direct).GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(env.Config.QueueURL)})
		var nq *sqstypes.QueueDoesNotExist
		require.True(t, errors.As(err, &nq), "queue %s after cleanup: %v", env.Config.QueueURL, err)
		_, err = localaws.NewDynamoDB(direct).DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(env.Config.Table)})
		var nt *ddbtypes.ResourceNotFoundException
		require.True(t, errors.As(err, &nt), "table %s after cleanup: %v", env.Config.Table, err)
	}
}
