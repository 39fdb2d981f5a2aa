package localaws_test

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/localtest"
	"github.com/envdr/envdr/policy"
)

func TestNobodyIsDeniedEverywhere(t *testing.T) {
	t.Parallel()
	k := newKeyTest(t, "us-east-1", mrkKey)
	env, ctx, home, key := k.env, k.ctx, k.region, k.key
	cfg := env.AWSConfigAs(home, iam.RoleNobody)

	// KMS: the rendered key policy names nobody and delegates no key use to IAM (where nobody
	// has no identity policy anyway)
	// (https://docs.aws.amazon.com/kms/latest/developerguide/key-policies.html).
	nobody := k.kmsAs(iam.RoleNobody)
	_, err := nobody.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32), EncryptionContext: encCtx})
	requireDenied(t, err, "AccessDeniedException", iam.RoleNobody, "kms:GenerateDataKey", key)
	_, err = nobody.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: k.encrypt(t), EncryptionContext: encCtx})
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
	k := newKeyTest(t, "us-east-1", mrkKey)
	env, ctx, home, key := k.env, k.ctx, k.region, k.key
	pk := k.kmsAs(iam.RoleProducer)

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
	creds := func(accessKey, secretKey string) aws.Config {
		cfg := localaws.AWSConfig("us-east-1", env.Endpoints("us-east-1"), accessKey, secretKey)
		cfg.RetryMaxAttempts = 1
		return cfg
	}
	listKeys := func(cfg aws.Config) error {
		_, err := kms.NewFromConfig(cfg).ListKeys(ctx, &kms.ListKeysInput{})
		return err
	}
	listQueues := func(cfg aws.Config) error {
		_, err := sqs.NewFromConfig(cfg).ListQueues(ctx, &sqs.ListQueuesInput{})
		return err
	}
	listTables := func(cfg aws.Config) error {
		_, err := localaws.NewDynamoDB(cfg).ListTables(ctx, &dynamodb.ListTablesInput{})
		return err
	}

	wrong := creds(iam.AdminAccessKey, "not-the-secret")
	ae := requireCode(t, listKeys(wrong), "InvalidSignatureException")
	require.Contains(t, ae.ErrorMessage(), "The request signature we calculated does not match")
	requireCode(t, listQueues(wrong), "SignatureDoesNotMatch")
	requireCode(t, listTables(wrong), "InvalidSignatureException")

	unknown := creds("AKIAUNKNOWN000000000", "x")
	requireCode(t, listKeys(unknown), "UnrecognizedClientException")
	requireCode(t, listQueues(unknown), "InvalidClientTokenId")
}

// Key policies are evaluated with the identity policies, as the KMS developer guide's "Key
// policies in AWS KMS" (https://docs.aws.amazon.com/kms/latest/developerguide/key-policies.html)
// and each operation's "Required permissions" in the API reference
// (https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html,
// https://docs.aws.amazon.com/kms/latest/APIReference/API_ReEncrypt.html,
// https://docs.aws.amazon.com/kms/latest/APIReference/API_PutKeyPolicy.html) describe them.
func TestKeyPolicyIsEvaluated(t *testing.T) {
	t.Parallel()
	k := newKeyTest(t, "eu-west-1", independentKey)
	env, ctx, key, admin := k.env, k.ctx, k.key, k.admin
	blob := k.encrypt(t)

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

	_, err = admin.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(key), EncryptionContext: encCtx})
	requireDenied(t, err, "AccessDeniedException", iam.RoleAdmin, "kms:Decrypt", key)
	_, err = admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key)})
	require.NoError(t, err, "KeyAdministration delegates DescribeKey to IAM")

	// The operator is named in the key policy: allowed even with no identity policy...
	require.NoError(t, env.IAM.SetPolicy(iam.RoleOperator))
	op := k.kmsAs(iam.RoleOperator)
	_, err = op.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(key), EncryptionContext: encCtx})
	require.NoError(t, err)
	// ... but only with envdr:id in the context.
	_, err = op.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(key)})
	requireDenied(t, err, "AccessDeniedException", iam.RoleOperator, "kms:Decrypt", key)

	// An identity-policy Deny wins over the key policy's Allow.
	deny, err := policy.Parse([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}`))
	require.NoError(t, err)
	require.NoError(t, env.IAM.SetPolicy(iam.RoleOperator, deny))
	_, err = op.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(key), EncryptionContext: encCtx})
	requireDenied(t, err, "AccessDeniedException", iam.RoleOperator, "kms:Decrypt", key)
	require.Contains(t, requireCode(t, err, "AccessDeniedException").ErrorMessage(), "explicit deny")

	// The admin may still put back the default policy (KeyAdministration: kms:PutKeyPolicy).
	_, err = admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(key), Policy: aws.String(
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`)})
	require.NoError(t, err)
	_, err = admin.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(key), EncryptionContext: encCtx})
	require.NoError(t, err)
}
