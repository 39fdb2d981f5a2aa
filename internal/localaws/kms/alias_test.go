package kms

import (
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/stretchr/testify/require"
)

// KMS API Reference, CreateAlias / UpdateAlias / DeleteAlias / ListAliases:
// names begin with alias/ (alias/aws/ is reserved: InvalidAliasNameException),
// a name exists once per Region (AlreadyExistsException), the target is a key
// ID or key ARN, and ListAliases reports name, ARN and target key ID.
func TestAliases(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.c("us-east-1")
	k1 := b.createKey(t, "us-east-1", false)
	k2 := b.createKey(t, "us-east-1", false)

	_, err := c.CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/app/data_1"), TargetKeyId: k1.Arn})
	require.NoError(t, err)
	_, err = c.CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/app/data_1"), TargetKeyId: k2.KeyId})
	requireAPIError[*types.AlreadyExistsException](t, err)
	for _, name := range []string{"app", "alias/", "alias/aws/mine", "alias/has space"} {
		_, err = c.CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String(name), TargetKeyId: k2.KeyId})
		requireAPIError[*types.InvalidAliasNameException](t, err)
	}
	_, err = c.CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/x"), TargetKeyId: aws.String("alias/app/data_1")})
	requireAPIError[*types.NotFoundException](t, err)
	_, err = c.CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/second"), TargetKeyId: k1.KeyId})
	require.NoError(t, err)

	la, err := c.ListAliases(ctx(t), &awskms.ListAliasesInput{})
	require.NoError(t, err)
	require.Len(t, la.Aliases, 2)
	a := la.Aliases[0]
	require.Equal(t, "alias/app/data_1", *a.AliasName)
	require.Equal(t, "arn:aws:kms:us-east-1:111122223333:alias/app/data_1", *a.AliasArn)
	require.Equal(t, *k1.KeyId, *a.TargetKeyId)
	require.NotNil(t, a.CreationDate)

	// Filter by key.
	la, err = c.ListAliases(ctx(t), &awskms.ListAliasesInput{KeyId: k2.KeyId})
	require.NoError(t, err)
	require.Empty(t, la.Aliases)

	_, err = c.UpdateAlias(ctx(t), &awskms.UpdateAliasInput{AliasName: aws.String("alias/app/data_1"), TargetKeyId: k2.KeyId})
	require.NoError(t, err)
	d, err := c.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: aws.String("arn:aws:kms:us-east-1:111122223333:alias/app/data_1")})
	require.NoError(t, err)
	require.Equal(t, *k2.KeyId, *d.KeyMetadata.KeyId)
	la, err = c.ListAliases(ctx(t), &awskms.ListAliasesInput{KeyId: k2.Arn})
	require.NoError(t, err)
	require.Len(t, la.Aliases, 1)
	_, err = c.UpdateAlias(ctx(t), &awskms.UpdateAliasInput{AliasName: aws.String("alias/none"), TargetKeyId: k2.KeyId})
	requireAPIError[*types.NotFoundException](t, err)

	_, err = c.DeleteAlias(ctx(t), &awskms.DeleteAliasInput{AliasName: aws.String("alias/app/data_1")})
	require.NoError(t, err)
	_, err = c.DeleteAlias(ctx(t), &awskms.DeleteAliasInput{AliasName: aws.String("alias/app/data_1")})
	requireAPIError[*types.NotFoundException](t, err)
	_, err = c.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: aws.String("alias/app/data_1")})
	requireAPIError[*types.NotFoundException](t, err)

	// Aliases are not replicated with multi-Region keys.
	p := b.mrk(t)
	_, err = c.CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String("alias/mrk"), TargetKeyId: p.KeyId})
	require.NoError(t, err)
	_, err = b.c("eu-west-1").DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: aws.String("alias/mrk")})
	requireAPIError[*types.NotFoundException](t, err)
	la, err = b.c("eu-west-1").ListAliases(ctx(t), &awskms.ListAliasesInput{})
	require.NoError(t, err)
	require.Empty(t, la.Aliases)
}

