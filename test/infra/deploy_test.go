//go:build infra

package infra

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/envdr/envdr/internal/config"
)

// adminPort is the daemon's --admin-addr port in every manifest.
const adminPort = 9090

// grace is the daemon's default worker.grace; stop timeouts give it 5 s on top to cancel and
// flush, so SIGKILL never cuts the grace short.
var grace = func() time.Duration { var c config.Config; c.WithDefaults(); return c.Worker.Grace }()

func stopTimeout() int32 { return int32((grace + 5*time.Second) / time.Second) }

// documents splits a YAML file into its documents.
func documents(b []byte) [][]byte {
	var out [][]byte
	for _, d := range bytes.Split(b, []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(d))) > 0 {
			out = append(out, d)
		}
	}
	return out
}

func stripComments(b []byte) []byte {
	var keep [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			keep = append(keep, l)
		}
	}
	return bytes.Join(keep, []byte("\n"))
}

// strict decodes YAML into v; unknown fields and wrong types are errors.
func strict(doc []byte, v any) error { return yaml.UnmarshalStrict(doc, v) }

// k8sObjects decodes every manifest of dir strictly into its k8s.io/api type (KEDA objects,
// which have no type here, are checked structurally) and checks how they fit together.
func checkK8s(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no manifests in %s", dir)
	}
	var (
		deploy *appsv1.Deployment
		sa     *corev1.ServiceAccount
		cm     *corev1.ConfigMap
		pdb    *policyv1.PodDisruptionBudget
		scaled map[string]any
		auth   map[string]any
	)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		for _, doc := range documents(b) {
			var meta struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			var target any
			switch meta.APIVersion + "/" + meta.Kind {
			case "apps/v1/Deployment":
				deploy = &appsv1.Deployment{}
				target = deploy
			case "v1/ServiceAccount":
				sa = &corev1.ServiceAccount{}
				target = sa
			case "v1/ConfigMap":
				cm = &corev1.ConfigMap{}
				target = cm
			case "v1/Namespace":
				target = &corev1.Namespace{}
			case "policy/v1/PodDisruptionBudget":
				pdb = &policyv1.PodDisruptionBudget{}
				target = pdb
			case "keda.sh/v1alpha1/ScaledObject":
				scaled = map[string]any{}
				target = &scaled
			case "keda.sh/v1alpha1/TriggerAuthentication":
				auth = map[string]any{}
				target = &auth
			default:
				return fmt.Errorf("%s: unexpected %s %s", f, meta.APIVersion, meta.Kind)
			}
			if err := strict(doc, target); err != nil {
				return fmt.Errorf("%s: %s: %w", f, meta.Kind, err)
			}
		}
	}
	if deploy == nil || sa == nil || cm == nil || pdb == nil || scaled == nil || auth == nil {
		return errors.New("want a Deployment, ServiceAccount, ConfigMap, PodDisruptionBudget, ScaledObject and TriggerAuthentication")
	}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if !strings.HasPrefix(sa.Annotations["eks.amazonaws.com/role-arn"], "arn:aws:iam::") {
		bad("ServiceAccount: no eks.amazonaws.com/role-arn annotation (IRSA)")
	}
	if _, err := config.Parse([]byte(cm.Data["envdr.yaml"])); err != nil {
		bad("ConfigMap envdr.yaml: %v", err)
	}

	pod := deploy.Spec.Template.Spec
	labels := deploy.Spec.Template.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if deploy.Spec.Selector == nil || !matches(deploy.Spec.Selector.MatchLabels) {
		bad("Deployment: selector does not match the pod labels")
	}
	if pdb.Spec.Selector == nil || !matches(pdb.Spec.Selector.MatchLabels) {
		bad("PodDisruptionBudget: selector does not match the Deployment's pods")
	}
	if pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
		bad("PodDisruptionBudget: neither minAvailable nor maxUnavailable")
	}
	if pod.ServiceAccountName != sa.Name {
		bad("Deployment: serviceAccountName %q, want %q", pod.ServiceAccountName, sa.Name)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds != int64(stopTimeout()) {
		bad("Deployment: terminationGracePeriodSeconds must be the daemon grace + 5 s (%d)", stopTimeout())
	}
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		bad("Deployment: pod securityContext.runAsNonRoot must be true")
	}
	if a := deploy.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/path"] != "/metrics" || a["prometheus.io/port"] != fmt.Sprint(adminPort) {
		bad("Deployment: scrape annotations must point at /metrics on %d", adminPort)
	}
	if len(pod.Containers) != 1 {
		bad("Deployment: want 1 container, got %d", len(pod.Containers))
	} else {
		c := pod.Containers[0]
		if want := []string{"run", "--config", "/etc/envdr/envdr.yaml", "--admin-addr", fmt.Sprintf(":%d", adminPort)}; !reflect.DeepEqual(c.Args, want) {
			bad("container args %v, want %v", c.Args, want)
		}
		if len(c.Ports) != 1 || c.Ports[0].ContainerPort != adminPort {
			bad("container: want the admin port %d", adminPort)
		}
		probe := func(name string, p *corev1.Probe, path string) {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || (p.HTTPGet.Port.IntValue() != adminPort && p.HTTPGet.Port.String() != c.Ports[0].Name) {
				bad("container: %s probe must GET %s on the admin port", name, path)
			}
		}
		probe("liveness", c.LivenessProbe, "/healthz")
		probe("readiness", c.ReadinessProbe, "/readyz")
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			bad("container: set cpu and memory requests and a memory limit")
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			bad("container: securityContext must be read-only root, no privilege escalation, drop ALL")
		}
	}

	// KEDA: structural, since its types are not vendored here.
	spec, _ := scaled["spec"].(map[string]any)
	target, _ := spec["scaleTargetRef"].(map[string]any)
	if target["name"] != deploy.Name || (target["kind"] != nil && target["kind"] != "Deployment") {
		bad("ScaledObject: scaleTargetRef must name Deployment %s", deploy.Name)
	}
	for k := range spec {
		switch k {
		case "scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod", "triggers", "advanced", "fallback", "idleReplicaCount", "initialCooldownPeriod":
		default:
			bad("ScaledObject: unknown spec field %q", k)
		}
	}
	triggers, _ := spec["triggers"].([]any)
	sqs := false
	for _, tr := range triggers {
		m, _ := tr.(map[string]any)
		md, _ := m["metadata"].(map[string]any)
		if m["type"] == "aws-sqs-queue" && md["queueURL"] != nil && md["awsRegion"] != nil {
			sqs = true
			ref, _ := m["authenticationRef"].(map[string]any)
			if ref["name"] != auth["metadata"].(map[string]any)["name"] {
				bad("ScaledObject: authenticationRef does not name the TriggerAuthentication")
			}
		}
	}
	if !sqs {
		bad("ScaledObject: want an aws-sqs-queue trigger with queueURL and awsRegion")
	}
	minR, _ := spec["minReplicaCount"].(float64)
	if minR < 1 {
		bad("ScaledObject: minReplicaCount must be at least 1 (scale-to-zero leaves the PDB unsatisfiable)")
	}
	return errors.Join(errs...)
}

