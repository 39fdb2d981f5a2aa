package deploycheck

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/replicate"
)

var chartDir = filepath.Join(repo, "deploy/helm/envdr")

// rendered is one release's objects, decoded strictly into their types.
type rendered struct {
	deploy   *appsv1.Deployment
	sa       *corev1.ServiceAccount            // the daemon's
	sas      map[string]*corev1.ServiceAccount // by name: the daemon's and the drills'
	svc      *corev1.Service
	cms      map[string]*corev1.ConfigMap
	pdb      *policyv1.PodDisruptionBudget
	netpol   *networkingv1.NetworkPolicy
	cronJobs []*batchv1.CronJob
	jobs     []*batchv1.Job
	pvcs     map[string]*corev1.PersistentVolumeClaim
	custom   map[string]map[string]any // kind -> object (KEDA, monitoring.coreos.com)
	kinds    []string
}

// crdAPIs are the APIs of the CRDs the chart can use: KEDA's and the Prometheus Operator's.
var crdAPIs = []string{"keda.sh/v1alpha1", "monitoring.coreos.com/v1"}

// render renders the chart as `helm template --api-versions ...` does on a cluster with KEDA
// and the Prometheus Operator (crdAPIs), with the Helm Go SDK: the chart's values, then each
// overlay file, then set (values.schema.json checked, as helm does).
func render(t *testing.T, overlays []string, set map[string]any) (map[string]string, error) {
	t.Helper()
	return renderOn(t, cluster{apis: crdAPIs}, overlays, set)
}

// cluster is what a render knows of the cluster: the APIs beyond the built-in ones, and the
// Kubernetes version (default 1.31).
type cluster struct {
	apis []string
	kube string
}

func renderOn(t *testing.T, on cluster, overlays []string, set map[string]any) (map[string]string, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	require.NoError(t, err)
	vals := map[string]any{}
	for _, f := range overlays {
		v, err := chartutil.ReadValuesFile(filepath.Join(chartDir, f))
		require.NoError(t, err)
		vals = chartutil.CoalesceTables(v.AsMap(), vals)
	}
	vals = chartutil.CoalesceTables(set, vals)
	caps := *chartutil.DefaultCapabilities
	caps.APIVersions = append(slices.Clone(caps.APIVersions), on.apis...)
	kube := on.kube
	if kube == "" {
		kube = "1.31"
	}
	major, minor, _ := strings.Cut(kube, ".")
	caps.KubeVersion = chartutil.KubeVersion{Version: "v" + kube + ".0", Major: major, Minor: minor}
	top, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: "envdr", Namespace: "envdr", IsInstall: true, Revision: 1}, &caps)
	if err != nil {
		return nil, err // values.schema.json refused the values
	}
	return engine.Engine{Strict: true}.Render(ch, top)
}

// decode splits the rendered files into objects and decodes each strictly into its
// k8s.io/api type; the CRDs (KEDA, Prometheus Operator) are decoded into maps and checked below.
func decode(t *testing.T, files map[string]string) *rendered {
	t.Helper()
	r := &rendered{cms: map[string]*corev1.ConfigMap{}, sas: map[string]*corev1.ServiceAccount{}, pvcs: map[string]*corev1.PersistentVolumeClaim{},
		custom: map[string]map[string]any{}}
	defer func() {
		if r.deploy != nil {
			r.sa = r.sas[r.deploy.Spec.Template.Spec.ServiceAccountName]
		}
	}()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for _, doc := range strings.Split(files[name], "\n---") {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var meta struct{ APIVersion, Kind string }
			require.NoError(t, yaml.Unmarshal([]byte(doc), &meta), name)
			var target any
			switch meta.APIVersion + "/" + meta.Kind {
			case "apps/v1/Deployment":
				target = decodeInto(&r.deploy)
			case "v1/ServiceAccount":
				sa := &corev1.ServiceAccount{}
				target = sa
				defer func() { r.sas[sa.Name] = sa }()
			case "v1/Service":
				target = decodeInto(&r.svc)
			case "v1/ConfigMap":
				cm := &corev1.ConfigMap{}
				target = cm
				defer func() { r.cms[cm.Name] = cm }()
			case "policy/v1/PodDisruptionBudget":
				target = decodeInto(&r.pdb)
			case "networking.k8s.io/v1/NetworkPolicy":
				target = decodeInto(&r.netpol)
			case "batch/v1/CronJob":
				cj := &batchv1.CronJob{}
				r.cronJobs = append(r.cronJobs, cj)
				target = cj
			case "batch/v1/Job":
				j := &batchv1.Job{}
				r.jobs = append(r.jobs, j)
				target = j
			case "v1/PersistentVolumeClaim":
				pvc := &corev1.PersistentVolumeClaim{}
				target = pvc
				defer func() { r.pvcs[pvc.Name] = pvc }()
			case "keda.sh/v1alpha1/ScaledObject", "keda.sh/v1alpha1/TriggerAuthentication",
				"monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule":
				m := map[string]any{}
				r.custom[meta.Kind] = m
				target = &m
			default:
				t.Fatalf("%s: unexpected %s %s", name, meta.APIVersion, meta.Kind)
			}
			require.NoError(t, yaml.UnmarshalStrict([]byte(doc), target), "%s: %s", name, meta.Kind)
			r.kinds = append(r.kinds, meta.Kind)
		}
	}
	return r
}

