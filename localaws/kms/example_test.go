package kms_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/envdr/envdr/localaws/kms"
)

// Serve two Regions, make a multi-Region key with a replica, and decrypt in
// eu-west-1 what was encrypted in us-east-1, all through the unmodified SDK.
func ExampleNewService() {
	// Replicas usable at once (by default a new replica is Creating for 2 s, as on AWS).
	svc, err := kms.NewService(kms.Options{Regions: []string{"us-east-1", "eu-west-1"}, ReplicaCreating: -1})
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	var servers []*httptest.Server
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	client := func(region string) *awskms.Client {
		srv := httptest.NewServer(svc.Handler(region)) // one endpoint per Region
		defer func() { servers = append(servers, srv) }()
		return awskms.NewFromConfig(aws.Config{
			Region:      region, // the signing Region must match the endpoint's
			Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		}, func(o *awskms.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	}
	ctx := context.Background()
	use1, euw1 := client("us-east-1"), client("eu-west-1")

	key, _ := use1.CreateKey(ctx, &awskms.CreateKeyInput{MultiRegion: aws.Bool(true)})
	_, _ = use1.ReplicateKey(ctx, &awskms.ReplicateKeyInput{KeyId: key.KeyMetadata.KeyId, ReplicaRegion: aws.String("eu-west-1")})

	ec := map[string]string{"envdr:id": "example"}
	enc, _ := use1.Encrypt(ctx, &awskms.EncryptInput{KeyId: key.KeyMetadata.KeyId, Plaintext: []byte("hello"), EncryptionContext: ec})
	dec, err := euw1.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(dec.Plaintext))
	fmt.Println(svc.Counters()["eu-west-1"]["Decrypt"])
	// Output:
	// hello
	// 1
}
