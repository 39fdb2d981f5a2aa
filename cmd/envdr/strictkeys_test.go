package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/replicate"
)

// envRunMain makes the test binary run as envdr (see TestMain), for subprocess tests.
const envRunMain = "ENVDR_TEST_RUN_MAIN"

// envdrProc runs envdr as a subprocess (this test binary re-executed) and returns its exit code
// and its stderr followed by its stdout.
func envdrProc(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd, stderr := envdrCmd(args...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String() + stdout.String()
	case err != nil:
		t.Fatalf("run envdr: %v", err)
	}
	return 0, stderr.String() + stdout.String()
}

func writeConfig(t *testing.T, c *config.Config) string {
	t.Helper()
	raw, err := yaml.Marshal(c)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "envdr.yaml")
	require.NoError(t, os.WriteFile(p, raw, 0o600))
	return p
}

// TestStrictKeysRefuseForeignKey is issue 13's acceptance test for strict keys. An envelope
// sealed under the stand-in's independent key (not in the opener's mrk-mode config) fails open
// and verify with an error naming the key and region, and KMS sees no Decrypt at all. Before the
// fix, open and verify sent Decrypt with whatever key the header or record named, and open
// succeeded (the caller's credentials can use that key).
func TestStrictKeysRefuseForeignKey(t *testing.T) {
	env := localtest.New(t)
	home := env.Config.HomeRegion
	foreign := env.Keys[home].Independent
	require.NotEmpty(t, foreign)

	// The producer's config: the home region sealed under the independent key.
	prod := *env.Config
	prod.Regions = append([]config.Region(nil), env.Config.Regions...)
	prod.Regions[0].Key, prod.Regions[0].Mode = foreign, config.ModeIndependent
	prodPath := env.ConfigPathAs(&prod, iam.RoleProducer) // seal runs as the producer

	dir := t.TempDir()
	in, sealed := filepath.Join(dir, "in.txt"), filepath.Join(dir, "in.envdr")
	require.NoError(t, os.WriteFile(in, []byte("sealed under a key the opener never configured"), 0o600))
	require.Equal(t, 0, run([]string{"--config", prodPath, "seal", "--id", "foreign-1", in, sealed}))

	// The record, as a replicator under the producer's config would have written it.
	f, err := os.Open(sealed)
	require.NoError(t, err)
	hdr, err := envelope.ReadHeader(f)
	f.Close()
	require.NoError(t, err)
	require.Equal(t, foreign, hdr.KeyARN)
	ev, err := envelope.NewEvent(hdr, time.Now(), "")
	require.NoError(t, err)
	rec := ev.Record()
	rec.Regions[home] = &envelope.RegionWrap{KeyARN: hdr.KeyARN, Wrapped: hdr.WrappedDEK, WrappedAt: time.Now().UTC()}
	store := replicate.NewStore(env.Config.Table, home, localaws.NewDynamoDB(env.AWSConfig(home)), env.Config.RegionNames())
	_, err = store.Update(context.Background(), rec.ID, func(*envelope.Record) (*envelope.Record, error) { return rec, nil })
	require.NoError(t, err)

	// open and verify --no-write run as the operator.
	operator := env.ConfigPathAs(nil, iam.RoleOperator)
	env.ResetCounters()
	out := filepath.Join(dir, "out.txt")
	code, stderr := envdrProc(t, "--config", operator, "open", sealed, out)
	require.Equal(t, exitFailure, code, stderr)
	require.Contains(t, stderr, foreign)
	require.Contains(t, stderr, "region "+home)
	require.Contains(t, stderr, "not a key configured")
	require.NoFileExists(t, out)

	code, stderr = envdrProc(t, "--config", operator, "open", "--region", home, sealed, out)
	require.Equal(t, exitFailure, code, stderr)
	require.Contains(t, stderr, foreign)
	require.NoFileExists(t, out)

	code, stderr = envdrProc(t, "--config", operator, "verify", "--quiet", "--no-write", "--id", rec.ID)
	require.Equal(t, exitFindings, code, stderr)
	require.Contains(t, stderr, rec.ID)
	require.Contains(t, stderr, foreign, "the failure names the key")
	for r, ops := range env.Counters() {
		require.Zero(t, ops["Decrypt"], "region %s: no Decrypt may be sent for an untrusted key", r)
		require.Zero(t, ops["ReEncrypt"], "region %s", r)
	}

	// The same key listed in trusted_keys opens.
	trusting := *env.Config
	trusting.TrustedKeys = []string{foreign}
	trustPath := env.ConfigPathAs(&trusting, iam.RoleOperator)
	code, stderr = envdrProc(t, "--config", trustPath, "open", sealed, out)
	require.Equal(t, 0, code, stderr)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "sealed under a key the opener never configured", string(got))
	require.NoError(t, os.Remove(out))

	// Discovery is opt-in, and loud.
	code, stderr = envdrProc(t, "--config", operator, "open", "--trust-any-key", sealed, out)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "WARNING: --trust-any-key")
}