// decodeInto points *p at a new T and returns it, the target to decode an object into.
func decodeInto[T any](p **T) any {
	*p = new(T)
	return *p
}

func stripComments(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func field(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

// checkRelease checks how a release's objects fit together.
func checkRelease(t *testing.T, r *rendered, region string) {
	t.Helper()
	require.NotNil(t, r.deploy)
	require.NotNil(t, r.sa)
	require.NotNil(t, r.svc)
	require.NotNil(t, r.pdb)
	require.NotNil(t, r.netpol)
	pod := r.deploy.Spec.Template
	labels := pod.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	require.Equal(t, region, labels["envdr.dev/region"])
	require.True(t, matches(r.deploy.Spec.Selector.MatchLabels), "Deployment selector")
	require.True(t, matches(r.pdb.Spec.Selector.MatchLabels), "PDB selector")
	require.True(t, matches(r.svc.Spec.Selector), "Service selector")
	require.True(t, matches(r.netpol.Spec.PodSelector.MatchLabels), "NetworkPolicy selector")
	require.NotNil(t, r.pdb.Spec.UnhealthyPodEvictionPolicy)
	require.Equal(t, policyv1.AlwaysAllow, *r.pdb.Spec.UnhealthyPodEvictionPolicy)
	require.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, r.netpol.Spec.PolicyTypes)
	require.Equal(t, "admin", r.netpol.Spec.Ingress[0].Ports[0].Port.String())

	require.Equal(t, r.sa.Name, pod.Spec.ServiceAccountName)
	require.Len(t, pod.Spec.Containers, 1)
	c := pod.Spec.Containers[0]
	require.Equal(t, []string{"run", "--region", region, "--config", "/etc/envdr/envdr.yaml", "--admin-addr", ":9090"}, c.Args)
	require.Equal(t, corev1.EnvVar{Name: "AWS_REGION", Value: region}, c.Env[0])
	require.Len(t, pod.Annotations["checksum/config"], 64)
	require.Equal(t, int64(35), *pod.Spec.TerminationGracePeriodSeconds)
	require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	require.False(t, c.Resources.Requests.Cpu().IsZero())
	require.False(t, c.Resources.Limits.Memory().IsZero())

	// KEDA scales this Deployment on this region's queue.
	so := r.custom["ScaledObject"]
	require.Equal(t, r.deploy.Name, field(so, "spec", "scaleTargetRef", "name"))
	trig := field(so, "spec", "triggers").([]any)[0].(map[string]any)
	require.Equal(t, "aws-sqs-queue", trig["type"])
	require.Equal(t, region, field(trig, "metadata", "awsRegion"))
	require.Contains(t, field(trig, "metadata", "queueURL"), "sqs."+region+".amazonaws.com")
	require.Equal(t, field(r.custom["TriggerAuthentication"], "metadata", "name"), field(trig, "authenticationRef", "name"))
	require.Nil(t, r.deploy.Spec.Replicas, "KEDA owns the replica count")

	// The ServiceMonitor scrapes the Service's admin port.
	sm := r.custom["ServiceMonitor"]
	for k, v := range field(sm, "spec", "selector", "matchLabels").(map[string]any) {
		require.Equal(t, v, r.svc.Labels[k], "ServiceMonitor selector %s", k)
	}
	require.Equal(t, r.svc.Spec.Ports[0].Name, field(sm, "spec", "endpoints").([]any)[0].(map[string]any)["port"])

	// The PrometheusRule is deploy/monitoring's, and the chart ships that very file.
	for _, f := range []string{"prometheusrule.yaml", "grafana-dashboard.json"} {
		a, err := os.ReadFile(filepath.Join(repo, "deploy/monitoring", f))
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(chartDir, "files", f))
		require.NoError(t, err)
		require.True(t, bytes.Equal(a, b), "deploy/helm/envdr/files/%s differs from deploy/monitoring/%s: cp deploy/monitoring/%s deploy/helm/envdr/files/", f, f, f)
	}
	// With the default SLO and jobs, its groups are the file's, then the release's own absent
	// alert for its job and region.
	var want map[string]any
	b, _ := os.ReadFile(filepath.Join(repo, "deploy/monitoring/prometheusrule.yaml"))
	require.NoError(t, yaml.Unmarshal(b, &want))
	groups := field(r.custom["PrometheusRule"], "spec", "groups").([]any)
	fileGroups := want["spec"].(map[string]any)["groups"].([]any)
	require.Equal(t, fileGroups, groups[:len(groups)-1])
	own := groups[len(groups)-1].(map[string]any)["rules"].([]any)[0].(map[string]any)
	require.Equal(t, `absent(up{job="`+r.svc.Name+`",namespace="envdr"} == 1)`, own["expr"])
	require.Equal(t, region, own["labels"].(map[string]any)["daemon_region"])

	// EKS Pod Identity: the pods reach the node's agent (IPv4 and IPv6, port 80); IMDS stays
	// closed by default.
	agent := false
	for _, e := range r.netpol.Spec.Egress {
		var cidrs []string
		for _, p := range e.To {
			if p.IPBlock != nil {
				cidrs = append(cidrs, p.IPBlock.CIDR)
			}
		}
		require.NotContains(t, cidrs, "169.254.169.254/32", "IMDS is closed unless networkPolicy.imds")
		if slices.Contains(cidrs, "169.254.170.23/32") {
			require.Contains(t, cidrs, "fd00:ec2::23/128")
			require.Equal(t, "80", e.Ports[0].Port.String())
			agent = true
		}
	}
	podIdentity := r.sa.Annotations["eks.amazonaws.com/role-arn"] == ""
	require.Equal(t, podIdentity, agent, "the NetworkPolicy opens the Pod Identity agent exactly when aws.identity is pod-identity")

	// Drills: one CronJob per lost region, never this one, with the same config and their own
	// identity: the drill's service account (the drill role), not the daemon's.
	require.NotEmpty(t, r.cronJobs)
	drillSA := r.sas[r.deploy.Name+"-drill"]
	require.NotNil(t, drillSA, "the drill's service account %s-drill; have %v", r.deploy.Name, slices.Collect(maps.Keys(r.sas)))
	require.False(t, *drillSA.AutomountServiceAccountToken)
	if !podIdentity {
		require.Equal(t, "arn:aws:iam::111122223333:role/envdr-drill", drillSA.Annotations["eks.amazonaws.com/role-arn"])
	}
	for _, cj := range r.cronJobs {
		ps := cj.Spec.JobTemplate.Spec.Template.Spec
		require.Equal(t, corev1.RestartPolicyNever, ps.RestartPolicy)
		require.Equal(t, drillSA.Name, ps.ServiceAccountName)
		require.NotEqual(t, r.sa.Name, ps.ServiceAccountName, "a drill never runs as the daemon")
		args := ps.Containers[0].Args
		require.Equal(t, "drill", args[0])
		lose := args[indexOf(args, "--lose")+1]
		require.NotEqual(t, region, lose)
		require.Contains(t, cj.Name, "drill-"+lose)
		require.Contains(t, args, "--pushgateway")
		require.Contains(t, args, "--max-rpo")
		require.Equal(t, pod.Annotations["checksum/config"], cj.Spec.JobTemplate.Spec.Template.Annotations["checksum/config"])
		require.Equal(t, pod.Spec.Volumes[0], ps.Volumes[0], "the drill reads the daemon's config")
	}
}