// KMS API Reference, ListKeys and ListAliases: Limit and Marker page through
// results; Truncated and NextMarker say whether more remain.
func TestListPaging(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.c("ap-southeast-2")
	want := map[string]bool{}
	for i := 0; i < 7; i++ {
		k := b.createKey(t, "ap-southeast-2", i%2 == 0)
		want[*k.KeyId] = true
		_, err := c.CreateAlias(ctx(t), &awskms.CreateAliasInput{AliasName: aws.String(fmt.Sprintf("alias/a%d", i)), TargetKeyId: k.KeyId})
		require.NoError(t, err)
	}
	got := map[string]bool{}
	var marker *string
	pages := 0
	for {
		out, err := c.ListKeys(ctx(t), &awskms.ListKeysInput{Limit: aws.Int32(3), Marker: marker})
		require.NoError(t, err)
		pages++
		for _, k := range out.Keys {
			require.False(t, got[*k.KeyId], "key listed twice")
			got[*k.KeyId] = true
			require.Equal(t, "arn:aws:kms:ap-southeast-2:111122223333:key/"+*k.KeyId, *k.KeyArn)
		}
		if !out.Truncated {
			require.Nil(t, out.NextMarker)
			break
		}
		marker = out.NextMarker
	}
	require.Equal(t, want, got)
	require.Equal(t, 3, pages)

	// The SDK paginator drives the same markers.
	var names []string
	pg := awskms.NewListAliasesPaginator(c, &awskms.ListAliasesInput{Limit: aws.Int32(2)})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx(t))
		require.NoError(t, err)
		for _, a := range out.Aliases {
			names = append(names, *a.AliasName)
		}
	}
	require.Equal(t, []string{"alias/a0", "alias/a1", "alias/a2", "alias/a3", "alias/a4", "alias/a5", "alias/a6"}, names)

	_, err := c.ListKeys(ctx(t), &awskms.ListKeysInput{Limit: aws.Int32(1001)})
	requireCode(t, err, "ValidationException")
	_, err = c.ListAliases(ctx(t), &awskms.ListAliasesInput{Limit: aws.Int32(0)})
	requireCode(t, err, "ValidationException")
}

