package localaws_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/localtest"
)

// awsCLI runs the aws CLI (the first on PATH) with the stand-in's credentials file and profile.
func awsCLI(t *testing.T, credentials, profile string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command("aws", args...)
	cmd.Env = append(os.Environ(),
		"AWS_SHARED_CREDENTIALS_FILE="+credentials, "AWS_PROFILE="+profile,
		"AWS_CONFIG_FILE="+filepath.Join(t.TempDir(), "none"), "AWS_MAX_ATTEMPTS=1", "AWS_RETRY_MODE=standard",
		"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// The acceptance check of issue 11 with the aws CLI: envdr-nobody is denied by KMS
// (GenerateDataKey, Decrypt), SQS (SendMessage) and DynamoDB (GetItem); a wrong secret is a
// signature error.
func TestAWSCLIAsNobody(t *testing.T) {
	if _, err := exec.LookPath("aws"); err != nil {
		t.Skip("no aws CLI on PATH")
	}
	// Not parallel: the CLI's Python start-ups would starve the timing-sensitive tests
	// (replication lag) that run in parallel after the sequential ones.
	env := localtest.New(t)
	home := "us-east-1"
	ep := env.Endpoints(home)
	key := env.Keys[home].MRK
	q, _ := env.Queues(home)

	enc, err := kms.NewFromConfig(env.AWSConfigAs(home, iam.RoleDaemon)).Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("x"), EncryptionContext: encCtx})
	require.NoError(t, err)
	blob := filepath.Join(t.TempDir(), "blob")
	require.NoError(t, os.WriteFile(blob, enc.CiphertextBlob, 0o600))

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"kms generate-data-key", []string{"--endpoint-url", ep.KMS, "--region", home, "kms", "generate-data-key", "--key-id", key,
			"--number-of-bytes", "32", "--encryption-context", "envdr:id=env-1"}, "AccessDeniedException"},
		{"kms decrypt", []string{"--endpoint-url", ep.KMS, "--region", home, "kms", "decrypt", "--key-id", key,
			"--ciphertext-blob", "fileb://" + blob, "--encryption-context", "envdr:id=env-1"}, "AccessDeniedException"},
		{"sqs send-message", []string{"--endpoint-url", ep.SQS, "--region", home, "sqs", "send-message", "--queue-url", q,
			"--message-body", "x"}, "AccessDenied"},
		{"dynamodb get-item", []string{"--endpoint-url", ep.DynamoDB, "--region", home, "dynamodb", "get-item", "--table-name", env.Config.Table,
			"--key", `{"id":{"S":"x"}}`}, "AccessDeniedException"},
	} {
		_, stderr, err := awsCLI(t, env.CredentialsPath, iam.RoleNobody, c.args...)
		require.Error(t, err, c.name)
		require.Contains(t, stderr, "("+c.want+")", c.name)
		require.Contains(t, stderr, "assumed-role/envdr-nobody/envdr-local is not authorized to perform", c.name)
		t.Logf("%s: %s", c.name, bytes.TrimSpace([]byte(stderr)))
	}

	// The admin profile works with the same CLI.
	_, stderr, err := awsCLI(t, env.CredentialsPath, iam.RoleAdmin, "--endpoint-url", ep.KMS, "--region", home, "kms", "describe-key", "--key-id", key)
	require.NoError(t, err, stderr)

	// A wrong secret: a signature error.
	bad := filepath.Join(t.TempDir(), "credentials")
	require.NoError(t, os.WriteFile(bad, []byte("[envdr-admin]\naws_access_key_id = "+iam.AdminAccessKey+"\naws_secret_access_key = wrong\n"), 0o600))
	_, stderr, err = awsCLI(t, bad, iam.RoleAdmin, "--endpoint-url", ep.KMS, "--region", home, "kms", "list-keys")
	require.Error(t, err)
	require.Contains(t, stderr, "(InvalidSignatureException)")
	t.Logf("wrong secret: %s", bytes.TrimSpace([]byte(stderr)))
}
