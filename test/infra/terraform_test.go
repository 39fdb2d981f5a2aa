//go:build infra

package infra

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/policy"
)

// repo is the repository root, relative to this package.
const repo = "../.."

// Terraform roots that make validate plans, and the variables each needs (s3_test.go adds the
// S3 data path's).
var roots = map[string][]string{
	"modules/kms-mrk/examples/basic":         nil,
	"modules/kms-independent/examples/basic": nil,
	"modules/queue/examples/basic":           nil,
	"modules/table/examples/basic":           nil,
	"modules/iam/examples/basic":             nil,
	"modules/cloudtrail/examples/basic":      nil,
	"modules/ecs-ops/examples/basic":         nil,
	// The example as terraform.tfvars.example shows it, with the trail on (cloudtrail = true)
	// and one EKS cluster per region (IRSA).
	"examples/three-region": {
		"account_id=111122223333", "cloudtrail=true",
		`eks_oidc_provider_arns={"us-east-1"="` + oidcUS + `","eu-west-1"="` + oidcEU + `","ap-southeast-2"="` + oidcAP + `"}`,
	},
	// One cluster for every region.
	"examples/three-region#one-cluster": {
		"account_id=111122223333",
		`eks_oidc_provider_arns={"us-east-1"="` + oidcUS + `","eu-west-1"="` + oidcUS + `","ap-southeast-2"="` + oidcUS + `"}`,
	},
}

const (
	oidcUS = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
	oidcEU = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE2222222222222222222EXAMPLE"
	oidcAP = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.ap-southeast-2.amazonaws.com/id/EXAMPLE3333333333333333333EXAMPLE"
)

// rootDir is the Terraform directory of a roots key: "DIR" or "DIR#variant".
func rootDir(root string) string {
	dir, _, _ := strings.Cut(root, "#")
	return dir
}

// overrideTF gives the provider fake credentials and turns off every call it would make before
// planning; it is written only into the temporary copy the checks plan.
const overrideTF = `provider "aws" {
  access_key                  = "AKIAOFFLINECHECK0000"
  secret_key                  = "offline-check"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}
`

var (
	unpackOnce sync.Once
	cliConfig  string // this test process's own terraform CLI config (dev_overrides)
	initMu     sync.Mutex
)

// tfMode is how make validate (scripts/validate.sh) runs Terraform: "offline" with the offline
// provider (the default when the tests run on their own), "registry" with `terraform init` from
// the registry, or "skip" when neither can plan here.
func tfMode() string {
	if m := os.Getenv("ENVDR_TF_MODE"); m != "" {
		return m
	}
	return "offline"
}

// needPlan skips the test when make validate found no way to plan (it prints the reason once).
func needPlan(t *testing.T) {
	t.Helper()
	if tfMode() == "skip" {
		t.Skip("terraform plan skipped: no offline provider and no registry (see make validate's SKIP line)")
	}
}

// needTerraform skips the test when the terraform binary is not installed.
func needTerraform(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("terraform"); err != nil {
		t.Skip("terraform is not installed")
	}
}

// tfEnv returns the environment terraform runs with in the current mode.
func tfEnv(t *testing.T) []string {
	t.Helper()
	needPlan(t)
	env := append(os.Environ(), "TF_IN_AUTOMATION=1", "TF_INPUT=0", "CHECKPOINT_DISABLE=1")
	switch m := tfMode(); m {
	case "offline":
		return append(env, "TF_CLI_CONFIG_FILE="+terraformOffline(t))
	case "registry":
		cache := filepath.Join(tfCacheDir(t), "plugins")
		require.NoError(t, os.MkdirAll(cache, 0o755))
		return append(env, "TF_PLUGIN_CACHE_DIR="+cache)
	default:
		t.Fatalf("ENVDR_TF_MODE=%q: want offline, registry or skip", m)
		return nil
	}
}

// tfCacheDir is where terraform-offline unpacks the provider (and registry mode caches plugins).
func tfCacheDir(t *testing.T) string {
	t.Helper()
	if cache := os.Getenv("ENVDR_TF_CACHE"); cache != "" {
		return cache
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		require.NoError(t, err)
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "envdr-terraform")
}

// terraformOffline unpacks the offline AWS provider once (through the shared wrapper) and returns
// a terraform CLI config of this process's own that points dev_overrides at it. The wrapper
// rewrites its shared terraformrc on every call, so parallel calls through it can read a
// truncated file (no override: "no version is selected"); terraform is run directly instead.
func terraformOffline(t *testing.T) string {
	t.Helper()
	p := os.Getenv("ENVDR_TF_OFFLINE")
	if p == "" {
		p = filepath.Join(repo, "..", "shared", "tools", "terraform-offline")
	}
	abs, err := filepath.Abs(p)
	require.NoError(t, err)
	_, err = os.Stat(abs)
	require.NoError(t, err, "terraform-offline not found; set ENVDR_TF_OFFLINE (or run make validate, which picks a mode)")
	unpackOnce.Do(func() {
		out, err := exec.Command(abs, "version").CombinedOutput()
		require.NoError(t, err, "%s", out)
		cache := tfCacheDir(t)
		_, err = os.Stat(filepath.Join(cache, "terraform-provider-aws"))
		require.NoError(t, err, "the wrapper did not unpack the provider where expected")
		dir, err := os.MkdirTemp("", "envdr-tfrc-")
		require.NoError(t, err)
		cliConfig = filepath.Join(dir, "terraformrc")
		rc := fmt.Sprintf("provider_installation {\n  dev_overrides {\n    \"hashicorp/aws\" = %q\n  }\n  direct {}\n}\n", cache)
		require.NoError(t, os.WriteFile(cliConfig, []byte(rc), 0o600))
	})
	require.NotEmpty(t, cliConfig, "terraform CLI config not prepared (an earlier failure)")
	return cliConfig
}

