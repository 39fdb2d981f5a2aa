package localaws

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/envdr/envdr/internal/config"
)

// EndpointSource gives the SDK per-service base endpoints through aws.Config.ConfigSources, the
// same mechanism as the shared config file's `services` section: every service client built
// from the aws.Config (kms.NewFromConfig, sqs.NewFromConfig, dynamodb.NewFromConfig, sts.NewFromConfig) picks its
// own endpoint, with no deprecated resolver and no per-client option.
type EndpointSource config.Endpoints

// GetServiceBaseEndpoint implements the SDK's service base endpoint provider.
func (e EndpointSource) GetServiceBaseEndpoint(_ context.Context, sdkID string) (string, bool, error) {
	var v string
	switch sdkID {
	case "KMS":
		v = e.KMS
	case "SQS":
		v = e.SQS
	case "DynamoDB":
		v = e.DynamoDB
	case "STS":
		v = e.STS
	case "S3":
		v = e.S3
	}
	return v, v != "", nil
}

// NewS3Client builds an S3 client for the stand-in: path-style requests (the stand-in's
// endpoints are addresses, not bucket host names).
func NewS3Client(cfg aws.Config) *s3.Client {
	return s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
}

// AWSConfig is an SDK config for one region of the stand-in: its endpoints, static fake
// credentials, nothing read from the environment or ~/.aws. DynamoDB clients should also set
// DisableValidateResponseChecksum (DynamoDB Local's error responses carry no CRC32).
func AWSConfig(region string, ep config.Endpoints, accessKey, secretKey string) aws.Config {
	return aws.Config{
		Region:        region,
		Credentials:   aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(accessKey, secretKey, "")),
		ConfigSources: []any{EndpointSource(ep)},
	}
}
