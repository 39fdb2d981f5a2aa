package iam_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/sigv4"
)

func TestIdentitiesAndCredentialsFile(t *testing.T) {
	m := iam.New()
	ids := m.Identities()
	require.Len(t, ids, 6)
	seen := map[string]bool{}
	for _, id := range ids {
		require.Regexp(t, regexp.MustCompile(`^[A-Z0-9]{20}$`), id.AccessKey, id.Role)
		require.False(t, seen[id.AccessKey], "access keys are distinct")
		seen[id.AccessKey] = true
		require.Equal(t, "arn:aws:iam::111122223333:role/"+id.Role, id.ARN())
	}
	admin, _ := m.Identity(iam.RoleAdmin)
	require.Equal(t, iam.AdminAccessKey, admin.AccessKey)

	path := filepath.Join(t.TempDir(), "credentials")
	require.NoError(t, m.WriteCredentials(path))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, id := range ids {
		require.Contains(t, string(b), "["+id.Role+"]\naws_access_key_id = "+id.AccessKey+"\naws_secret_access_key = "+id.SecretKey+"\n")
	}
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
}

// Authenticate passes a verified request on with its identity (and its body intact), and
// answers a bad one through the service's error writer.
func TestAuthenticate(t *testing.T) {
	m := iam.New()
	var got iam.Identity
	var body []byte
	h := m.Authenticate("eu-west-1", "kms", func(w http.ResponseWriter, e *sigv4.Error) {
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte(e.Message))
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = iam.FromContext(r.Context())
		body = make([]byte, r.ContentLength)
		_, _ = r.Body.Read(body)
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(role, secret string) int {
		id, _ := m.Identity(role)
		if secret == "" {
			secret = id.SecretKey
		}
		payload := []byte(`{"KeyId":"k"}`)
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(payload))
		sum := sha256.Sum256(payload)
		require.NoError(t, v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id.AccessKey, SecretAccessKey: secret},
			req, hex.EncodeToString(sum[:]), "kms", "eu-west-1", time.Now()))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, post(iam.RoleDaemon, ""))
	require.Equal(t, iam.RoleDaemon, got.Role)
	require.Equal(t, `{"KeyId":"k"}`, string(body))
	require.Equal(t, http.StatusTeapot, post(iam.RoleDaemon, "wrong"))
}

// SetPolicy refuses a document the stand-in cannot evaluate exactly, naming the operator, and
// keeps the role's policy; AddRole adds a rendered role once, with derived keys.
func TestSetPolicyRefusesAndAddRole(t *testing.T) {
	m := iam.New()
	bad, err := iam.ParseDocuments([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"NumericLessThen":{"aws:MultiFactorAuthAge":"1"}}}]}`))
	require.NoError(t, err)
	require.ErrorContains(t, m.SetPolicy(iam.RoleDaemon, bad...), `condition operator "NumericLessThen" is not supported`)
	docs, ok := m.Policy(iam.RoleDaemon)
	require.True(t, ok)
	require.Empty(t, docs)

	id := m.AddRole("envdr-gameday")
	require.Equal(t, "AKIAENVDRGAMEDAY0000", id.AccessKey)
	require.Equal(t, id, m.AddRole("envdr-gameday"))
	require.Len(t, m.Identities(), 7)
}