func tf(t *testing.T, dir string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command("terraform", append([]string{"-chdir=" + dir}, args...)...)
	cmd.Env = tfEnv(t)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("terraform %s in %s: %v\n%s%s", args[0], dir, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

// copyTree copies src into dst, leaving out Terraform's working files.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() && (d.Name() == ".terraform") {
			return filepath.SkipDir
		}
		if strings.HasPrefix(d.Name(), "terraform.tfstate") || d.Name() == ".terraform.lock.hcl" {
			return nil
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	}))
}

// tfCopy copies the repo's terraform/ into a temp dir and returns the copy's root.
func tfCopy(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "terraform")
	copyTree(t, filepath.Join(repo, "terraform"), dst)
	return dst
}

// plan runs get, validate, plan and show -json in root (inside a temp copy) and decodes the plan.
func plan(t *testing.T, tfRoot, root string, vars []string) (*Plan, error) {
	t.Helper()
	dir := filepath.Join(tfRoot, root)
	if err := os.WriteFile(filepath.Join(dir, "zz_offline_check_override.tf"), []byte(overrideTF), 0o644); err != nil {
		return nil, err
	}
	if tfMode() == "registry" {
		// init downloads the provider; the shared plugin cache is not safe for parallel inits.
		initMu.Lock()
		_, err := tf(t, dir, "init", "-no-color", "-backend=false", "-input=false")
		initMu.Unlock()
		if err != nil {
			return nil, err
		}
	} else if _, err := tf(t, dir, "get", "-no-color"); err != nil {
		return nil, err
	}
	if _, err := tf(t, dir, "validate", "-no-color"); err != nil {
		return nil, err
	}
	args := []string{"plan", "-no-color", "-input=false", "-lock=false", "-refresh=false", "-out=plan.bin"}
	for _, v := range vars {
		args = append(args, "-var", v)
	}
	if _, err := tf(t, dir, args...); err != nil {
		return nil, err
	}
	out, err := tf(t, dir, "show", "-json", "plan.bin")
	if err != nil {
		return nil, err
	}
	var p Plan
	if err := json.Unmarshal(out, &p); err != nil {
		return nil, fmt.Errorf("show -json: %w", err)
	}
	return &p, nil
}

// Plan is the part of `terraform show -json` the checks read.
type Plan struct {
	PlannedValues struct {
		Outputs    map[string]struct{ Value any } `json:"outputs"`
		RootModule Module                         `json:"root_module"`
	} `json:"planned_values"`
}

// Module is a module's planned resources and its children.
type Module struct {
	Resources    []Resource `json:"resources"`
	ChildModules []Module   `json:"child_modules"`
}

// Resource is one planned resource instance.
type Resource struct {
	Address string         `json:"address"`
	Type    string         `json:"type"`
	Name    string         `json:"name"`
	Values  map[string]any `json:"values"`
}

// All lists every resource of type typ in the plan, in all modules.
func (p *Plan) All(typ string) []Resource {
	var out []Resource
	var walk func(m Module)
	walk = func(m Module) {
		for _, r := range m.Resources {
			if r.Type == typ {
				out = append(out, r)
			}
		}
		for _, c := range m.ChildModules {
			walk(c)
		}
	}
	walk(p.PlannedValues.RootModule)
	return out
}

func (p *Plan) output(name string) (any, bool) {
	o, ok := p.PlannedValues.Outputs[name]
	return o.Value, ok
}

func str(v any) string { s, _ := v.(string); return s }

func asList(v any) []any { l, _ := v.([]any); return l }

