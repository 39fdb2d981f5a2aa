package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/replicate"
	"github.com/envdr/envdr/replicate/replicatetest"
)

// TestS3OtherClientsOnTheStandIn: envelopes that `envdr seal` wrote to files and that clients
// knowing nothing of envdr put into the bucket — the aws CLI (`aws s3 cp`, a single PUT and a
// multipart upload) and the AWS SDK for JavaScript v3 — are protected by the S3 event source from
// the stand-in's own notifications, with no --enqueue, and open from another region's replica.
func TestS3OtherClientsOnTheStandIn(t *testing.T) {
	awsCLI, err := exec.LookPath("aws")
	require.NoError(t, err, "the aws CLI (preinstalled with the image's Python; or Debian's awscli) uploads the envelopes")
	node, nodePath := standInNode(t)
	env := localtest.NewWith(t, localtest.Options{S3: true})
	roles := newRoleConfigs(t, env, nil)
	envdr := func(args ...string) (string, string, int) {
		return runSplit(t, append([]string{"--config", roles.path(args...)}, args...)...)
	}
	d := replicatetest.StartDaemon(t, context.Background(), env.ConfigAs(nil, iam.RoleDaemon), zap.NewNop(), replicate.DaemonOptions{
		AdminAddr: "127.0.0.1:0", WaitTime: time.Second, RetryBase: time.Second})
	const region = "us-east-1"
	bucket := env.Bucket(region)
	dir := t.TempDir()
	plain := map[string][]byte{}
	seal := func(name string, size int) string {
		p := []byte(strings.Repeat(fmt.Sprintf("%s's object. ", name), size/16+1))[:size]
		in, out := filepath.Join(dir, name+".in"), filepath.Join(dir, name+".envdr")
		require.NoError(t, os.WriteFile(in, p, 0o600))
		_, stderr, code := envdr("seal", "--context", "client="+name, in, out)
		require.Equal(t, exitOK, code, stderr)
		plain[name+"/"+name+".envdr"] = p
		return out
	}
	id, ok := env.IAM.Identity(iam.RoleProducer)
	require.True(t, ok)
	clean := func() []string {
		var e []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "AWS_") { // this machine's AWS settings are not the stand-in's
				e = append(e, kv)
			}
		}
		return append(e, "AWS_ACCESS_KEY_ID="+id.AccessKey, "AWS_SECRET_ACCESS_KEY="+id.SecretKey, "AWS_EC2_METADATA_DISABLED=true")
	}
	ep := env.Endpoints(region).S3

	// The aws CLI, as the producer role: a small envelope (PutObject) and one above the CLI's
	// 8 MiB multipart threshold (CompleteMultipartUpload).
	cfg := filepath.Join(dir, "aws-config")
	require.NoError(t, os.WriteFile(cfg, []byte("[default]\ns3 =\n  addressing_style = path\n"), 0o600))
	for _, c := range []struct {
		name string
		size int
	}{{"awscli", 4 << 10}, {"awscli-multipart", 9 << 20}} {
		f := seal(c.name, c.size)
		cmd := exec.Command(awsCLI, "--endpoint-url", ep, "--region", region, "--only-show-errors",
			"s3", "cp", f, "s3://"+bucket+"/"+c.name+"/"+filepath.Base(f))
		cmd.Env = append(clean(), "AWS_CONFIG_FILE="+cfg, "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "none"))
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "aws s3 cp: %s", out)
	}
	// The AWS SDK for JavaScript v3 (PutObjectCommand), the version the stand-in pins.
	f := seal("jssdk", 6<<10)
	cmd := exec.Command(node, filepath.Join("testdata", "s3put.cjs"), ep, region, bucket, f, "jssdk/"+filepath.Base(f))
	cmd.Env = append(clean(), "NODE_PATH="+nodePath)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "AWS SDK for JavaScript: %s", out)

	waitQueueEmpty(t, d, 90*time.Second)
	require.Equal(t, int64(len(plain)), verifiedRecords(t, envdr), "every object has a verified record, from its notification alone")

	env.Settle()
	env.Down(region)
	openAllFromReplica(t, envdr, dir, bucket, plain, "eu-west-1")
}

// verifiedRecords runs envdr verify and returns how many records it checked (it must pass).
func verifiedRecords(t *testing.T, envdr func(...string) (string, string, int)) int64 {
	t.Helper()
	stdout, stderr, code := envdr("verify", "--output", "json")
	require.Equal(t, exitOK, code, stderr)
	var vr struct {
		Records int64 `json:"records"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &vr), stdout)
	return vr.Records
}

// openAllFromReplica opens every s3://bucket/KEY of plain (no --region: the bucket's region is
// lost) and requires the bytes back, read from region's replica.
func openAllFromReplica(t *testing.T, envdr func(...string) (string, string, int), dir, bucket string, plain map[string][]byte, region string) {
	t.Helper()
	for k, p := range plain {
		out := filepath.Join(dir, "opened-"+strings.ReplaceAll(k, "/", "-"))
		_, stderr, code := envdr("open", "--region-timeout", "2s", "s3://"+bucket+"/"+k, out)
		require.Equal(t, exitOK, code, stderr)
		require.Contains(t, stderr, "read from region "+region+"'s replica")
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		require.Equal(t, p, got, k)
	}
}

// standInNode is the Node binary `make local-up` installs for the stand-in and its node_modules
// (which hold the pinned AWS SDK for JavaScript v3, @aws-sdk/client-s3).
func standInNode(t *testing.T) (node, nodePath string) {
	t.Helper()
	tools, err := localaws.LoadTools(localtest.ToolsDir(t))
	require.NoError(t, err)
	nodePath = filepath.Join(tools.Dir, "node_modules")
	_, err = os.Stat(filepath.Join(nodePath, "@aws-sdk", "client-s3", "package.json"))
	require.NoError(t, err, "the stand-in's tools carry the AWS SDK for JavaScript (make local-install)")
	return tools.Node, nodePath
}
