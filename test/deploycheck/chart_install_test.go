package deploycheck

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chartutil"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/envdr/envdr/internal/config"
)

// The chart installs on a plain cluster (issue 23 part 3): with no KEDA and no Prometheus
// Operator, none of their objects render and the Deployment keeps its own replica count; each
// API, once the cluster serves it, brings its objects; `true` renders them without the API (a
// GitOps render), `false` never.
func TestChartCRDObjectsFollowTheCluster(t *testing.T) {
	crdKinds := []string{"PrometheusRule", "ScaledObject", "ServiceMonitor", "TriggerAuthentication"}
	kindsOf := func(r *rendered) []string {
		var out []string
		for _, k := range r.kinds {
			if slices.Contains(crdKinds, k) {
				out = append(out, k)
			}
		}
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		name string
		apis []string
		set  map[string]any
		want []string
	}{
		{"plain cluster", nil, nil, nil},
		{"KEDA", []string{"keda.sh/v1alpha1"}, nil, []string{"ScaledObject", "TriggerAuthentication"}},
		{"KEDA by kind", []string{"keda.sh/v1alpha1/ScaledObject"}, nil, []string{"ScaledObject", "TriggerAuthentication"}},
		{"Prometheus Operator", []string{"monitoring.coreos.com/v1"}, nil, []string{"PrometheusRule", "ServiceMonitor"}},
		{"both", crdAPIs, nil, crdKinds},
		{"forced on a plain cluster", nil, map[string]any{"keda": map[string]any{"enabled": true},
			"monitoring": map[string]any{"serviceMonitor": map[string]any{"enabled": true}}},
			[]string{"ScaledObject", "ServiceMonitor", "TriggerAuthentication"}},
		{"turned off on a full cluster", crdAPIs, map[string]any{"keda": map[string]any{"enabled": false},
			"monitoring": map[string]any{"serviceMonitor": map[string]any{"enabled": false}, "prometheusRule": map[string]any{"enabled": false}}}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			files, err := renderOn(t, cluster{apis: c.apis}, nil, c.set)
			require.NoError(t, err)
			r := decode(t, files)
			require.Equal(t, c.want, kindsOf(r))
			if slices.Contains(c.want, "ScaledObject") {
				require.Nil(t, r.deploy.Spec.Replicas, "KEDA owns the replica count")
			} else {
				require.NotNil(t, r.deploy.Spec.Replicas, "without KEDA the Deployment keeps its replicas")
				require.Equal(t, int32(2), *r.deploy.Spec.Replicas)
			}
			// The plain parts are there whatever the cluster serves.
			require.NotNil(t, r.svc)
			require.NotNil(t, r.cms["envdr-us-east-1-dashboard"])
			require.Len(t, r.cronJobs, 1)
		})
	}
	_, err := renderOn(t, cluster{}, nil, map[string]any{"keda": map[string]any{"enabled": "yes"}})
	require.ErrorContains(t, err, "keda/enabled", "the schema takes auto, true or false")
}