// blocks returns a nested block list (Terraform plans render blocks as lists of objects).
func blocks(v any) []map[string]any {
	l, _ := v.([]any)
	var out []map[string]any
	for _, e := range l {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// checkPolicies renders the plan's envdr config with the plan's render options and requires every
// IAM role policy and key policy in the plan (and in its key_policies output) to equal the
// rendered document; then lints everything it compared.
func checkPolicies(p *Plan) error {
	rawCfg, ok := p.output("envdr_config")
	if !ok {
		return fmt.Errorf("plan has no envdr_config output")
	}
	cfg, err := config.Parse([]byte(str(rawCfg)))
	if err != nil {
		return fmt.Errorf("envdr_config output is not a valid envdr config: %w", err)
	}
	var opts policy.Options
	if raw, ok := p.output("policy_render_options"); ok {
		m, _ := raw.(map[string]any)
		for _, k := range asList(m["queue_keys"]) {
			opts.QueueKeys = append(opts.QueueKeys, str(k))
		}
		for _, a := range asList(m["admins"]) {
			opts.Admins = append(opts.Admins, str(a))
		}
		roles, _ := m["roles"].(map[string]any)
		opts.DaemonRole, opts.ProducerRole, opts.OperatorRole = str(roles["daemon"]), str(roles["producer"]), str(roles["operator"])
		opts.RewrapRole, opts.DrillRole = str(roles["rewrap"]), str(roles["drill"])
		opts.FailoverRole, opts.GamedayRole = str(roles["failover"]), str(roles["gameday"])
	}
	rendered, err := policy.Render(cfg, opts)
	if err != nil {
		return err
	}
	want := map[string]*policy.Document{}
	for _, d := range rendered {
		want[d.Name] = d.Doc
	}
	var errs []string
	var linted []policy.Named
	compare := func(where, name, got string) {
		w, ok := want[name]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: envdr policy render has no %s", where, name))
			return
		}
		g, err := policy.Parse([]byte(got))
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", where, err))
			return
		}
		linted = append(linted, policy.Named{Name: where, Doc: g})
		if gj, wj := string(g.JSON()), string(w.JSON()); gj != wj {
			errs = append(errs, fmt.Sprintf("%s differs from `envdr policy render` %s:\n%s", where, name, lineDiff(wj, gj)))
		}
	}
	roles := 0
	for _, r := range p.All("aws_iam_role_policy") {
		name := "iam-" + r.Name + ".json"
		if _, ok := want[name]; !ok {
			continue // not an envdr role policy (e.g. the ECS execution role's)
		}
		roles++
		compare(r.Address, name, str(r.Values["policy"]))
	}
	keys := 0
	for _, typ := range []string{"aws_kms_key", "aws_kms_replica_key"} {
		for _, r := range p.All(typ) {
			if _, ok := r.Values["policy"]; !ok || r.Name == "bucket" {
				continue // not an envdr key: modules/buckets' SSE-KMS keys (s3_test.go checks them)
			}
			keys++
			compare(r.Address, policy.KeyPolicyPrefix+str(r.Values["region"])+".json", str(r.Values["policy"]))
		}
	}
	if raw, ok := p.output("key_policies"); ok {
		for region, doc := range raw.(map[string]any) {
			keys++
			compare("output.key_policies."+region, policy.KeyPolicyPrefix+region+".json", str(doc))
		}
	}
	if roles != len(policy.Roles) {
		errs = append(errs, fmt.Sprintf("want the %d envdr role policies in the plan (%v), found %d", len(policy.Roles), policy.Roles, roles))
	}
	if keys == 0 {
		errs = append(errs, "no key policies in the plan")
	}
	linter := policy.Linter{Admins: opts.Admins}
	for _, f := range linter.Lint(linted) {
		errs = append(errs, fmt.Sprintf("lint: %s %s %s %s: %s", f.Severity, f.Rule, f.Document, f.Statement, f.Reason))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// lineDiff shows the lines of got that are not in want and vice versa.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	count := func(ls []string) map[string]int {
		m := map[string]int{}
		for _, l := range ls {
			m[l]++
		}
		return m
	}
	wm, gm := count(wl), count(gl)
	var b strings.Builder
	for _, l := range wl {
		if gm[l] == 0 {
			fmt.Fprintf(&b, "  - %s\n", strings.TrimSpace(l))
		}
	}
	for _, l := range gl {
		if wm[l] == 0 {
			fmt.Fprintf(&b, "  + %s\n", strings.TrimSpace(l))
		}
	}
	return b.String()
}

