//go:build infra

package infra

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/policy"
)

// These tests break a copy of the repo's infrastructure on purpose and require the same checks
// that `make validate` runs on the real files to fail, each with a message naming the problem.

// edit replaces old with new in file (which must contain old).
func edit(t *testing.T, file, old, new string) {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Contains(t, string(b), old, file)
	require.NoError(t, os.WriteFile(file, []byte(strings.Replace(string(b), old, new, 1)), 0o644))
}

func TestValidateFailsOnBrokenTerraform(t *testing.T) {
	t.Parallel()
	needTerraform(t)

	t.Run("unsupported argument", func(t *testing.T) {
		t.Parallel()
		needPlan(t)
		root := tfCopy(t)
		edit(t, filepath.Join(root, "modules/queue/main.tf"), "receive_wait_time_seconds  = 20", "receive_wait_time_seconds  = 20\n  message_ttl = 60")
		_, err := plan(t, root, "modules/queue/examples/basic", nil)
		require.ErrorContains(t, err, "Unsupported argument")
	})

	t.Run("unformatted", func(t *testing.T) {
		t.Parallel()
		root := tfCopy(t)
		edit(t, filepath.Join(root, "modules/table/main.tf"), "billing_mode = \"PAY_PER_REQUEST\"", "billing_mode=\"PAY_PER_REQUEST\"")
		cmd := exec.Command("terraform", "fmt", "-check", "-recursive", root) // fmt needs no provider
		out, err := cmd.CombinedOutput()
		require.Error(t, err, "%s", out)
		require.Contains(t, string(out), "main.tf")
	})

	// One plan of the full example with four semantic breakages (planning is the slow part):
	// each must be reported.
	t.Run("semantic breakage in three-region", func(t *testing.T) {
		t.Parallel()
		needPlan(t)
		root := tfCopy(t)
		edit(t, filepath.Join(root, "modules/kms-mrk/main.tf"), "enable_key_rotation     = true", "enable_key_rotation     = false")
		edit(t, filepath.Join(root, "modules/table/main.tf"), "point_in_time_recovery      = true", "point_in_time_recovery      = false")
		edit(t, filepath.Join(root, "modules/queue/main.tf"), "deadLetterTargetArn = local.dlq_arn", "deadLetterTargetArn = local.arn")
		// Someone "simplifies" the iam module: the daemon may use the keys without envdr:id.
		edit(t, filepath.Join(root, "modules/iam/policies.tf"),
			`"ForAnyValue:StringEquals" = merge(local.ctx, { for a in k.aliases : "kms:ResourceAliases" => [a] })`,
			`"ForAnyValue:StringEquals" = { for a in k.aliases : "kms:ResourceAliases" => [a] }`)
		p, err := plan(t, root, "examples/three-region", roots["examples/three-region"])
		require.NoError(t, err)
		err = rootChecks["examples/three-region"](p)
		require.ErrorContains(t, err, "enable_key_rotation is not true")
		require.ErrorContains(t, err, "replica eu-west-1: want point_in_time_recovery")
		require.ErrorContains(t, err, "which is not the DLQ planned with it")
		require.ErrorContains(t, err, "differs from `envdr policy render` iam-daemon.json")
		require.ErrorContains(t, err, "lint: error no-context-condition")
	})
}