// regionValues are the chart's ci/*-values.yaml files (a release per region), relative to the chart.
func regionValues(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	require.NoError(t, err)
	require.Len(t, files, 2, "ci/eu-west-1-values.yaml and ci/ap-southeast-2-values.yaml")
	for i, f := range files {
		files[i], _ = filepath.Rel(chartDir, f)
	}
	return files
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}

// The default values: one release in us-east-1, config from a ConfigMap, IRSA.
func TestChartDefaults(t *testing.T) {
	files, err := render(t, nil, nil)
	require.NoError(t, err)
	r := decode(t, files)
	checkRelease(t, r, "us-east-1")
	cm := r.cms["envdr-us-east-1-config"]
	require.NotNil(t, cm, "config ConfigMap; have %v", r.kinds)
	c, err := config.Parse([]byte(cm.Data["envdr.yaml"]))
	require.NoError(t, err, "the chart's default config must load")
	require.Equal(t, "us-east-1", c.HomeRegion)
	require.Equal(t, "envdr-us-east-1-config", r.deploy.Spec.Template.Spec.Volumes[0].ConfigMap.Name)
	require.Equal(t, "arn:aws:iam::111122223333:role/envdr-daemon", r.sa.Annotations["eks.amazonaws.com/role-arn"])
	require.NotNil(t, r.cms["envdr-us-east-1-dashboard"])
	require.Len(t, r.cronJobs, 1)
	require.Contains(t, r.deploy.Spec.Template.Spec.Containers[0].Image, ":v0.1.0")

	// A config change changes the checksum, so the pods roll; nothing else does.
	again, err := render(t, nil, nil)
	require.NoError(t, err)
	require.Equal(t, r.deploy.Spec.Template.Annotations["checksum/config"], decode(t, again).deploy.Spec.Template.Annotations["checksum/config"])
	changed, err := render(t, nil, map[string]any{"config": map[string]any{"content": cm.Data["envdr.yaml"] + "trusted_keys: []\n"}})
	require.NoError(t, err)
	require.NotEqual(t, r.deploy.Spec.Template.Annotations["checksum/config"], decode(t, changed).deploy.Spec.Template.Annotations["checksum/config"])
}

