package kms

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// BenchmarkDecryptSDK measures a full round trip through the SDK client over
// loopback HTTP, the way the daemon calls the stand-in.
func BenchmarkDecryptSDK(b *testing.B) {
	_, c, k := benchSetup(b)
	ctx := context.Background()
	ec := map[string]string{"envdr:id": "bench"}
	gd, err := c.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
	if err != nil {
		b.Fatal(err)
	}
	in := &awskms.DecryptInput{CiphertextBlob: gd.CiphertextBlob, EncryptionContext: ec, KeyId: aws.String(*k.Arn)}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Decrypt(ctx, in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkReEncryptHandler measures the server side alone.
func BenchmarkReEncryptHandler(b *testing.B) {
	svc, c, k := benchSetup(b)
	enc, err := c.Encrypt(context.Background(), &awskms.EncryptInput{KeyId: k.KeyId, Plaintext: make([]byte, 32)})
	if err != nil {
		b.Fatal(err)
	}
	h := svc.Handler("us-east-1")
	body := `{"CiphertextBlob":"` + b64(enc.CiphertextBlob) + `","DestinationKeyId":"` + *k.KeyId + `"}`
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			req.Header.Set("X-Amz-Target", "TrentService.ReEncrypt")
			req.Header.Set("Authorization", authUSEast1)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Error(rec.Body.String())
				return
			}
		}
	})
}

// benchSetup serves a one-region service over loopback HTTP and creates a key
// through an SDK client that does not retry.
func benchSetup(b *testing.B) (*Service, *awskms.Client, *types.KeyMetadata) {
	b.Helper()
	svc, err := NewService(Options{Regions: []string{"us-east-1"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { svc.Close() })
	srv := httptest.NewServer(svc.Handler("us-east-1"))
	b.Cleanup(srv.Close)
	c := newClient("us-east-1", srv.URL, true)
	k, err := c.CreateKey(context.Background(), &awskms.CreateKeyInput{})
	if err != nil {
		b.Fatal(err)
	}
	return svc, c, k.KeyMetadata
}

func b64(p []byte) string { return base64.StdEncoding.EncodeToString(p) }