// A plan carrying a given daemon policy, as checkPolicies reads it.
func fakePlan(t *testing.T, daemonPolicy string) *Plan {
	t.Helper()
	cfgYAML, err := os.ReadFile(filepath.Join(repo, "policy", "testdata", "envdr.yaml"))
	require.NoError(t, err)
	cfg, err := config.Parse(cfgYAML)
	require.NoError(t, err)
	docs, err := policy.Render(cfg, policy.Options{})
	require.NoError(t, err)
	p := &Plan{}
	p.PlannedValues.Outputs = map[string]struct{ Value any }{"envdr_config": {Value: string(cfgYAML)}}
	for _, d := range docs {
		if !strings.HasPrefix(d.Name, "iam-") {
			continue
		}
		name := strings.TrimSuffix(strings.TrimPrefix(d.Name, "iam-"), ".json")
		doc := string(d.Doc.JSON())
		if name == "daemon" {
			doc = daemonPolicy
		}
		p.PlannedValues.RootModule.Resources = append(p.PlannedValues.RootModule.Resources,
			Resource{Address: "aws_iam_role_policy." + name, Type: "aws_iam_role_policy", Name: name, Values: map[string]any{"policy": doc}})
	}
	for _, d := range docs {
		if strings.HasPrefix(d.Name, policy.KeyPolicyPrefix) {
			region := strings.TrimSuffix(strings.TrimPrefix(d.Name, policy.KeyPolicyPrefix), ".json")
			p.PlannedValues.RootModule.Resources = append(p.PlannedValues.RootModule.Resources,
				Resource{Address: "aws_kms_key." + region, Type: "aws_kms_key", Values: map[string]any{"policy": string(d.Doc.JSON()), "region": region}})
		}
	}
	return p
}

func TestValidateFailsOnBadPolicy(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load(filepath.Join(repo, "policy", "testdata", "envdr.yaml"))
	require.NoError(t, err)
	docs, err := policy.Render(cfg, policy.Options{})
	require.NoError(t, err)
	var daemon *policy.Document
	for _, d := range docs {
		if d.Name == policy.DaemonPolicy {
			daemon = d.Doc
		}
	}
	require.NoError(t, checkPolicies(fakePlan(t, string(daemon.JSON()))), "the unbroken fake plan passes")

	// Widen the daemon's key statement to every key.
	var raw map[string]any
	require.NoError(t, json.Unmarshal(daemon.JSON(), &raw))
	raw["Statement"].([]any)[0].(map[string]any)["Resource"] = "*"
	wide, err := json.Marshal(raw)
	require.NoError(t, err)
	err = checkPolicies(fakePlan(t, string(wide)))
	require.ErrorContains(t, err, "differs from `envdr policy render` iam-daemon.json")
	require.ErrorContains(t, err, "lint: error wildcard-resource")

	// A known-bad policy from the linter's table in place of the daemon's.
	bad, err := os.ReadFile(filepath.Join(repo, "policy", "testdata", "bad", "no-context-condition.iam.json"))
	require.NoError(t, err)
	require.ErrorContains(t, checkPolicies(fakePlan(t, string(bad))), "lint: error no-context-condition")

	// Not a policy at all.
	require.ErrorContains(t, checkPolicies(fakePlan(t, `{"Version": "2012-10-17"}`)), "no Statement")
}

// k8sCopy copies deploy/kubernetes into a temp dir.
func k8sCopy(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "kubernetes")
	copyTree(t, filepath.Join(repo, "deploy", "kubernetes"), dst)
	return dst
}

func TestValidateFailsOnBrokenManifests(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"unknown field", "deployment.yaml", "  revisionHistoryLimit: 5", "  revisionHistoryLimit: 5\n  replicaz: 3", `unknown field "replicaz"`},
		{"wrong type", "deployment.yaml", "  replicas: 2", `  replicas: "two"`, "cannot unmarshal string"},
		{"bad quantity", "deployment.yaml", "memory: 512Mi", "memory: 512 MB", "quantities must match"},
		{"probe path", "deployment.yaml", "path: /readyz", "path: /ready", "readiness probe must GET /readyz"},
		{"root", "deployment.yaml", "        runAsNonRoot: true\n        runAsUser", "        runAsNonRoot: false\n        runAsUser", "runAsNonRoot must be true"},
		{"writable root", "deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "read-only root"},
		{"grace", "deployment.yaml", "terminationGracePeriodSeconds: 35", "terminationGracePeriodSeconds: 10", "terminationGracePeriodSeconds"},
		{"pdb selector", "poddisruptionbudget.yaml", "      app.kubernetes.io/name: envdr", "      app.kubernetes.io/name: other", "PodDisruptionBudget: selector"},
		{"no irsa", "serviceaccount.yaml", "eks.amazonaws.com/role-arn:", "example.com/role-arn:", "IRSA"},
		{"scaled target", "scaledobject.yaml", "    name: envdr\n  minReplicaCount", "    name: envdr-worker\n  minReplicaCount", "scaleTargetRef"},
		{"scaled typo", "scaledobject.yaml", "  cooldownPeriod: 300", "  cooldownPeriods: 300", `unknown spec field "cooldownPeriods"`},
		{"config", "configmap.yaml", "mode: mrk\n        kms_rate: 1000\n        bucket: envdr-data-111122223333-us-east-1", "mode: mkr\n        kms_rate: 1000\n        bucket: envdr-data-111122223333-us-east-1", "regions[0].mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := k8sCopy(t)
			edit(t, filepath.Join(dir, tc.file), tc.old, tc.new)
			require.ErrorContains(t, checkK8s(dir), tc.want)
		})
	}
}