// A second region's release: config from an external secret, EKS Pod Identity, a digest-pinned
// image, drills losing the two other regions.
func TestChartSecondRegion(t *testing.T) {
	files, err := render(t, []string{"ci/eu-west-1-values.yaml"}, nil)
	require.NoError(t, err)
	r := decode(t, files)
	checkRelease(t, r, "eu-west-1")
	require.Empty(t, r.sa.Annotations["eks.amazonaws.com/role-arn"], "Pod Identity: no IRSA annotation")
	vol := r.deploy.Spec.Template.Spec.Volumes[0]
	require.NotNil(t, vol.Secret)
	require.Equal(t, "envdr-config-eu-west-1", vol.Secret.SecretName)
	require.Equal(t, []corev1.KeyToPath{{Key: "envdr.yaml", Path: "envdr.yaml"}}, vol.Secret.Items)
	require.Nil(t, r.cms["envdr-eu-west-1-config"], "no ConfigMap when the config comes from a secret")
	require.True(t, strings.HasSuffix(r.deploy.Spec.Template.Spec.Containers[0].Image, "@sha256:4b1f3e0f6b2f1c8d9e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e"))
	var lost []string
	for _, cj := range r.cronJobs {
		args := cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args
		lost = append(lost, args[indexOf(args, "--lose")+1])
		require.Equal(t, "envdr-drill-reports", cj.Spec.JobTemplate.Spec.Template.Spec.Volumes[2].PersistentVolumeClaim.ClaimName)
	}
	require.Equal(t, []string{"us-east-1", "ap-southeast-2"}, lost)
	require.Equal(t, "kube-prometheus-stack", r.custom["ServiceMonitor"]["metadata"].(map[string]any)["labels"].(map[string]any)["release"])
	names := map[string]bool{}
	for _, n := range []string{r.deploy.Name, r.sa.Name, r.svc.Name, r.pdb.Name, r.netpol.Name} {
		names[n] = true
	}
	require.Equal(t, map[string]bool{"envdr-eu-west-1": true}, names, "every object is named for its region")
}