// values.schema.json (draft-07) describes every value in values.yaml and refuses a misspelt key
// or a wrong type anywhere, naming it.
func TestChartValuesSchema(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	require.NoError(t, err)
	var schema map[string]any
	require.NoError(t, json.Unmarshal(b, &schema))
	require.Equal(t, "http://json-schema.org/draft-07/schema#", schema["$schema"])

	// Every key of values.yaml, at any depth down to the Kubernetes objects it passes through,
	// is a property of the schema; every object of the schema refuses keys it does not list.
	defaults, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	var walk func(path string, v any, s map[string]any)
	walk = func(path string, v any, s map[string]any) {
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		props, _ := s["properties"].(map[string]any)
		if props == nil {
			return // a map of names (labels, annotations, selectors): any key
		}
		require.Equal(t, false, s["additionalProperties"], "%s: the schema must refuse unknown keys", path)
		for k, sub := range m {
			ps, ok := props[k].(map[string]any)
			require.True(t, ok, "values.yaml %s.%s is not in values.schema.json", path, k)
			walk(path+"."+k, sub, ps)
		}
	}
	walk("", defaults.AsMap(), schema)

	// The Kubernetes types the chart passes through are described with exactly their fields.
	props := func(path ...string) []string {
		s := schema
		for _, p := range path {
			s = s["properties"].(map[string]any)[p].(map[string]any)
			if items, ok := s["items"].(map[string]any); ok {
				s = items
			}
		}
		return slices.Sorted(maps.Keys(s["properties"].(map[string]any)))
	}
	for _, c := range []struct {
		path []string
		typ  any
	}{
		{[]string{"podSecurityContext"}, corev1.PodSecurityContext{}},
		{[]string{"containerSecurityContext"}, corev1.SecurityContext{}},
		{[]string{"extraEnv"}, corev1.EnvVar{}},
		{[]string{"imagePullSecrets"}, corev1.LocalObjectReference{}},
		{[]string{"tolerations"}, corev1.Toleration{}},
		{[]string{"resources"}, corev1.ResourceRequirements{}},
		{[]string{"affinity"}, corev1.Affinity{}},
	} {
		require.Equal(t, jsonFields(c.typ), props(c.path...), "values.schema.json %v vs %T", c.path, c.typ)
	}

	for _, c := range []struct {
		set  map[string]any
		want string
	}{
		{map[string]any{"regoin": "eu-west-1"}, "additional properties 'regoin' not allowed"},
		{map[string]any{"keda": map[string]any{"queueUrl": "x"}}, "at '/keda': additional properties 'queueUrl' not allowed"},
		{map[string]any{"drill": map[string]any{"reportsClaim": "old"}}, "at '/drill': additional properties 'reportsClaim' not allowed"},
		{map[string]any{"podSecurityContext": map[string]any{"runAsUsr": 1000}}, "additional properties 'runAsUsr' not allowed"},
		{map[string]any{"replicas": "two"}, "at '/replicas': got string, want integer"},
		{map[string]any{"adminPort": 70000}, "/adminPort"},
		{map[string]any{"extraEnv": []any{map[string]any{"value": "x"}}}, "missing property 'name'"},
		{map[string]any{"image": map[string]any{"digest": "latest"}}, "/image/digest"},
		{map[string]any{"drill": map[string]any{"reports": map[string]any{"s3": "bucket/prefix"}}}, "/drill/reports/s3"},
		{map[string]any{"scan": map[string]any{"command": "rewrap"}}, "/scan/command"},
		{map[string]any{"aws": map[string]any{"identity": "kiam"}}, "/aws/identity"},
	} {
		_, err := render(t, nil, c.set)
		require.ErrorContains(t, err, c.want, fmt.Sprint(c.set))
	}
}