// decodeJSONStrict decodes b into v, refusing unknown fields and trailing data.
func decodeJSONStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// checkEnums walks v and requires every value of an SDK enum type (a string type with a
// Values() method) to be one of its values.
func checkEnums(path string, v reflect.Value) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return checkEnums(path, v.Elem())
	case reflect.Struct:
		var errs []error
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				errs = append(errs, checkEnums(path+"."+v.Type().Field(i).Name, v.Field(i)))
			}
		}
		return errors.Join(errs...)
	case reflect.Slice:
		var errs []error
		for i := 0; i < v.Len(); i++ {
			errs = append(errs, checkEnums(fmt.Sprintf("%s[%d]", path, i), v.Index(i)))
		}
		return errors.Join(errs...)
	case reflect.Map:
		var errs []error
		for _, k := range v.MapKeys() {
			errs = append(errs, checkEnums(fmt.Sprintf("%s[%v]", path, k), v.MapIndex(k)))
		}
		return errors.Join(errs...)
	case reflect.String:
		m := v.MethodByName("Values")
		// "" is an unset optional field.
		if !m.IsValid() || v.Type().PkgPath() == "" || v.String() == "" {
			return nil
		}
		allowed := m.Call(nil)[0]
		for i := 0; i < allowed.Len(); i++ {
			if allowed.Index(i).String() == v.String() {
				return nil
			}
		}
		return fmt.Errorf("%s: %q is not a %s", path, v.String(), v.Type().Name())
	}
	return nil
}