// The chart refuses what would deploy a broken release, naming the value.
func TestChartRefusesBadValues(t *testing.T) {
	for _, c := range []struct {
		set  map[string]any
		want string
	}{
		{map[string]any{"drill": map[string]any{"lose": []any{"us-east-1"}}}, "drill.lose \"us-east-1\" is this release's own region"},
		{map[string]any{"aws": map[string]any{"identity": "kiam"}}, "at '/aws/identity': value must be one of 'irsa', 'pod-identity'"},
		{map[string]any{"config": map[string]any{"create": false}, "keda": map[string]any{"enabled": false}}, "config.existingSecret is required"},
		{map[string]any{"region": ""}, "at '/region': '' does not match pattern"},
		{map[string]any{"monitoring": map[string]any{"slo": map[string]any{"thresholdSeconds": 12}}}, "monitoring.slo.thresholdSeconds 12 is not a bucket"},
		{map[string]any{"monitoring": map[string]any{"slo": map[string]any{"objective": 99.99}}}, "at '/monitoring/slo/objective': exclusiveMaximum: got 99.99, want 1"},
	} {
		_, err := render(t, nil, c.set)
		require.ErrorContains(t, err, c.want, fmt.Sprint(c.set))
	}
}

// helm lint (the SDK's linter, as `helm lint --strict` runs it) finds nothing above info for
// the default values and each region's (ci/*-values.yaml).
func TestChartLint(t *testing.T) {
	for _, overlay := range append([]string{""}, regionValues(t)...) {
		vals := map[string]any{}
		if overlay != "" {
			v, err := chartutil.ReadValuesFile(filepath.Join(chartDir, overlay))
			require.NoError(t, err)
			vals = v.AsMap()
		}
		// As `helm lint` runs on a current cluster (the SDK alone assumes Kubernetes 1.20, below
		// the chart's kubeVersion).
		l := lint.AllWithKubeVersion(chartDir, vals, "envdr", &chartutil.KubeVersion{Version: "v1.31.0", Major: "1", Minor: "31"})
		for _, m := range l.Messages {
			require.LessOrEqual(t, m.Severity, support.InfoSev, "%s: %s: %v", overlay, m.Path, m.Err)
		}
	}
	// The linter is not vacuous: a broken template in a copy is an error.
	broken := filepath.Join(t.TempDir(), "envdr")
	require.NoError(t, os.CopyFS(broken, os.DirFS(chartDir)))
	require.NoError(t, os.WriteFile(filepath.Join(broken, "templates/service.yaml"), []byte("{{ if .Values.region }}\nkind: Service\n"), 0o644))
	l := lint.All(broken, nil, "envdr", false)
	require.Equal(t, support.ErrorSev, l.HighestSeverity, "%v", l.Messages)
}

// The SLO is set from values: the objective recording rule and every error ratio's bucket follow
// them, and the threshold buckets the chart accepts are the daemon's.
func TestChartSLOFromValues(t *testing.T) {
	files, err := render(t, nil, map[string]any{"monitoring": map[string]any{
		"slo": map[string]any{"objective": 0.999, "thresholdSeconds": 7.5}, "fleetJobs": "replicator-.+"}})
	require.NoError(t, err)
	r := decode(t, files)
	exprs := map[string]string{}
	for _, g := range field(r.custom["PrometheusRule"], "spec", "groups").([]any) {
		for _, x := range g.(map[string]any)["rules"].([]any) {
			rule := x.(map[string]any)
			name, _ := rule["record"].(string)
			if name == "" {
				name, _ = rule["alert"].(string)
			}
			exprs[name] = rule["expr"].(string)
		}
	}
	require.Equal(t, "vector(0.999)", exprs["envdr:protection_slo_objective:ratio"])
	n := 0
	for name, e := range exprs {
		if strings.HasPrefix(name, "envdr:protection_slo_errors:") {
			n++
			require.Contains(t, e, `envdr_protection_seconds_bucket{le=~"7\\.5|7\\.5\\.0"}`, name)
			require.NotContains(t, e, `"15`, name)
		}
	}
	require.Equal(t, 7, n)
	require.Equal(t, `absent(up{job=~"replicator-.+"} == 1)`, exprs["EnvdrFleetAbsent"])

	// The chart's list of thresholds is the histogram's buckets.
	tpl, err := os.ReadFile(filepath.Join(chartDir, "templates/monitoring.yaml"))
	require.NoError(t, err)
	var list []string
	for _, b := range replicate.ProtectionBuckets {
		list = append(list, fmt.Sprintf("%q", strconv.FormatFloat(b, 'f', -1, 64)))
	}
	require.Contains(t, string(tpl), "(list "+strings.Join(list, " ")+")")
}