// checkKeys: every key has rotation on; every MRK primary has a replica in each wanted region.
func checkKeys(p *Plan, replicaRegions []string) error {
	var errs []string
	primaries := 0
	for _, k := range p.All("aws_kms_key") {
		if k.Values["enable_key_rotation"] != true {
			errs = append(errs, k.Address+": enable_key_rotation is not true")
		}
		if k.Values["multi_region"] == true {
			primaries++
		}
	}
	if replicaRegions != nil {
		if primaries != 1 {
			errs = append(errs, fmt.Sprintf("want 1 multi-Region primary key, found %d", primaries))
		}
		var got []string
		for _, r := range p.All("aws_kms_replica_key") {
			got = append(got, str(r.Values["region"]))
		}
		sort.Strings(got)
		want := append([]string(nil), replicaRegions...)
		sort.Strings(want)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			errs = append(errs, fmt.Sprintf("replica keys in %v, want one in each of %v", got, want))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// checkTable: the records table has PITR, deletion protection, and a replica (with both) in
// each wanted region.
func checkTable(p *Plan, replicaRegions []string) error {
	tables := p.All("aws_dynamodb_table")
	if len(tables) != 1 {
		return fmt.Errorf("want 1 DynamoDB table, found %d", len(tables))
	}
	t := tables[0].Values
	var errs []string
	if t["deletion_protection_enabled"] != true {
		errs = append(errs, "table: deletion_protection_enabled is not true")
	}
	pitr := blocks(t["point_in_time_recovery"])
	if len(pitr) != 1 || pitr[0]["enabled"] != true {
		errs = append(errs, "table: point_in_time_recovery is not enabled")
	}
	var got []string
	cmk := ""
	if sse := blocks(t["server_side_encryption"]); len(sse) == 1 {
		cmk = str(sse[0]["kms_key_arn"])
	}
	for _, r := range blocks(t["replica"]) {
		region := str(r["region_name"])
		got = append(got, region)
		if r["point_in_time_recovery"] != true || r["deletion_protection_enabled"] != true {
			errs = append(errs, fmt.Sprintf("replica %s: want point_in_time_recovery and deletion_protection_enabled", region))
		}
		// A customer managed key in the home region needs one in each replica's own region.
		if k := str(r["kms_key_arn"]); cmk != "" && (k == "" || config.ARNRegion(k) != region) {
			errs = append(errs, fmt.Sprintf("replica %s: the table uses the customer managed key %s, but the replica's kms_key_arn is %q (want a key in %s)", region, cmk, k, region))
		}
	}
	sort.Strings(got)
	want := append([]string(nil), replicaRegions...)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		errs = append(errs, fmt.Sprintf("table replicas in %v, want %v", got, want))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// checkQueue: the event queue redrives to the DLQ planned beside it, and both are encrypted.
func checkQueue(p *Plan) error {
	byName := map[string]map[string]any{}
	for _, q := range p.All("aws_sqs_queue") {
		byName[str(q.Values["name"])] = q.Values
	}
	for name, q := range byName {
		if q["sqs_managed_sse_enabled"] != true && str(q["kms_master_key_id"]) == "" {
			return fmt.Errorf("queue %s: no server-side encryption", name)
		}
		rp := str(q["redrive_policy"])
		if rp == "" {
			continue
		}
		var r struct {
			DeadLetterTargetArn string `json:"deadLetterTargetArn"`
			MaxReceiveCount     int    `json:"maxReceiveCount"`
		}
		if err := json.Unmarshal([]byte(rp), &r); err != nil {
			return fmt.Errorf("queue %s: redrive_policy: %w", name, err)
		}
		dlq := r.DeadLetterTargetArn[strings.LastIndex(r.DeadLetterTargetArn, ":")+1:]
		if _, ok := byName[dlq]; !ok || dlq == name {
			return fmt.Errorf("queue %s redrives to %q, which is not the DLQ planned with it", name, r.DeadLetterTargetArn)
		}
		if r.MaxReceiveCount < 1 {
			return fmt.Errorf("queue %s: maxReceiveCount %d", name, r.MaxReceiveCount)
		}
		return nil
	}
	return fmt.Errorf("no queue with a redrive policy to a DLQ in %d queues", len(byName))
}

// checks per root, run on its plan.
var rootChecks = map[string]func(p *Plan) error{
	"modules/kms-mrk/examples/basic": func(p *Plan) error {
		return checkKeys(p, []string{"eu-west-1", "ap-southeast-2"})
	},
	"modules/kms-independent/examples/basic": func(p *Plan) error {
		if n := len(p.All("aws_kms_key")); n != 2 {
			return fmt.Errorf("want 2 independent keys, found %d", n)
		}
		return checkKeys(p, nil)
	},
	"modules/queue/examples/basic": checkQueue,
	"modules/table/examples/basic": func(p *Plan) error {
		t := p.All("aws_dynamodb_table")
		if len(t) != 1 || len(blocks(t[0].Values["server_side_encryption"])) != 1 || str(blocks(t[0].Values["server_side_encryption"])[0]["kms_key_arn"]) == "" {
			return errors.New("the table example must use a customer managed key (it checks the replicas' keys)")
		}
		return checkTable(p, []string{"eu-west-1", "ap-southeast-2"})
	},
	"modules/iam/examples/basic": func(p *Plan) error {
		return errors.Join(checkPolicies(p), checkPodIdentity(p), checkIRSA(p, map[string][]string{
			oidcUS: {"envdr-us-east-1"},
		}))
	},
	"modules/cloudtrail/examples/basic": checkTrail,
	"modules/ecs-ops/examples/basic":    func(p *Plan) error { return errors.Join(checkECSOps(p), checkECSMonitoring(p)) },
	"examples/three-region": func(p *Plan) error {
		replicas := []string{"eu-west-1", "ap-southeast-2"}
		return errors.Join(checkKeys(p, replicas), checkTable(p, replicas), checkQueue(p), checkPolicies(p), checkTrail(p),
			checkIRSA(p, map[string][]string{
				oidcUS: {"envdr-us-east-1"}, oidcEU: {"envdr-eu-west-1"}, oidcAP: {"envdr-ap-southeast-2"},
			}))
	},
	"examples/three-region#one-cluster": func(p *Plan) error {
		if n := len(p.All("aws_cloudtrail")); n != 0 {
			return fmt.Errorf("cloudtrail defaults to off, found %d trails", n)
		}
		return errors.Join(checkPolicies(p), checkIRSA(p, map[string][]string{
			oidcUS: {"envdr-ap-southeast-2", "envdr-eu-west-1", "envdr-us-east-1"},
		}))
	},
}

// checkTrail: one multi-Region trail with log file validation whose advanced event selectors
// follow CloudTrail's rules for trails (PutEventSelectors would refuse them on apply otherwise),
// and that records KMS's management events.
func checkTrail(p *Plan) error {
	trails := p.All("aws_cloudtrail")
	if len(trails) != 1 || trails[0].Values["is_multi_region_trail"] != true || trails[0].Values["enable_log_file_validation"] != true {
		return fmt.Errorf("want one multi-Region trail with log file validation")
	}
	var sels []selector
	for _, s := range blocks(trails[0].Values["advanced_event_selector"]) {
		var sel selector
		for _, f := range blocks(s["field_selector"]) {
			fs := fieldSelector{Field: str(f["field"]), Ops: map[string][]string{}}
			for _, op := range []string{"equals", "not_equals", "starts_with", "not_starts_with", "ends_with", "not_ends_with"} {
				for _, v := range asList(f[op]) {
					fs.Ops[op] = append(fs.Ops[op], str(v))
				}
			}
			sel = append(sel, fs)
		}
		sels = append(sels, sel)
	}
	if err := validTrailSelectors(sels); err != nil {
		return fmt.Errorf("%s: %w", trails[0].Address, err)
	}
	if !recordsKMS(sels) {
		return fmt.Errorf("%s: no selector records KMS's management events", trails[0].Address)
	}
	return nil
}

type fieldSelector struct {
	Field string
	Ops   map[string][]string // Terraform's operator name -> values
}

type selector []fieldSelector

// validTrailSelectors applies CloudTrail's rules for a trail's advanced event selectors
// (AdvancedFieldSelector in the CloudTrail API reference): eventCategory is required with
// Equals; on management events only eventCategory, eventSource and readOnly may be used,
// readOnly only with Equals true or false, and eventSource only with NotEquals
// kms.amazonaws.com or rdsdata.amazonaws.com.
func validTrailSelectors(sels []selector) error {
	if len(sels) == 0 {
		return errors.New("no advanced event selector")
	}
	var errs []string
	for i, sel := range sels {
		category := ""
		for _, f := range sel {
			if f.Field == "eventCategory" {
				if len(f.Ops) != 1 || len(f.Ops["equals"]) != 1 {
					errs = append(errs, fmt.Sprintf("selector %d: eventCategory must be one Equals value", i))
					continue
				}
				category = f.Ops["equals"][0]
			}
		}
		if category == "" {
			errs = append(errs, fmt.Sprintf("selector %d: eventCategory (Equals) is required", i))
			continue
		}
		if category != "Management" {
			continue // data events: not used by envdr's trail
		}
		for _, f := range sel {
			switch f.Field {
			case "eventCategory":
			case "readOnly":
				if len(f.Ops) != 1 || len(f.Ops["equals"]) != 1 || (f.Ops["equals"][0] != "true" && f.Ops["equals"][0] != "false") {
					errs = append(errs, fmt.Sprintf("selector %d: readOnly takes only Equals true or false", i))
				}
			case "eventSource":
				for op, vs := range f.Ops {
					if op != "not_equals" {
						errs = append(errs, fmt.Sprintf("selector %d: eventSource on management events takes only NotEquals, not %s %v", i, op, vs))
						continue
					}
					for _, v := range vs {
						if v != "kms.amazonaws.com" && v != "rdsdata.amazonaws.com" {
							errs = append(errs, fmt.Sprintf("selector %d: eventSource NotEquals %q: only kms.amazonaws.com or rdsdata.amazonaws.com can be left out", i, v))
						}
					}
				}
			default:
				errs = append(errs, fmt.Sprintf("selector %d: field %s is not supported for a trail's management events", i, f.Field))
			}
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// recordsKMS: some management selector does not leave out kms.amazonaws.com.
func recordsKMS(sels []selector) bool {
	for _, sel := range sels {
		mgmt, excluded := false, false
		for _, f := range sel {
			if f.Field == "eventCategory" && len(f.Ops["equals"]) == 1 && f.Ops["equals"][0] == "Management" {
				mgmt = true
			}
			if f.Field == "eventSource" {
				for _, v := range f.Ops["not_equals"] {
					excluded = excluded || v == "kms.amazonaws.com"
				}
			}
		}
		if mgmt && !excluded {
			return true
		}
	}
	return false
}

// checkIRSA: the daemon and drill roles trust each cluster's OIDC provider for exactly the
// chart's service accounts of that cluster: envdr-REGION for the daemon, envdr-REGION-drill for
// the drill.
func checkIRSA(p *Plan, want map[string][]string) error {
	var errs []string
	found := 0
	for _, r := range p.All("aws_iam_role") {
		name := str(r.Values["name"])
		suffix := ""
		switch {
		case strings.HasSuffix(name, "-daemon"):
		case strings.HasSuffix(name, "-drill"):
			suffix = "-drill"
		default:
			continue
		}
		found++
		var trust struct {
			Statement []struct {
				Principal struct{ Federated string }
				Action    any
				Condition map[string]map[string]any
			}
		}
		if err := json.Unmarshal([]byte(str(r.Values["assume_role_policy"])), &trust); err != nil {
			return fmt.Errorf("%s: trust policy: %w", name, err)
		}
		got := map[string][]string{}
		for _, s := range trust.Statement {
			if s.Principal.Federated == "" {
				continue
			}
			host := strings.SplitN(s.Principal.Federated, "oidc-provider/", 2)[1]
			eq := s.Condition["StringEquals"]
			if aud := str(eq[host+":aud"]); aud != "sts.amazonaws.com" {
				errs = append(errs, fmt.Sprintf("%s: %s: aud %q, want sts.amazonaws.com", name, host, aud))
			}
			var subs []string
			switch v := eq[host+":sub"].(type) {
			case string:
				subs = []string{v}
			case []any:
				for _, x := range v {
					subs = append(subs, str(x))
				}
			}
			sort.Strings(subs)
			got[s.Principal.Federated] = subs
		}
		for provider, sas := range want {
			var w []string
			for _, sa := range sas {
				w = append(w, "system:serviceaccount:envdr:"+sa+suffix)
			}
			sort.Strings(w)
			if strings.Join(got[provider], ",") != strings.Join(w, ",") {
				errs = append(errs, fmt.Sprintf("%s: trusts %v through %s, want %v", name, got[provider], provider, w))
			}
		}
		if len(got) != len(want) {
			errs = append(errs, fmt.Sprintf("%s: trusts %d OIDC providers, want %d", name, len(got), len(want)))
		}
	}
	if found != 2 {
		errs = append(errs, fmt.Sprintf("want the daemon and drill roles, found %d", found))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// checkPodIdentity: the daemon role trusts EKS Pod Identity for the associated cluster only, and
// the association names the chart's service account.
func checkPodIdentity(p *Plan) error {
	as := map[string]string{} // service account -> role
	for _, a := range p.All("aws_eks_pod_identity_association") {
		if str(a.Values["cluster_name"]) != "apps-eu" || str(a.Values["namespace"]) != "envdr" {
			return fmt.Errorf("association %s: cluster %v namespace %v", a.Address, a.Values["cluster_name"], a.Values["namespace"])
		}
		as[str(a.Values["service_account"])] = a.Name
	}
	if len(as) != 2 || as["envdr-eu-west-1"] != "daemon" || as["envdr-eu-west-1-drill"] != "drill" {
		return fmt.Errorf("want Pod Identity associations envdr-eu-west-1 (daemon) and envdr-eu-west-1-drill (drill) in apps-eu, got %v", as)
	}
	roles := 0
	for _, r := range p.All("aws_iam_role") {
		name := str(r.Values["name"])
		if !strings.HasSuffix(name, "-daemon") && !strings.HasSuffix(name, "-drill") {
			continue
		}
		roles++
		trust := str(r.Values["assume_role_policy"])
		for _, want := range []string{"pods.eks.amazonaws.com", "sts:TagSession", "arn:aws:eks:eu-west-1:111122223333:cluster/apps-eu", "sts:AssumeRoleWithWebIdentity", "ecs-tasks.amazonaws.com"} {
			if !strings.Contains(trust, want) {
				return fmt.Errorf("%s role trust lacks %s: %s", name, want, trust)
			}
		}
	}
	if roles != 2 {
		return fmt.Errorf("want the daemon and drill roles in the plan, found %d", roles)
	}
	return nil
}

// checkECSOps: the service scales on the queue's backlog per task, one schedule per lost
// region runs the envdr task as `envdr drill --lose R` with a role that may only do that, and
// the sharded verify is one schedule per shard, all firing at once, shard i/N each.
func checkECSOps(p *Plan) error {
	var errs []string
	targets := p.All("aws_appautoscaling_target")
	if len(targets) != 1 || str(targets[0].Values["scalable_dimension"]) != "ecs:service:DesiredCount" || targets[0].Values["min_capacity"].(float64) < 1 {
		errs = append(errs, "want one ECS DesiredCount scaling target with min_capacity >= 1")
	}
	pols := p.All("aws_appautoscaling_policy")
	if len(pols) != 1 || str(pols[0].Values["policy_type"]) != "TargetTrackingScaling" {
		errs = append(errs, "want one target-tracking scaling policy")
	} else {
		b, _ := json.Marshal(pols[0].Values)
		for _, want := range []string{"ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible", "RunningTaskCount", "envdr-events"} {
			if !strings.Contains(string(b), want) {
				errs = append(errs, "scaling policy: no "+want)
			}
		}
	}
	lost := map[string]bool{}
	shards := map[string]bool{}
	merges := 0
	for _, s := range p.All("aws_scheduler_schedule") {
		tg := blocks(s.Values["target"])
		if len(tg) != 1 {
			errs = append(errs, "schedule without one target")
			continue
		}
		var in struct {
			ContainerOverrides []struct {
				Name    string   `json:"name"`
				Command []string `json:"command"`
			} `json:"containerOverrides"`
		}
		if err := json.Unmarshal([]byte(str(tg[0]["input"])), &in); err != nil || len(in.ContainerOverrides) != 1 {
			errs = append(errs, fmt.Sprintf("schedule %s: input %q", s.Address, str(tg[0]["input"])))
			continue
		}
		cmd := in.ContainerOverrides[0].Command
		if s.Name == "scan_merge" {
			merges++
			if err := checkScanMerge(s, tg[0], cmd); err != nil {
				errs = append(errs, err.Error())
			}
			continue
		}
		if s.Name == "scan" {
			line := strings.Join(cmd, " ")
			if err := checkScanSchedule(s, tg[0], line); err != nil {
				errs = append(errs, err.Error())
			}
			i := slices.Index(cmd, "--shard")
			if i > 0 && i+1 < len(cmd) {
				shards[cmd[i+1]] = true
			}
			continue
		}
		if in.ContainerOverrides[0].Name != "envdr" || len(cmd) < 5 || cmd[0] != "drill" || cmd[3] != "--lose" {
			errs = append(errs, fmt.Sprintf("schedule %s: command %v, want envdr drill --config ... --lose R", s.Address, cmd))
			continue
		}
		lost[cmd[4]] = true
		// The drill runs as the drill role (read-only, may Scan), never as the daemon's.
		var roles struct {
			TaskRoleArn string `json:"taskRoleArn"`
		}
		_ = json.Unmarshal([]byte(str(tg[0]["input"])), &roles)
		if !strings.HasSuffix(roles.TaskRoleArn, ":role/envdr-drill") {
			errs = append(errs, fmt.Sprintf("schedule %s: taskRoleArn %q, want the drill role (envdr-drill)", s.Address, roles.TaskRoleArn))
		}
		if !strings.Contains(strings.Join(cmd, " "), "--pushgateway http://") || !strings.Contains(strings.Join(cmd, " "), "--max-rpo 15m") {
			errs = append(errs, fmt.Sprintf("schedule %s: command %v lacks --pushgateway or --max-rpo", s.Address, cmd))
		}
	}
	for _, rp := range p.All("aws_iam_role_policy") {
		if rp.Name == "scheduler" && (strings.Contains(str(rp.Values["policy"]), "role/envdr-daemon") || !strings.Contains(str(rp.Values["policy"]), "role/envdr-drill")) {
			errs = append(errs, "the scheduler role must pass the drill role, not the daemon's: "+str(rp.Values["policy"]))
		}
	}
	if len(lost) != 2 || !lost["eu-west-1"] || !lost["ap-southeast-2"] {
		errs = append(errs, fmt.Sprintf("drills lose %v, want eu-west-1 and ap-southeast-2", lost))
	}
	if want := map[string]bool{"1/4": true, "2/4": true, "3/4": true, "4/4": true}; !maps.Equal(shards, want) {
		errs = append(errs, fmt.Sprintf("scan schedules read shards %v, want 1/4 ... 4/4 (one each)", slices.Sorted(maps.Keys(shards))))
	}
	if merges != 1 {
		errs = append(errs, fmt.Sprintf("want one schedule merging the scan's shard reports, found %d", merges))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// checkScanSchedule: a shard of the sharded verify starts one task, at the scan's time exactly
// (no flexible window, so the N shards run together), as the drill role, read-only.
func checkScanSchedule(s Resource, target map[string]any, line string) error {
	var in struct {
		TaskRoleArn string `json:"taskRoleArn"`
	}
	_ = json.Unmarshal([]byte(str(target["input"])), &in)
	ecs := blocks(target["ecs_parameters"])
	win := blocks(s.Values["flexible_time_window"])
	switch {
	case !strings.HasPrefix(line, "verify --config /etc/envdr/envdr.yaml --no-write --shard "):
		return fmt.Errorf("scan schedule %s: command %q, want envdr verify --no-write --shard i/N", s.Address, line)
	case !strings.Contains(line, "--segments 8 --json"):
		return fmt.Errorf("scan schedule %s: command %q, want --segments 8 --json", s.Address, line)
	case !strings.Contains(line, " --report s3://acme-envdr-reports/scans/verify-<aws.scheduler.scheduled-time>/shard-"):
		return fmt.Errorf("scan schedule %s: command %q, want --report under the run's prefix (the merge reads it there)", s.Address, line)
	case !strings.HasSuffix(in.TaskRoleArn, ":role/envdr-drill"):
		return fmt.Errorf("scan schedule %s: taskRoleArn %q, want the drill role", s.Address, in.TaskRoleArn)
	case len(ecs) != 1 || ecs[0]["task_count"] != float64(1):
		return fmt.Errorf("scan schedule %s: want one task per shard", s.Address)
	case len(win) != 1 || win[0]["mode"] != "OFF":
		return fmt.Errorf("scan schedule %s: the shards must fire together (flexible_time_window OFF)", s.Address)
	case str(s.Values["schedule_expression"]) != "cron(0 1 1 * ? *)":
		return fmt.Errorf("scan schedule %s: expression %q", s.Address, str(s.Values["schedule_expression"]))
	}
	return nil
}

// checkScanMerge: the merge of the sharded scan fires with the shards, as the drill role, and
// waits for exactly the reports the shards write (their --report PREFIX plus .json), filing the
// merged report beside them.
func checkScanMerge(s Resource, target map[string]any, cmd []string) error {
	var in struct {
		TaskRoleArn string `json:"taskRoleArn"`
	}
	_ = json.Unmarshal([]byte(str(target["input"])), &in)
	const run = "s3://acme-envdr-reports/scans/verify-<aws.scheduler.scheduled-time>"
	want := []string{"report", "merge", "--config", "/etc/envdr/envdr.yaml", "--wait", "24h", "--json", "--out", run + "/merged"}
	for i := 1; i <= 4; i++ {
		want = append(want, fmt.Sprintf("%s/shard-%d.json", run, i))
	}
	win := blocks(s.Values["flexible_time_window"])
	switch {
	case !slices.Equal(cmd, want):
		return fmt.Errorf("scan merge schedule %s: command %q, want %q", s.Address, cmd, want)
	case !strings.HasSuffix(in.TaskRoleArn, ":role/envdr-drill"):
		return fmt.Errorf("scan merge schedule %s: taskRoleArn %q, want the drill role", s.Address, in.TaskRoleArn)
	case len(win) != 1 || win[0]["mode"] != "OFF":
		return fmt.Errorf("scan merge schedule %s: it must fire with the shards (flexible_time_window OFF)", s.Address)
	case str(s.Values["schedule_expression"]) != "cron(0 1 1 * ? *)":
		return fmt.Errorf("scan merge schedule %s: expression %q", s.Address, str(s.Values["schedule_expression"]))
	}
	return nil
}

func TestTerraformRoots(t *testing.T) {
	t.Parallel()
	tfEnv(t) // skips when no plan is possible; prepares the offline provider once
	for root, vars := range roots {
		check, ok := rootChecks[root]
		require.True(t, ok, "no checks for %s", root)
		t.Run(root, func(t *testing.T) {
			t.Parallel()
			// A copy per root: two variants of one root must not share plan files.
			p, err := plan(t, tfCopy(t), rootDir(root), vars)
			require.NoError(t, err)
			require.NoError(t, check(p))
		})
	}
}

// Every module has the usual layout and a planned example.
func TestTerraformModuleLayout(t *testing.T) {
	t.Parallel()
	mods, err := os.ReadDir(filepath.Join(repo, "terraform", "modules"))
	require.NoError(t, err)
	require.NotEmpty(t, mods)
	for _, m := range mods {
		for _, f := range []string{"main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md", "examples/basic/main.tf"} {
			_, err := os.Stat(filepath.Join(repo, "terraform", "modules", m.Name(), f))
			require.NoError(t, err, "module %s", m.Name())
		}
		_, ok := roots["modules/"+m.Name()+"/examples/basic"]
		require.True(t, ok, "module %s's example is not planned", m.Name())
		v, err := os.ReadFile(filepath.Join(repo, "terraform", "modules", m.Name(), "versions.tf"))
		require.NoError(t, err)
		require.Contains(t, string(v), `version = "~> 6.0"`, "module %s must pin the AWS provider", m.Name())
	}
	// A lock file would pin the registry's hashes, which the offline provider does not match.
	require.NoError(t, filepath.WalkDir(filepath.Join(repo, "terraform"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		require.NotEqual(t, ".terraform.lock.hcl", d.Name(), p)
		return nil
	}))
}

// The trail rules themselves: the selector the module shipped before issue 21 (eventSource
// Equals kms.amazonaws.com on management events) is refused; today's is accepted.
func TestTrailSelectorRules(t *testing.T) {
	t.Parallel()
	mgmt := fieldSelector{Field: "eventCategory", Ops: map[string][]string{"equals": {"Management"}}}
	old := []selector{{mgmt, {Field: "eventSource", Ops: map[string][]string{"equals": {"kms.amazonaws.com"}}}}}
	require.ErrorContains(t, validTrailSelectors(old), "takes only NotEquals")
	now := []selector{{mgmt, {Field: "eventSource", Ops: map[string][]string{"not_equals": {"rdsdata.amazonaws.com"}}}}}
	require.NoError(t, validTrailSelectors(now))
	require.True(t, recordsKMS(now))
	require.False(t, recordsKMS([]selector{{mgmt, {Field: "eventSource", Ops: map[string][]string{"not_equals": {"kms.amazonaws.com"}}}}}))
	require.ErrorContains(t, validTrailSelectors([]selector{{mgmt, {Field: "eventName", Ops: map[string][]string{"equals": {"Decrypt"}}}}}), "not supported")
}