// checkECS decodes the task definition and service strictly into the SDK's input types,
// checks their enums and the envdr-specific settings.
func checkECS(dir string) error {
	var td ecs.RegisterTaskDefinitionInput
	b, err := os.ReadFile(filepath.Join(dir, "task-definition.json"))
	if err != nil {
		return err
	}
	if err := decodeJSONStrict(b, &td); err != nil {
		return fmt.Errorf("task-definition.json: %w", err)
	}
	var svc ecs.CreateServiceInput
	if b, err = os.ReadFile(filepath.Join(dir, "service.json")); err != nil {
		return err
	}
	if err := decodeJSONStrict(b, &svc); err != nil {
		return fmt.Errorf("service.json: %w", err)
	}
	var errs []error
	errs = append(errs, checkEnums("task-definition", reflect.ValueOf(td)), checkEnums("service", reflect.ValueOf(svc)))
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if td.Family == nil || td.TaskRoleArn == nil || !strings.HasSuffix(*td.TaskRoleArn, "role/envdr-daemon") {
		bad("task definition: family and the daemon task role are required")
	}
	if svc.TaskDefinition == nil || td.Family == nil || *svc.TaskDefinition != *td.Family {
		bad("service: taskDefinition must name family %v", td.Family)
	}
	var daemon bool
	for _, c := range td.ContainerDefinitions {
		if c.LogConfiguration == nil || c.LogConfiguration.LogDriver != "awslogs" {
			bad("container %v: logs must go to awslogs", c.Name)
		}
		if c.Name == nil || *c.Name != "envdr" {
			continue
		}
		daemon = true
		if want := []string{"run", "--config", "/etc/envdr/envdr.yaml", "--admin-addr", fmt.Sprintf(":%d", adminPort)}; !reflect.DeepEqual(c.Command, want) {
			bad("envdr container command %v, want %v", c.Command, want)
		}
		if c.HealthCheck == nil || !strings.Contains(strings.Join(c.HealthCheck.Command, " "), fmt.Sprintf(":%d/healthz", adminPort)) {
			bad("envdr container: the health check must probe /healthz on %d", adminPort)
		}
		if c.StopTimeout == nil || *c.StopTimeout != stopTimeout() {
			bad("envdr container: stopTimeout must be the daemon grace + 5 s (%d)", stopTimeout())
		}
		if c.ReadonlyRootFilesystem == nil || !*c.ReadonlyRootFilesystem || c.User == nil || strings.HasPrefix(*c.User, "0") || *c.User == "root" {
			bad("envdr container: read-only root filesystem and a non-root user")
		}
	}
	if !daemon {
		bad("task definition: no container named envdr")
	}
	return errors.Join(errs...)
}

// pinnedImage is an image reference with a tag and a digest.
var pinnedImage = regexp.MustCompile(`^[a-z0-9.\-/:]+:[A-Za-z0-9._\-]+@sha256:[0-9a-f]{64}$`)

// checkDockerfile: multi-stage, static build, minimal non-root runtime stage, bases pinned by
// digest, built for the target architecture.
func checkDockerfile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var froms []string
	var user string
	var errs []error
	static := false
	stages := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			img, stage := "", ""
			for i := 1; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"): // --platform=...
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					stage = f[i+1]
					i++
				case img == "":
					img = f[i]
				}
			}
			// Every base image is pinned by digest, but scratch and earlier stages.
			if img != "scratch" && !stages[img] && !pinnedImage.MatchString(img) {
				errs = append(errs, fmt.Errorf("Dockerfile: FROM %s is not pinned by digest (want IMAGE:TAG@sha256:<64 hex>; see the pin procedure in deploy/Dockerfile)", img))
			}
			if stage != "" {
				stages[stage] = true
			}
			froms = append(froms, img)
			user = ""
		case "USER":
			user = f[1]
		case "RUN":
			static = static || strings.Contains(l, "CGO_ENABLED=0")
		}
	}
	if len(froms) < 2 {
		errs = append(errs, errors.New("Dockerfile: want a multi-stage build"))
	} else if last := froms[len(froms)-1]; !strings.HasPrefix(last, "gcr.io/distroless/static") && last != "scratch" {
		errs = append(errs, fmt.Errorf("Dockerfile: runtime stage %s is not distroless/static or scratch", last))
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		errs = append(errs, fmt.Errorf("Dockerfile: the runtime stage must set a non-root USER, got %q", user))
	}
	if !static {
		errs = append(errs, errors.New("Dockerfile: build with CGO_ENABLED=0 for a static binary"))
	}
	if n := strings.Count(string(b), " go build "); n == 0 || strings.Count(string(b), "GOARCH=$TARGETARCH go build ") != n {
		errs = append(errs, errors.New("Dockerfile: build every binary with GOARCH=$TARGETARCH so docker buildx --platform builds each architecture"))
	}
	return errors.Join(errs...)
}

func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	require.NoError(t, checkK8s(filepath.Join(repo, "deploy", "kubernetes")))
}

func TestECSDefinitions(t *testing.T) {
	t.Parallel()
	require.NoError(t, checkECS(filepath.Join(repo, "deploy", "ecs")))
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	require.NoError(t, checkDockerfile(filepath.Join(repo, "deploy", "Dockerfile")))
}