// KMS API Reference, CreateKey / GetKeyPolicy / PutKeyPolicy: without a
// Policy a key gets the default key policy (account root, kms:*); policies
// are stored per key and returned as given; the only policy name is
// "default"; a document that is not a JSON policy is
// MalformedPolicyDocumentException, and so is one the stand-in could not evaluate exactly (an
// unsupported condition operator, NotPrincipal with Allow, a statement without Principal).
func TestKeyPolicies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.c("us-east-1")
	k := b.createKey(t, "us-east-1", false)
	gp, err := c.GetKeyPolicy(ctx(t), &awskms.GetKeyPolicyInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.Equal(t, "default", *gp.PolicyName)
	require.JSONEq(t, defaultPolicy("111122223333"), *gp.Policy)

	policy := `{"Version":"2012-10-17","Statement":[{"Sid":"envdr","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/envdr"},"Action":["kms:Decrypt","kms:ReEncrypt*"],"Resource":"*"}]}`
	_, err = c.PutKeyPolicy(ctx(t), &awskms.PutKeyPolicyInput{KeyId: k.Arn, Policy: aws.String(policy), PolicyName: aws.String("default")})
	require.NoError(t, err)
	gp, err = c.GetKeyPolicy(ctx(t), &awskms.GetKeyPolicyInput{KeyId: k.Arn, PolicyName: aws.String("default")})
	require.NoError(t, err)
	require.Equal(t, policy, *gp.Policy)

	for bad, says := range map[string]string{
		"not json":                 "policy document",
		`{"Version":"2012-10-17"}`: "no Statement",
		`[]`:                       "policy document",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"BinaryEquals":{"aws:SourceIp":"AA=="}}}]}`: `condition operator "BinaryEquals" is not supported`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`:             "NotPrincipal is supported only with",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`:                                                                     "needs a Principal",
	} {
		_, err = c.PutKeyPolicy(ctx(t), &awskms.PutKeyPolicyInput{KeyId: k.KeyId, Policy: aws.String(bad)})
		requireAPIError[*types.MalformedPolicyDocumentException](t, err)
		require.ErrorContains(t, err, says)
	}
	_, err = c.GetKeyPolicy(ctx(t), &awskms.GetKeyPolicyInput{KeyId: k.KeyId, PolicyName: aws.String("other")})
	requireAPIError[*types.NotFoundException](t, err)
	lp, err := c.ListKeyPolicies(ctx(t), &awskms.ListKeyPoliciesInput{KeyId: k.KeyId})
	require.NoError(t, err)
	require.Equal(t, []string{"default"}, lp.PolicyNames)

	// CreateKey and ReplicateKey take a policy; replicas have their own.
	ck, err := c.CreateKey(ctx(t), &awskms.CreateKeyInput{Policy: aws.String(policy), MultiRegion: aws.Bool(true)})
	require.NoError(t, err)
	gp, err = c.GetKeyPolicy(ctx(t), &awskms.GetKeyPolicyInput{KeyId: ck.KeyMetadata.KeyId})
	require.NoError(t, err)
	require.Equal(t, policy, *gp.Policy)
	_, err = c.ReplicateKey(ctx(t), &awskms.ReplicateKeyInput{KeyId: ck.KeyMetadata.KeyId, ReplicaRegion: aws.String("eu-west-1")})
	require.NoError(t, err)
	gp, err = b.c("eu-west-1").GetKeyPolicy(ctx(t), &awskms.GetKeyPolicyInput{KeyId: ck.KeyMetadata.KeyId})
	require.NoError(t, err)
	require.JSONEq(t, defaultPolicy("111122223333"), *gp.Policy)
	_, err = c.CreateKey(ctx(t), &awskms.CreateKeyInput{Policy: aws.String("{")})
	requireAPIError[*types.MalformedPolicyDocumentException](t, err)
}

// KMS API Reference, CreateKey: the stand-in makes SYMMETRIC_DEFAULT
// ENCRYPT_DECRYPT keys only; other key specs are refused, not faked.
// TagResource / UntagResource / ListResourceTags and UpdateKeyDescription
// work as documented.
func TestCreateKeyOptionsAndTags(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.c("us-east-1")
	_, err := c.CreateKey(ctx(t), &awskms.CreateKeyInput{KeySpec: types.KeySpecRsa2048})
	requireAPIError[*types.UnsupportedOperationException](t, err)
	_, err = c.CreateKey(ctx(t), &awskms.CreateKeyInput{Origin: types.OriginTypeExternal})
	requireAPIError[*types.UnsupportedOperationException](t, err)
	_, err = c.CreateKey(ctx(t), &awskms.CreateKeyInput{Tags: []types.Tag{{TagKey: aws.String("aws:x"), TagValue: aws.String("y")}}})
	requireAPIError[*types.TagException](t, err)

	out, err := c.CreateKey(ctx(t), &awskms.CreateKeyInput{
		KeySpec: types.KeySpecSymmetricDefault, KeyUsage: types.KeyUsageTypeEncryptDecrypt,
		Tags: []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("dr")}},
	})
	require.NoError(t, err)
	id := out.KeyMetadata.KeyId
	_, err = c.TagResource(ctx(t), &awskms.TagResourceInput{KeyId: id, Tags: []types.Tag{{TagKey: aws.String("env"), TagValue: aws.String("local")}}})
	require.NoError(t, err)
	_, err = c.UntagResource(ctx(t), &awskms.UntagResourceInput{KeyId: id, TagKeys: []string{"team"}})
	require.NoError(t, err)
	tags, err := c.ListResourceTags(ctx(t), &awskms.ListResourceTagsInput{KeyId: id})
	require.NoError(t, err)
	require.Len(t, tags.Tags, 1)
	require.Equal(t, "env", *tags.Tags[0].TagKey)
	require.Equal(t, "local", *tags.Tags[0].TagValue)

	_, err = c.UpdateKeyDescription(ctx(t), &awskms.UpdateKeyDescriptionInput{KeyId: id, Description: aws.String("new")})
	require.NoError(t, err)
	d, err := c.DescribeKey(ctx(t), &awskms.DescribeKeyInput{KeyId: id})
	require.NoError(t, err)
	require.Equal(t, "new", *d.KeyMetadata.Description)
}
