package localaws_test

import (
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/localtest"
	"github.com/envdr/envdr/policy"
)

// requireDenied checks an AWS access denial: the service's code, and a message naming the
// principal, the action and the resource, as AWS's do.
func requireDenied(t *testing.T, err error, code, role, action, resource string) {
	t.Helper()
	var ae smithy.APIError
	require.True(t, errors.As(err, &ae), "want an API error, got %v", err)
	require.Equal(t, code, ae.ErrorCode(), err.Error())
	msg := ae.ErrorMessage()
	require.Contains(t, msg, "User: arn:aws:sts::"+iam.Account+":assumed-role/"+role+"/")
	require.Contains(t, msg, "is not authorized to perform: "+action+" on resource: "+resource)
}

func TestNobodyIsDeniedEverywhere(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	home := "us-east-1"
	key := env.Keys[home].MRK
	cfg := env.AWSConfigAs(home, iam.RoleNobody)

	// KMS: the default key policy delegates to IAM, and nobody has no identity policy
	// (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html).
	_, err := kms.NewFromConfig(cfg).GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32), EncryptionContext: encCtx})
	requireDenied(t, err, "AccessDeniedException", iam.RoleNobody, "kms:GenerateDataKey", key)
	admin := kms.NewFromConfig(env.AWSConfig(home))
	enc, err := admin.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("x"), EncryptionContext: encCtx})
	require.NoError(t, err)
	_, err = kms.NewFromConfig(cfg).Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: encCtx})
	requireDenied(t, err, "AccessDeniedException", iam.RoleNobody, "kms:Decrypt", key)

	// SQS: AccessDenied (its query-compatible code), HTTP 403.
	q, _ := env.Queues(home)
	_, err = sqs.NewFromConfig(cfg).SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(q), MessageBody: aws.String("x")})
	requireDenied(t, err, "AccessDenied", iam.RoleNobody, "sqs:SendMessage", localaws.QueueARN(home, q))

	// DynamoDB: AccessDeniedException.
	_, err = localaws.NewDynamoDB(cfg).GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(env.Config.Table),
		Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "x"}}})
	requireDenied(t, err, "AccessDeniedException", iam.RoleNobody, "dynamodb:GetItem", localaws.TableARN(home, env.Config.Table))
}

func TestProducerSealsAndEnqueuesOnly(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	home := "us-east-1"
	key := env.Keys[home].MRK
	pk := kms.NewFromConfig(env.AWSConfigAs(home, iam.RoleProducer))

	dk, err := pk.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32), EncryptionContext: encCtx})
	require.NoError(t, err)
	q, _ := env.Queues(home)
	_, err = sqs.NewFromConfig(env.AWSConfigAs(home, iam.RoleProducer)).SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(q), MessageBody: aws.String("event")})
	require.NoError(t, err)

	// Without envdr:id in the context, the rendered policy's ForAnyValue:StringEquals on
	// kms:EncryptionContextKeys is false: denied.
	_, err = pk.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32), EncryptionContext: map[string]string{"app": "x"}})
	requireDenied(t, err, "AccessDeniedException", iam.RoleProducer, "kms:GenerateDataKey", key)
	_, err = pk.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32)})
	requireDenied(t, err, "AccessDeniedException", iam.RoleProducer, "kms:GenerateDataKey", key)

	// A producer cannot unwrap, here or in another region.
	_, err = pk.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, KeyId: aws.String(key), EncryptionContext: encCtx})
	requireDenied(t, err, "AccessDeniedException", iam.RoleProducer, "kms:Decrypt", key)
	other := "eu-west-1"
	_, err = kms.NewFromConfig(env.AWSConfigAs(other, iam.RoleProducer)).Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob: dk.CiphertextBlob, KeyId: aws.String(env.Keys[other].MRK), EncryptionContext: encCtx})
	requireDenied(t, err, "AccessDeniedException", iam.RoleProducer, "kms:Decrypt", env.Keys[other].MRK)
	// ... and the operator can.
	_, err = kms.NewFromConfig(env.AWSConfigAs(other, iam.RoleOperator)).Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob: dk.CiphertextBlob, KeyId: aws.String(env.Keys[other].MRK), EncryptionContext: encCtx})
	require.NoError(t, err)
}