func TestValidateFailsOnBrokenECS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"bad enum", "task-definition.json", `"networkMode": "awsvpc"`, `"networkMode": "vpc"`, `"vpc" is not a NetworkMode`},
		{"bad nested enum", "service.json", `"assignPublicIp": "DISABLED"`, `"assignPublicIp": "OFF"`, `"OFF" is not a AssignPublicIp`},
		{"unknown field", "task-definition.json", `"stopTimeout": 35`, `"stopTimeout": 35, "stopSignal": "SIGTERM"`, `unknown field "stopSignal"`},
		{"wrong type", "service.json", `"desiredCount": 2`, `"desiredCount": "2"`, "cannot unmarshal string"},
		{"stop timeout", "task-definition.json", `"stopTimeout": 35`, `"stopTimeout": 10`, "stopTimeout must be the daemon grace"},
		{"health check", "task-definition.json", `http://127.0.0.1:9090/healthz`, `http://127.0.0.1:9090/metrics`, "health check must probe /healthz"},
		{"logs", "task-definition.json", `"logDriver": "awslogs",
        "options": {
          "awslogs-group": "/ecs/envdr",
          "awslogs-region": "us-east-1",
          "awslogs-stream-prefix": "envdr"`, `"logDriver": "json-file",
        "options": {
          "awslogs-group": "/ecs/envdr",
          "awslogs-region": "us-east-1",
          "awslogs-stream-prefix": "envdr"`, "logs must go to awslogs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "ecs")
			copyTree(t, filepath.Join(repo, "deploy", "ecs"), dir)
			edit(t, filepath.Join(dir, tc.file), tc.old, tc.new)
			require.ErrorContains(t, checkECS(dir), tc.want)
		})
	}
}

func TestValidateFailsOnBrokenDockerfile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, old, new, want string }{
		{"root user", "USER 65532:65532", "USER root", "non-root USER"},
		{"full base image", "FROM gcr.io/distroless/static-debian12:nonroot@sha256:", "FROM debian:bookworm@sha256:", "not distroless/static"},
		{"runtime base by tag only", "FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM gcr.io/distroless/static-debian12:nonroot is not pinned by digest"},
		{"build base by tag only", "golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d", "golang:1.26.8-bookworm", "FROM golang:1.26.8-bookworm is not pinned by digest"},
		{"short digest", "@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d", "@sha256:a688600c", "is not pinned by digest"},
		{"one architecture", "GOARCH=$TARGETARCH go build -trimpath -ldflags \"-s -w -X", "go build -trimpath -ldflags \"-s -w -X", "GOARCH=$TARGETARCH"},
		{"no cross-compile for the healthcheck", "GOARCH=$TARGETARCH go build -trimpath -ldflags \"-s -w\" -o /out/healthcheck", "go build -trimpath -ldflags \"-s -w\" -o /out/healthcheck", "GOARCH=$TARGETARCH"},
		{"cgo", "RUN CGO_ENABLED=0 GOOS=$TARGETOS", "RUN GOOS=$TARGETOS", "CGO_ENABLED=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := filepath.Join(t.TempDir(), "Dockerfile")
			b, err := os.ReadFile(filepath.Join(repo, "deploy", "Dockerfile"))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(f, b, 0o644))
			edit(t, f, tc.old, tc.new)
			require.ErrorContains(t, checkDockerfile(f), tc.want)
		})
	}
}
