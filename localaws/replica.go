package localaws

import (
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/envdr/envdr/internal/config"
)

// ReplicaDynamoDB is a DynamoDB client straight to region's replica on the DynamoDB backend,
// bypassing the region's endpoint and so the global tables: a write through it stays in that
// replica and is neither replicated nor checked against IAM. For bulk loads that fill every
// replica themselves (make drill-bench seeds a million records this way), never for envdr's
// own code paths.
func (b Backends) ReplicaDynamoDB(region string) *dynamodb.Client {
	return NewDynamoDB(AWSConfig(region, config.Endpoints{DynamoDB: b.DynamoDB}, ddbAccessKey, "envdr-local-replica"))
}