func TestWrongSecretIsASignatureError(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	cfg := localaws.AWSConfig("us-east-1", env.Endpoints("us-east-1"), iam.AdminAccessKey, "not-the-secret")
	cfg.RetryMaxAttempts = 1
	_, err := kms.NewFromConfig(cfg).ListKeys(ctx, &kms.ListKeysInput{})
	var ae smithy.APIError
	require.True(t, errors.As(err, &ae), "%v", err)
	require.Equal(t, "InvalidSignatureException", ae.ErrorCode())
	require.Contains(t, ae.ErrorMessage(), "The request signature we calculated does not match")
	_, err = sqs.NewFromConfig(cfg).ListQueues(ctx, &sqs.ListQueuesInput{})
	require.True(t, errors.As(err, &ae), "%v", err)
	require.Equal(t, "SignatureDoesNotMatch", ae.ErrorCode())
	_, err = localaws.NewDynamoDB(cfg).ListTables(ctx, &dynamodb.ListTablesInput{})
	require.True(t, errors.As(err, &ae), "%v", err)
	require.Equal(t, "InvalidSignatureException", ae.ErrorCode())

	unknown := localaws.AWSConfig("us-east-1", env.Endpoints("us-east-1"), "AKIAUNKNOWN000000000", "x")
	unknown.RetryMaxAttempts = 1
	_, err = kms.NewFromConfig(unknown).ListKeys(ctx, &kms.ListKeysInput{})
	require.True(t, errors.As(err, &ae), "%v", err)
	require.Equal(t, "UnrecognizedClientException", ae.ErrorCode())
	_, err = sqs.NewFromConfig(unknown).ListQueues(ctx, &sqs.ListQueuesInput{})
	require.True(t, errors.As(err, &ae), "%v", err)
	require.Equal(t, "InvalidClientTokenId", ae.ErrorCode())
}

// Key policies are evaluated with the identity policies, as the KMS developer guide's "Key
// policies in AWS KMS" (https://docs.aws.amazon.com/kms/latest/developerguide/key-policies.html)
// and each operation's "Required permissions" in the API reference
// (https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html,
// https://docs.aws.amazon.com/kms/latest/APIReference/API_ReEncrypt.html,
// https://docs.aws.amazon.com/kms/latest/APIReference/API_PutKeyPolicy.html) describe them.
func TestKeyPolicyIsEvaluated(t *testing.T) {
	t.Parallel()
	env := localtest.New(t)
	ctx := ctxT(t)
	region := "eu-west-1"
	key := env.Keys[region].Independent
	admin := kms.NewFromConfig(env.AWSConfig(region))
	enc, err := admin.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("x"), EncryptionContext: encCtx})
	require.NoError(t, err)

	// The rendered key policy: the admin (the account root) keeps management but loses use,
	// the operator is named in the key policy itself.
	docs, err := policy.Render(env.Config, policy.Options{})
	require.NoError(t, err)
	var kp *policy.Document
	for _, d := range docs {
		if d.Name == policy.KeyPolicyPrefix+"us-east-1.json" {
			kp = d.Doc
		}
	}
	require.NotNil(t, kp)
	raw := kp.JSON()
	_, err = admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(key), Policy: aws.String(string(raw))})
	require.NoError(t, err)

	_, err = admin.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: aws.String(key), EncryptionContext: encCtx})
	requireDenied(t, err, "AccessDeniedException", iam.RoleAdmin, "kms:Decrypt", key)
	_, err = admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key)})
	require.NoError(t, err, "KeyAdministration delegates DescribeKey to IAM")

	// The operator is named in the key policy: allowed even with no identity policy...
	require.NoError(t, env.IAM.SetPolicy(iam.RoleOperator))
	op := kms.NewFromConfig(env.AWSConfigAs(region, iam.RoleOperator))
	_, err = op.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: aws.String(key), EncryptionContext: encCtx})
	require.NoError(t, err)
	// ... but only with envdr:id in the context.
	_, err = op.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: aws.String(key)})
	requireDenied(t, err, "AccessDeniedException", iam.RoleOperator, "kms:Decrypt", key)

	// An identity-policy Deny wins over the key policy's Allow.
	deny, err := policy.Parse([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}`))
	require.NoError(t, err)
	require.NoError(t, env.IAM.SetPolicy(iam.RoleOperator, deny))
	_, err = op.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: aws.String(key), EncryptionContext: encCtx})
	requireDenied(t, err, "AccessDeniedException", iam.RoleOperator, "kms:Decrypt", key)
	var ae smithy.APIError
	require.True(t, errors.As(err, &ae))
	require.Contains(t, ae.ErrorMessage(), "explicit deny")

	// The admin may still put back the default policy (KeyAdministration: kms:PutKeyPolicy).
	_, err = admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(key), Policy: aws.String(
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`)})
	require.NoError(t, err)
	_, err = admin.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: aws.String(key), EncryptionContext: encCtx})
	require.NoError(t, err)
}
