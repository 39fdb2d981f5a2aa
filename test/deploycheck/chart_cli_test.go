package deploycheck

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

var helmOnce = sync.OnceValues(func() (string, error) {
	// scripts/helm.sh builds the pinned helm (this module's `tool` line) once into .tools/bin.
	cmd := exec.Command("bash", filepath.Join(repo, "scripts/helm.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
})

// helmCLI runs the pinned helm binary on the chart and returns stdout and stderr.
func helmCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	bin, err := helmOnce()
	require.NoError(t, err, "scripts/helm.sh: %v", err)
	cmd := exec.Command(bin, args...)
	cmd.Dir = repo
	// No kubeconfig, no repositories: helm template and lint need no cluster.
	cmd.Env = []string{"HOME=" + t.TempDir(), "KUBECONFIG=/dev/null", "HELM_CACHE_HOME=" + t.TempDir(), "HELM_CONFIG_HOME=" + t.TempDir(), "HELM_DATA_HOME=" + t.TempDir()}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	return stdout.String(), stderr.String(), err
}

var kindLine = regexp.MustCompile(`(?m)^kind: (\S+)$`)

func kinds(manifest string) []string {
	var out []string
	for _, m := range kindLine.FindAllStringSubmatch(manifest, -1) {
		out = append(out, m[1])
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// The helm CLI itself, as a user runs it (issue 23 part 3): `helm lint --strict` and `helm
// template` of the defaults and each region's values pass with no cluster; with no KEDA or
// Prometheus Operator API none of their objects render (what `helm install --dry-run` sees on a
// plain cluster), with --api-versions they do; a misspelt value fails; OpenShift's null uid works.
func TestHelmCLI(t *testing.T) {
	chart := "deploy/helm/envdr"
	out, stderr, err := helmCLI(t, "version", "--template", "{{.Version}}")
	require.NoError(t, err, stderr)
	require.Equal(t, "v3.22.0", out, "the pin in test/deploycheck/go.mod")

	for _, v := range append([]string{""}, regionValues(t)...) {
		args := []string{chart}
		if v != "" {
			args = append(args, "-f", filepath.Join(chart, v))
		}
		out, stderr, err := helmCLI(t, append([]string{"lint", "--strict"}, args...)...)
		require.NoError(t, err, "helm lint --strict %v: %s%s", args, out, stderr)
		require.Contains(t, out, "1 chart(s) linted, 0 chart(s) failed")

		plain, stderr, err := helmCLI(t, append([]string{"template", "envdr"}, args...)...)
		require.NoError(t, err, "helm template %v: %s", args, stderr)
		require.Contains(t, kinds(plain), "Deployment")
		for _, k := range []string{"ScaledObject", "TriggerAuthentication", "PrometheusRule"} {
			require.NotContains(t, kinds(plain), k, "helm template %v with no %s API", args, k)
		}
		full, stderr, err := helmCLI(t, append([]string{"template", "envdr", "--api-versions", "keda.sh/v1alpha1", "--api-versions", "monitoring.coreos.com/v1"}, args...)...)
		require.NoError(t, err, stderr)
		for _, k := range []string{"ScaledObject", "TriggerAuthentication", "PrometheusRule", "ServiceMonitor"} {
			require.Contains(t, kinds(full), k, "helm template %v --api-versions", args)
		}
	}
	plain, _, err := helmCLI(t, "template", "envdr", chart)
	require.NoError(t, err)
	require.Equal(t, []string{"ConfigMap", "CronJob", "Deployment", "NetworkPolicy", "PersistentVolumeClaim", "PodDisruptionBudget", "Service", "ServiceAccount"}, kinds(plain))
	require.Contains(t, plain, "\n  replicas: 2\n", "no KEDA: the Deployment keeps its replicas")

	_, stderr, err = helmCLI(t, "template", "envdr", chart, "--set", "keda.queueUrl=https://sqs.us-east-1.amazonaws.com/1/q")
	require.Error(t, err)
	require.Contains(t, stderr, "additional properties 'queueUrl' not allowed")
	_, stderr, err = helmCLI(t, "template", "envdr", chart, "--set", "replicas=two")
	require.Error(t, err)
	require.Contains(t, stderr, "at '/replicas': got string, want integer")
	_, stderr, err = helmCLI(t, "template", "envdr", chart, "--api-versions", "keda.sh/v1alpha1", "--set", "region=eu-west-1", "--set", "drill.lose={us-east-1}",
		"--set", "keda.queueURL=https://sqs.us-east-1.amazonaws.com/111122223333/envdr-events")
	require.Error(t, err)
	require.Contains(t, stderr, "is not region eu-west-1's queue in config.content")

	ocp, stderr, err := helmCLI(t, "template", "envdr", chart, "--set", "podSecurityContext.runAsUser=null", "--set", "podSecurityContext.runAsGroup=null",
		"--set", "podSecurityContext.fsGroup=null")
	require.NoError(t, err, stderr)
	require.NotContains(t, ocp, "runAsUser")
	require.NotContains(t, ocp, "fsGroup")
	require.Contains(t, ocp, "runAsNonRoot: true")
}