// jsonFields are a Kubernetes type's JSON field names.
func jsonFields(v any) []string {
	var out []string
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// KEDA reads the release's own region's queue: derived from the config the chart writes, or
// named in values and checked against the region; a mismatch fails the render.
func TestChartQueueFollowsTheRegion(t *testing.T) {
	ch, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	content, err := ch.PathValue("config.content")
	require.NoError(t, err)
	cfg, err := config.Parse([]byte(content.(string)))
	require.NoError(t, err)
	for _, region := range cfg.RegionNames() {
		t.Run(region, func(t *testing.T) {
			lose := cfg.RegionNames()[0]
			if lose == region {
				lose = cfg.RegionNames()[1]
			}
			files, err := render(t, nil, map[string]any{"region": region, "drill": map[string]any{"lose": []any{lose}}})
			require.NoError(t, err)
			r := decode(t, files)
			trig := field(r.custom["ScaledObject"], "spec", "triggers").([]any)[0].(map[string]any)
			want, _ := cfg.Queues(region)
			require.NotEmpty(t, want)
			require.Equal(t, want, field(trig, "metadata", "queueURL"), "the config's queue for %s", region)
			require.Contains(t, want, "sqs."+region+".amazonaws.com")
			require.Equal(t, region, field(trig, "metadata", "awsRegion"))
		})
	}

	usEast1 := "https://sqs.us-east-1.amazonaws.com/111122223333/envdr-events"
	euWest1 := "https://sqs.eu-west-1.amazonaws.com/111122223333/envdr-events-eu-west-1"
	eu := map[string]any{"region": "eu-west-1", "drill": map[string]any{"lose": []any{"us-east-1"}}}
	with := func(extra map[string]any) map[string]any {
		return chartutil.CoalesceTables(extra, maps.Clone(eu))
	}
	secret := map[string]any{"create": false, "existingSecret": "envdr-config"}
	for _, c := range []struct {
		name string
		apis []string
		set  map[string]any
		want string
	}{
		{"eu-west-1 pointed at us-east-1's queue", crdAPIs, with(map[string]any{"keda": map[string]any{"queueURL": usEast1}}),
			"keda.queueURL " + usEast1 + " is not region eu-west-1's queue in config.content (" + euWest1 + ")"},
		{"the same, checked before KEDA is installed", nil, with(map[string]any{"keda": map[string]any{"queueURL": usEast1}}),
			"is not region eu-west-1's queue in config.content"},
		{"config from a secret, another region's queue", crdAPIs, with(map[string]any{"config": secret, "keda": map[string]any{"queueURL": usEast1}}),
			`keda.queueURL ` + usEast1 + ` is not a queue in region eu-west-1 (its host "sqs.us-east-1.amazonaws.com" does not name the region)`},
		{"config from a secret, no queue", crdAPIs, with(map[string]any{"config": secret}),
			"keda.queueURL is required when the config comes from config.existingSecret: region eu-west-1's events queue"},
		{"a region the config does not know", nil, map[string]any{"region": "eu-central-1"},
			"region eu-central-1 is not one of config.content's regions (us-east-1, eu-west-1, ap-southeast-2)"},
	} {
		_, err := renderOn(t, cluster{apis: c.apis}, nil, c.set)
		require.ErrorContains(t, err, c.want, c.name)
	}
	// The right queue, named in values, is accepted; so is a VPC endpoint's URL in the region.
	for _, q := range []string{euWest1, "https://vpce-0123-abcd.sqs.eu-west-1.vpce.amazonaws.com/111122223333/envdr-events-eu-west-1"} {
		set := with(map[string]any{"config": secret, "keda": map[string]any{"queueURL": q}})
		files, err := render(t, nil, set)
		require.NoError(t, err, q)
		trig := field(decode(t, files).custom["ScaledObject"], "spec", "triggers").([]any)[0].(map[string]any)
		require.Equal(t, q, field(trig, "metadata", "queueURL"))
	}
}

// Every pod of the release takes the security contexts, pull secrets, priority class, extra
// environment and resources from values; OpenShift's restricted SCC gets pods with no uid.
func TestChartPodOverrides(t *testing.T) {
	set := map[string]any{
		"imagePullSecrets":  []any{map[string]any{"name": "regcred"}},
		"priorityClassName": "envdr-critical",
		"extraEnv":          []any{map[string]any{"name": "ENVDR_LOG_LEVEL", "value": "debug"}},
		// OpenShift restricted(-v2) SCC: the uid, gid and fsGroup come from the namespace's range.
		"podSecurityContext":       map[string]any{"runAsUser": nil, "runAsGroup": nil, "fsGroup": nil},
		"containerSecurityContext": map[string]any{"seccompProfile": map[string]any{"type": "RuntimeDefault"}},
		"resources":                map[string]any{"requests": map[string]any{"cpu": "1", "memory": "256Mi"}, "limits": map[string]any{"memory": "1Gi"}},
		"scan":                     map[string]any{"enabled": true},
	}
	files, err := render(t, nil, set)
	require.NoError(t, err)
	r := decode(t, files)
	pods := map[string]corev1.PodSpec{"Deployment": r.deploy.Spec.Template.Spec}
	for _, cj := range r.cronJobs {
		pods["CronJob "+cj.Name] = cj.Spec.JobTemplate.Spec.Template.Spec
	}
	for _, j := range r.jobs {
		pods["Job "+j.Name] = j.Spec.Template.Spec
	}
	require.Len(t, pods, 4, "the daemon, a drill, the scan's shards and its merge")
	for what, ps := range pods {
		require.Equal(t, []corev1.LocalObjectReference{{Name: "regcred"}}, ps.ImagePullSecrets, what)
		require.Equal(t, "envdr-critical", ps.PriorityClassName, what)
		sc := ps.SecurityContext
		require.Nil(t, sc.RunAsUser, "%s: OpenShift assigns the uid", what)
		require.Nil(t, sc.RunAsGroup, what)
		require.Nil(t, sc.FSGroup, what)
		require.True(t, *sc.RunAsNonRoot, "%s: the other defaults stay", what)
		require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type, what)
		require.False(t, *ps.AutomountServiceAccountToken, what)
		c := ps.Containers[0]
		require.Equal(t, corev1.EnvVar{Name: "ENVDR_LOG_LEVEL", Value: "debug"}, c.Env[len(c.Env)-1], what)
		require.Contains(t, c.Env, corev1.EnvVar{Name: "AWS_REGION", Value: "us-east-1"}, what)
		require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem, "%s: the container's defaults stay", what)
		require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, c.SecurityContext.SeccompProfile.Type, what)
	}
	c := r.deploy.Spec.Template.Spec.Containers[0]
	require.Equal(t, "1", c.Resources.Requests.Cpu().String())
	require.Equal(t, "1Gi", c.Resources.Limits.Memory().String())

	// The defaults: uid 65532 (distroless's nonroot), no pull secrets, no priority class.
	files, err = render(t, nil, nil)
	require.NoError(t, err)
	d := decode(t, files).deploy.Spec.Template.Spec
	require.Equal(t, int64(65532), *d.SecurityContext.RunAsUser)
	require.Empty(t, d.ImagePullSecrets)
	require.Empty(t, d.PriorityClassName)
}

// Drill reports are audit evidence: by default on a claim of their own that outlives the release,
// one report per run (named for the run's Job); or on an existing claim; or in S3 (the chart
// passes --report s3://...; envdr writes it).
func TestChartDrillReports(t *testing.T) {
	drillPod := func(r *rendered) corev1.PodSpec {
		require.Len(t, r.cronJobs, 1)
		return r.cronJobs[0].Spec.JobTemplate.Spec.Template.Spec
	}
	reportArg := func(ps corev1.PodSpec) string {
		args := ps.Containers[0].Args
		require.NotContains(t, args, "--force", "a run never replaces an earlier run's report")
		return args[indexOf(args, "--report")+1]
	}
	jobName := corev1.EnvVar{Name: "ENVDR_JOB_NAME", ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['batch.kubernetes.io/job-name']"}}}

	files, err := render(t, nil, nil)
	require.NoError(t, err)
	r := decode(t, files)
	pvc := r.pvcs["envdr-us-east-1-drill-reports"]
	require.NotNil(t, pvc, "the chart's claim; have %v", slices.Collect(maps.Keys(r.pvcs)))
	require.Equal(t, "keep", pvc.Annotations["helm.sh/resource-policy"], "helm uninstall keeps the evidence")
	require.Equal(t, "1Gi", pvc.Spec.Resources.Requests.Storage().String())
	require.Nil(t, pvc.Spec.StorageClassName, "the cluster's default StorageClass")
	ps := drillPod(r)
	require.Equal(t, "/reports/lose-eu-west-1/$(ENVDR_JOB_NAME)", reportArg(ps))
	require.Equal(t, jobName, ps.Containers[0].Env[0], "defined before use, so $(ENVDR_JOB_NAME) expands")
	var claim string
	for _, v := range ps.Volumes {
		require.False(t, v.Name == "reports" && v.EmptyDir != nil, "never an emptyDir")
		if v.Name == "reports" {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	require.Equal(t, pvc.Name, claim)

	files, err = render(t, nil, map[string]any{"drill": map[string]any{"reports": map[string]any{"persistence": map[string]any{
		"existingClaim": "audit-evidence", "storageClassName": "efs"}}}})
	require.NoError(t, err)
	r = decode(t, files)
	require.Empty(t, r.pvcs, "an existing claim: none created")
	require.Equal(t, "audit-evidence", drillPod(r).Volumes[2].PersistentVolumeClaim.ClaimName)

	files, err = render(t, []string{"ci/ap-southeast-2-values.yaml"}, nil)
	require.NoError(t, err)
	r = decode(t, files)
	ps = drillPod(r)
	require.Equal(t, "s3://envdr-drill-reports-ap-southeast-2/drills/lose-us-east-1/$(ENVDR_JOB_NAME)", reportArg(ps))
	require.Equal(t, jobName, ps.Containers[0].Env[0])
	for _, v := range ps.Volumes {
		require.NotEqual(t, "reports", v.Name, "reports to S3: no volume")
	}
	require.Nil(t, r.pvcs["envdr-ap-southeast-2-drill-reports"])
}

// The sharded scan: an Indexed Job of N shards, each pod reading its shard
// ($(JOB_COMPLETION_INDEX) from 0) as the read-only drill role, and a merge Job waiting for
// exactly the N reports on the same claim.
func TestChartScanJob(t *testing.T) {
	files, err := render(t, []string{"ci/ap-southeast-2-values.yaml"}, nil)
	require.NoError(t, err)
	r := decode(t, files)
	checkScan(t, r, "envdr-ap-southeast-2-verify-2026-12", 4, 2, []string{"verify", "--config", "/etc/envdr/envdr.yaml", "--no-write"}, "/reports/verify-2026-12")

	files, err = render(t, nil, map[string]any{"scan": map[string]any{"enabled": true, "command": "drill", "lose": "ap-southeast-2",
		"shards": 3, "parallelism": 3, "sameNode": false}})
	require.NoError(t, err)
	r = decode(t, files)
	checkScan(t, r, "envdr-us-east-1-drill-r1", 3, 3, []string{"drill", "--config", "/etc/envdr/envdr.yaml", "--lose", "ap-southeast-2",
		"--max-rpo", "15m", "--min-recoverable", "100"}, "/reports/drill-r1")
	require.Nil(t, r.jobs[0].Spec.Template.Spec.Affinity, "sameNode false: the shards spread (a ReadWriteMany claim)")

	for _, c := range []struct {
		on   cluster
		set  map[string]any
		want string
	}{
		{cluster{}, map[string]any{"command": "drill"}, "scan.lose is required with scan.command drill"},
		{cluster{}, map[string]any{"command": "drill", "lose": "us-east-1"}, `scan.lose "us-east-1" is this release's own region`},
		{cluster{}, map[string]any{"shards": 2, "parallelism": 4}, "scan.parallelism 4 is more than scan.shards 2"},
		{cluster{kube: "1.28"}, nil, "scan needs Kubernetes 1.29 or later"},
		{cluster{}, map[string]any{"runId": "Not_A_Name"}, "/scan/runId"},
	} {
		set := map[string]any{"enabled": true}
		maps.Copy(set, c.set)
		_, err := renderOn(t, c.on, nil, map[string]any{"scan": set})
		require.ErrorContains(t, err, c.want, fmt.Sprint(c.set))
	}
	files, err = render(t, nil, nil)
	require.NoError(t, err)
	require.Empty(t, decode(t, files).jobs, "off by default")
}

func checkScan(t *testing.T, r *rendered, name string, shards, parallelism int32, cmd []string, dir string) {
	t.Helper()
	require.Len(t, r.jobs, 2)
	scan, merge := r.jobs[0], r.jobs[1]
	require.Equal(t, name, scan.Name)
	require.Equal(t, name+"-merge", merge.Name)
	s := scan.Spec
	require.NotNil(t, s.CompletionMode)
	require.Equal(t, "Indexed", string(*s.CompletionMode))
	require.Equal(t, shards, *s.Completions)
	require.Equal(t, parallelism, *s.Parallelism)
	require.Equal(t, int32(0), *s.BackoffLimitPerIndex, "a shard runs once")
	require.Equal(t, shards, *s.MaxFailedIndexes, "a failing shard does not stop the others")
	ps := s.Template.Spec
	require.Equal(t, corev1.RestartPolicyNever, ps.RestartPolicy)
	require.Equal(t, r.deploy.Name+"-drill", ps.ServiceAccountName, "the read-only drill role")
	want := append(slices.Clone(cmd), "--shard", fmt.Sprintf("$(JOB_COMPLETION_INDEX)/%d", shards), "--shard-base", "0",
		"--segments", ps.Containers[0].Args[indexOf(ps.Containers[0].Args, "--segments")+1],
		"--report", dir+"/shard-$(JOB_COMPLETION_INDEX)", "--quiet")
	require.Equal(t, want, ps.Containers[0].Args)

	mps := merge.Spec.Template.Spec
	margs := mps.Containers[0].Args
	var reports []string
	for i := range shards {
		reports = append(reports, fmt.Sprintf("%s/shard-%d.json", dir, i))
	}
	require.Equal(t, append([]string{"report", "merge", "--wait", fmt.Sprintf("%ds", *s.ActiveDeadlineSeconds), "--out", dir + "/merged"}, reports...), margs)
	require.Greater(t, *merge.Spec.ActiveDeadlineSeconds, *s.ActiveDeadlineSeconds, "the merge outlives the shards' deadline")
	claim := func(ps corev1.PodSpec) string {
		for _, v := range ps.Volumes {
			if v.Name == "reports" {
				return v.PersistentVolumeClaim.ClaimName
			}
		}
		return ""
	}
	require.NotEmpty(t, claim(ps))
	require.Equal(t, claim(ps), claim(mps), "the shards and the merge share the reports' claim")
	require.Equal(t, "keep", r.pvcs[claim(ps)].Annotations["helm.sh/resource-policy"])
	if ps.Affinity != nil {
		sel := ps.Affinity.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].LabelSelector.MatchLabels
		for k, v := range sel {
			require.Equal(t, v, s.Template.Labels[k])
			require.Equal(t, v, merge.Spec.Template.Labels[k], "the merge pod holds the claim's node for the shards")
		}
	}
}

// The values files' YAML parses as the chart sees it (a guard for the test's own fixtures).
func TestChartRegionValuesFiles(t *testing.T) {
	for _, f := range regionValues(t) {
		b, err := os.ReadFile(filepath.Join(chartDir, f))
		require.NoError(t, err)
		var v struct {
			Region string `json:"region"`
		}
		require.NoError(t, yaml.Unmarshal(b, &v))
		require.Equal(t, strings.TrimSuffix(filepath.Base(f), "-values.yaml"), v.Region, f)
		files, err := render(t, []string{f}, nil)
		require.NoError(t, err, f)
		checkRelease(t, decode(t, files), v.Region)
	}
}
