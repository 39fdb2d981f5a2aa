package deploycheck

// The identity matrix (issue 21): every workload the repository ships runs its exact command
// under the identity its manifest gives it, on the local stand-in with the rendered policies.
// The rows are derived from the shipped artifacts themselves: the Helm chart rendered with its
// default values and each region's values, the ECS task definition, the ECS Scheduler's drill
// targets from the Terraform plan (when the offline provider is there), and the commands in
// docs/RUNBOOK.md and docs/DEPLOY.md. Each role maps to the stand-in profile of the same name
// (terraform/modules/iam names the roles envdr-daemon, envdr-drill, ...). Then what each role
// must not do is asserted. The matrix is printed; docs/DEPLOY.md keeps a copy.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/policy"
)

// row is one (workload, identity, command) of the matrix.
type row struct {
	Workload string // where it is shipped: "helm us-east-1 Deployment envdr-us-east-1", ...
	Identity string // the role, as Terraform names it: envdr-daemon, envdr-drill, ...
	Args     []string
	Result   string
	// daemon rows run in the background for the whole matrix.
	daemon bool
}

func (r row) command() string {
	if strings.Contains(r.Args[0], ":") { // an AWS call (KEDA's scaler), not an envdr command
		return strings.Join(r.Args, " ")
	}
	return "envdr " + strings.Join(r.Args, " ")
}

// roleOfRun maps a command line to the role docs/POLICY.md gives it, for docs that do not name
// one ("# as envdr-X" comments name it where they do).
func roleOfRun(args []string) string {
	switch args[0] {
	case "run":
		return "envdr-daemon"
	case "seal":
		return "envdr-producer"
	case "drill":
		return "envdr-drill"
	case "rewrap":
		return "envdr-rewrap"
	case "failover":
		return "envdr-failover"
	case "gameday":
		return "envdr-gameday"
	case "verify":
		for _, a := range args {
			if a == "--no-write" {
				return "envdr-operator"
			}
		}
		return "envdr-rewrap" // the recording form writes verified_at (docs/POLICY.md)
	default: // status, doctor, open
		return "envdr-operator"
	}
}

// roleOfServiceAccount: IRSA names the role in the annotation; with Pod Identity an association
// does (terraform/modules/iam eks_pod_identity: envdr-REGION -> daemon, envdr-REGION-drill ->
// drill).
func roleOfServiceAccount(r *rendered, name string) string {
	sa := r.sas[name]
	if sa == nil {
		return "?" + name
	}
	if arn := sa.Annotations["eks.amazonaws.com/role-arn"]; arn != "" {
		return arn[strings.LastIndex(arn, "/")+1:]
	}
	if strings.HasSuffix(name, "-drill") {
		return "envdr-drill"
	}
	return "envdr-daemon"
}

// helmRows renders the chart with the default values and each region's values file.
func helmRows(t *testing.T) []row {
	var out []row
	for _, overlay := range []string{"", "ci/eu-west-1-values.yaml"} {
		var overlays []string
		if overlay != "" {
			overlays = []string{overlay}
		}
		files, err := render(t, overlays, map[string]any{"keda": map[string]any{"identityOwner": "workload"}})
		require.NoError(t, err)
		r := decode(t, files)
		region := r.deploy.Spec.Template.Labels["envdr.dev/region"]
		where := "helm " + region
		if overlay != "" {
			where += " (" + filepath.Base(overlay) + ")"
		}
		c := r.deploy.Spec.Template.Spec.Containers[0]
		out = append(out, row{Workload: where + " Deployment " + r.deploy.Name, Identity: roleOfServiceAccount(r, r.deploy.Spec.Template.Spec.ServiceAccountName),
			Args: c.Args, daemon: true})
		for _, cj := range r.cronJobs {
			ps := cj.Spec.JobTemplate.Spec.Template.Spec
			out = append(out, row{Workload: where + " CronJob " + cj.Name, Identity: roleOfServiceAccount(r, ps.ServiceAccountName), Args: ps.Containers[0].Args})
		}
		// KEDA's queue reads, with identityOwner: workload (the daemon's identity; with the
		// default identityOwner: keda the KEDA operator's own role reads it, outside envdr).
		trig := field(r.custom["ScaledObject"], "spec", "triggers").([]any)[0].(map[string]any)
		out = append(out, row{Workload: where + " KEDA ScaledObject (identityOwner: workload)", Identity: roleOfServiceAccount(r, r.deploy.Spec.Template.Spec.ServiceAccountName),
			Args: []string{"sqs:GetQueueAttributes", str(field(trig, "metadata", "queueURL"))}})
	}
	// The sharded scans' shard pods (scan.enabled; the merge Job reads files only), verify and
	// drill, run here as their first shard.
	for _, scan := range []map[string]any{{"enabled": true}, {"enabled": true, "command": "drill", "lose": "eu-west-1"}} {
		files, err := render(t, nil, map[string]any{"scan": scan})
		require.NoError(t, err)
		r := decode(t, files)
		require.Len(t, r.jobs, 2)
		ps := r.jobs[0].Spec.Template.Spec
		out = append(out, row{Workload: "helm us-east-1 Indexed Job " + r.jobs[0].Name, Identity: roleOfServiceAccount(r, ps.ServiceAccountName), Args: ps.Containers[0].Args})
	}
	return out
}

func str(v any) string { s, _ := v.(string); return s }

// ecsRows reads deploy/ecs/task-definition.json: the envdr container's command under the task role.
func ecsRows(t *testing.T) []row {
	b, err := os.ReadFile(filepath.Join(repo, "deploy/ecs/task-definition.json"))
	require.NoError(t, err)
	var td struct {
		TaskRoleArn          string `json:"taskRoleArn"`
		ContainerDefinitions []struct {
			Name    string   `json:"name"`
			Command []string `json:"command"`
		} `json:"containerDefinitions"`
	}
	require.NoError(t, json.Unmarshal(b, &td))
	for _, c := range td.ContainerDefinitions {
		if c.Name == "envdr" {
			return []row{{Workload: "ecs task definition (service)", Identity: td.TaskRoleArn[strings.LastIndex(td.TaskRoleArn, "/")+1:], Args: c.Command, daemon: true}}
		}
	}
	t.Fatal("deploy/ecs/task-definition.json has no envdr container")
	return nil
}

// schedulerRows plans terraform/modules/ecs-ops/examples/basic with the offline provider and
// reads each drill schedule's overrides (command, taskRoleArn). Without the provider it returns
// the reason instead.
func schedulerRows(t *testing.T) ([]row, string) {
	if os.Getenv("ENVDR_TF_MODE") == "skip" {
		return nil, "ENVDR_TF_MODE=skip (make validate found no way to plan)"
	}
	tfo := os.Getenv("ENVDR_TF_OFFLINE")
	if tfo == "" {
		tfo = os.Getenv("TF_OFFLINE")
	}
	if tfo == "" {
		tfo = filepath.Join(repo, "..", "shared", "tools", "terraform-offline")
	} else if !filepath.IsAbs(tfo) {
		tfo = filepath.Join(repo, tfo)
	}
	if _, err := os.Stat(tfo); err != nil {
		return nil, "no offline Terraform provider at " + tfo
	}
	dir := filepath.Join(t.TempDir(), "terraform")
	require.NoError(t, os.CopyFS(dir, os.DirFS(filepath.Join(repo, "terraform"))))
	root := filepath.Join(dir, "modules/ecs-ops/examples/basic")
	require.NoError(t, os.WriteFile(filepath.Join(root, "zz_override.tf"), []byte(`provider "aws" {
  access_key                  = "AKIAOFFLINECHECK0000"
  secret_key                  = "offline-check"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
}
`), 0o644))
	tf := func(args ...string) []byte {
		cmd := exec.Command(tfo, append([]string{"-chdir=" + root}, args...)...)
		cmd.Env = append(os.Environ(), "TF_IN_AUTOMATION=1", "TF_INPUT=0", "CHECKPOINT_DISABLE=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "terraform %v: %s%s", args, out, stderr.String())
		return out
	}
	tf("get", "-no-color")
	tf("plan", "-no-color", "-input=false", "-lock=false", "-refresh=false", "-out=plan.bin")
	var plan struct {
		PlannedValues struct {
			RootModule struct {
				ChildModules []struct {
					Resources []struct {
						Type   string         `json:"type"`
						Values map[string]any `json:"values"`
					} `json:"resources"`
				} `json:"child_modules"`
			} `json:"root_module"`
		} `json:"planned_values"`
	}
	require.NoError(t, json.Unmarshal(tf("show", "-json", "plan.bin"), &plan))
	var out []row
	for _, m := range plan.PlannedValues.RootModule.ChildModules {
		for _, r := range m.Resources {
			if r.Type != "aws_scheduler_schedule" {
				continue
			}
			target := r.Values["target"].([]any)[0].(map[string]any)
			var in struct {
				TaskRoleArn        string `json:"taskRoleArn"`
				ContainerOverrides []struct {
					Command []string `json:"command"`
				} `json:"containerOverrides"`
			}
			require.NoError(t, json.Unmarshal([]byte(str(target["input"])), &in))
			out = append(out, row{Workload: "ecs scheduler " + str(r.Values["name"]), Identity: in.TaskRoleArn[strings.LastIndex(in.TaskRoleArn, "/")+1:],
				Args: in.ContainerOverrides[0].Command})
		}
	}
	require.NotEmpty(t, out, "the ecs-ops example plans no drill schedule")
	return out, ""
}

var asRole = regexp.MustCompile(`^#\s*as (envdr-[a-z]+)`)

// docRows reads the envdr command lines of the shell blocks in docs/RUNBOOK.md and in
// docs/DEPLOY.md's "Use it" section, with the role a preceding "# as envdr-X" comment names.
func docRows(t *testing.T) []row {
	var out []row
	for _, doc := range []struct{ file, section string }{{"docs/RUNBOOK.md", ""}, {"docs/DEPLOY.md", "## 6. Use it"}} {
		b, err := os.ReadFile(filepath.Join(repo, doc.file))
		require.NoError(t, err)
		text := string(b)
		if doc.section != "" {
			i := strings.Index(text, doc.section)
			require.GreaterOrEqual(t, i, 0, "%s has no %q", doc.file, doc.section)
			text = text[i:]
			if j := strings.Index(text[len(doc.section):], "\n## "); j >= 0 {
				text = text[:len(doc.section)+j]
			}
		}
		inBlock, as := false, ""
		sc := bufio.NewScanner(strings.NewReader(text))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if strings.HasPrefix(line, "```") {
				inBlock, as = !inBlock, ""
				continue
			}
			if !inBlock {
				continue
			}
			if m := asRole.FindStringSubmatch(line); m != nil {
				as = m[1]
				continue
			}
			if !strings.HasPrefix(line, "envdr ") {
				continue
			}
			// The shell around the command (a comment, a pipe to jq) is not envdr's.
			for _, cut := range []string{" #", " |"} {
				if i := strings.Index(line, cut); i >= 0 {
					line = line[:i]
				}
			}
			// The shell's command substitution in a report name (outage-$(date +%F)) is one word.
			args := strings.Fields(strings.ReplaceAll(line, "$(date +%F)", "$(date_+%F)"))[1:]
			for i := range args {
				args[i] = strings.ReplaceAll(args[i], "$(date_+%F)", "$(date +%F)")
			}
			if len(args) >= 2 && args[0] == "--config" {
				args = args[2:]
			}
			if args[0] == "local" || (args[0] == "drill" && len(args) > 1 && args[1] == "verify-report") {
				continue // the stand-in's own control, and a file check without AWS
			}
			id := as
			if id == "" {
				id = roleOfRun(args)
			}
			out = append(out, row{Workload: doc.file, Identity: id, Args: args, daemon: args[0] == "run"})
		}
	}
	return out
}

// s3Object is how the S3 rows name the object they touch: the test runs each on every region's
// bucket of the stand-in.
const s3Object = "s3://envdr-data-REGION/KEY"

// s3Rows are the S3 data path's accesses each role must have (docs/POLICY.md, "S3 data path"),
// until the envdr commands that make them (seal and open with s3://, run's S3 event source,
// drill --data) are shipped lines of their own: the producer's first, so the readers find an
// object.
func s3Rows() []row {
	const w = "S3 data path (docs/POLICY.md)"
	return []row{
		{Workload: w, Identity: "envdr-producer", Args: []string{"s3:PutObject", "(multipart upload, abort)", s3Object}},
		{Workload: w, Identity: "envdr-daemon", Args: []string{"s3:GetObject", "(the header range, of the event's version)", s3Object}},
		{Workload: w, Identity: "envdr-operator", Args: []string{"s3:GetObject", "s3:ListBucket", s3Object}},
		{Workload: w, Identity: "envdr-drill", Args: []string{"s3:GetObject", "s3:ListBucket", s3Object}},
		{Workload: w, Identity: "envdr-gameday", Args: []string{"s3:PutObject", "s3:GetObject", "s3:ListBucket", s3Object}},
	}
}

// s3Key is the object the S3 rows write and read in each bucket.
const s3Key = "matrix/envelope.envdr"

// runS3 makes row r's S3 calls as r.Identity on every region's bucket.
func runS3(t *testing.T, ctx context.Context, env *localtest.Env, r row) error {
	as, _, restore := standIn(t, env, r.Identity)
	defer restore()
	for _, region := range env.Regions {
		bucket := env.Bucket(region)
		c := localaws.NewS3Client(env.AWSConfigAs(region, as))
		for _, action := range r.Args {
			if !strings.HasPrefix(action, "s3:") || action == s3Object {
				continue
			}
			if err := s3Call(ctx, c, env, region, bucket, r.Identity, action); err != nil {
				return fmt.Errorf("%s in %s (%s): %w", action, region, bucket, err)
			}
		}
	}
	return nil
}

func s3Call(ctx context.Context, c *s3.Client, env *localtest.Env, region, bucket, role, action string) error {
	switch action {
	case "s3:PutObject":
		// A multipart upload, as seal streams one, and an aborted one.
		mp, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(s3Key)})
		if err != nil {
			return err
		}
		up, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String(s3Key), UploadId: mp.UploadId,
			PartNumber: aws.Int32(1), Body: strings.NewReader("ENVDR" + strings.Repeat(".", 64))})
		if err != nil {
			return err
		}
		if _, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(s3Key), UploadId: mp.UploadId,
			MultipartUpload: &s3types.CompletedMultipartUpload{Parts: []s3types.CompletedPart{{ETag: up.ETag, PartNumber: aws.Int32(1)}}}}); err != nil {
			return err
		}
		ab, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(s3Key + ".aborted")})
		if err != nil {
			return err
		}
		_, err = c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(s3Key + ".aborted"), UploadId: ab.UploadId})
		return err
	case "s3:GetObject":
		in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(s3Key)}
		if role == "envdr-daemon" {
			// The version an event names (read here as the admin), and only the header.
			h, err := localaws.NewS3Client(env.AWSConfig(region)).HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(s3Key)})
			if err != nil {
				return fmt.Errorf("(as the admin) HeadObject: %w", err)
			}
			in.VersionId, in.Range = h.VersionId, aws.String("bytes=0-15")
		}
		out, err := c.GetObject(ctx, in)
		if err != nil {
			return err
		}
		return out.Body.Close()
	case "s3:ListBucket":
		_, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("matrix/")})
		return err
	}
	return fmt.Errorf("no S3 call for %s", action)
}

// drainTestEvents takes from each region's queue the s3:TestEvent that S3 sent when the bucket's
// notifications were set up, so that the daemons of the matrix start on a queue of envdr events.
func drainTestEvents(t *testing.T, env *localtest.Env) {
	ctx := context.Background()
	for _, region := range env.Regions {
		q, _ := env.Queues(region)
		c := sqs.NewFromConfig(env.AWSConfig(region))
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(q), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
			require.NoError(t, err)
			if len(out.Messages) > 0 {
				require.Len(t, out.Messages, 1, "region %s: only the test event", region)
				require.Contains(t, aws.ToString(out.Messages[0].Body), `"Event":"s3:TestEvent"`, "region %s", region)
				_, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(q), ReceiptHandle: out.Messages[0].ReceiptHandle})
				require.NoError(t, err)
				break
			}
			require.True(t, time.Now().Before(deadline), "region %s: no s3:TestEvent in the queue", region)
		}
	}
}

// fixture is what the commands' placeholders become on the stand-in.
type fixture struct {
	env                 *localtest.Env
	bin, dir, pushgw    string
	recordID, sealed    string
	missingProfileRoles map[string]bool
}

// concrete turns a shipped command into one that runs here: the config path, report and file
// paths, a record ID, a free admin port, a local Pushgateway; game days shortened.
func (f *fixture) concrete(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		// An Indexed Job's pod: the first shard. An ECS schedule's run: one scheduled time.
		a := strings.ReplaceAll(args[i], "$(JOB_COMPLETION_INDEX)", "0")
		a = strings.ReplaceAll(a, "<aws.scheduler.scheduled-time>", "2026-12-01T01:00:00Z")
		switch {
		case strings.HasPrefix(a, "s3://acme-envdr-reports/"):
			// The ECS example's report bucket is the user's own, outside what policy render
			// grants (the module asks for s3:PutObject and s3:GetObject on it): its objects are
			// files here, so the shards' reports and their merge still meet by the same names.
			a = filepath.Join(f.dir, "reports", "acme-envdr-reports", strings.TrimPrefix(a, "s3://acme-envdr-reports/"))
		case a == "/etc/envdr/envdr.yaml" || a == "envdr.yaml":
			a = f.env.ConfigPath
		case a == ":9090":
			a = "127.0.0.1:0"
		case strings.HasPrefix(a, "/reports/") || strings.HasPrefix(a, "drills/"):
			a = filepath.Join(f.dir, "reports", strings.NewReplacer("/", "-", "$(date +%F)", "today").Replace(a))
		case strings.HasPrefix(a, "http://") && strings.Contains(a, "pushgateway"):
			a = f.pushgw
		case a == "ID":
			a = f.recordID
		case a == "file.envdr" || a == "report.csv.envdr":
			a = f.sealed
		case a == "file" || a == "report.csv":
			a = filepath.Join(f.dir, "opened-"+filepath.Base(a))
			if args[0] == "seal" {
				a = filepath.Join(f.dir, "report.csv")
			}
		}
		out = append(out, a)
	}
	if out[0] == "seal" {
		out[len(out)-1] = f.sealed
	}
	if out[0] == "gameday" {
		// The runbook's minute-long game day, shortened for the test; the daemons run.
		out = append(out, "--before", "1s", "--during", "3s", "--within", "60s")
	}
	if out[0] == "run" {
		hasConfig := false
		for _, a := range out {
			hasConfig = hasConfig || a == "--config"
		}
		if !hasConfig {
			out = append(out, "--config", f.env.ConfigPath)
		}
	}
	hasConfig := false
	for _, a := range out {
		hasConfig = hasConfig || a == "--config"
	}
	if !hasConfig {
		out = append([]string{"--config", f.env.ConfigPath}, out...)
	}
	return out
}

// cmd runs envdr under a stand-in profile.
func (f *fixture) cmd(ctx context.Context, role string, args []string) *exec.Cmd {
	c := exec.CommandContext(ctx, f.bin, args...)
	c.Dir = f.dir // a relative output path of a shipped command lands here, never in the checkout
	c.Env = append(os.Environ(), "AWS_SHARED_CREDENTIALS_FILE="+f.env.CredentialsPath, "AWS_PROFILE="+role,
		"AWS_CONFIG_FILE="+filepath.Join(f.dir, "no-aws-config"), "AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=")
	return c
}

func TestIdentityMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("the identity matrix builds envdr and runs every shipped command on the stand-in")
	}
	rows := append(helmRows(t), ecsRows(t)...)
	sched, why := schedulerRows(t)
	rows = append(rows, sched...)
	rows = append(rows, docRows(t)...)
	rows = append(rows, s3Rows()...)

	env := localtest.NewWith(t, localtest.Options{S3: true})
	drainTestEvents(t, env)
	applyShipped(t, env)
	f := &fixture{env: env, dir: t.TempDir(), missingProfileRoles: map[string]bool{}}
	require.NoError(t, os.MkdirAll(filepath.Join(f.dir, "reports"), 0o755))
	f.bin = filepath.Join(f.dir, "envdr")
	build := exec.Command("go", "build", "-o", f.bin, "./cmd/envdr")
	build.Dir = repo
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	var pushes sync.Map
	pg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pushes.Store(r.URL.Path, true)
		w.WriteHeader(http.StatusOK)
	}))
	defer pg.Close()
	f.pushgw = pg.URL
	require.NoError(t, os.WriteFile(filepath.Join(f.dir, "report.csv"), []byte("id,amount\n1,42\n"), 0o600))
	f.sealed = filepath.Join(f.dir, "report.csv.envdr")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	profile := func(role string) bool {
		_, ok := env.IAM.Identity(role)
		if !ok {
			f.missingProfileRoles[role] = true
		}
		return ok
	}
	run := func(r *row) {
		args := f.concrete(r.Args)
		as, note, restore := standIn(t, env, r.Identity)
		defer restore()
		if note != "" {
			f.missingProfileRoles[r.Identity] = true
		}
		c := f.cmd(ctx, as, args)
		b, err := c.CombinedOutput()
		if err != nil {
			r.Result = fmt.Sprintf("FAIL: %v: %s", err, lastLines(b, 40))
			return
		}
		r.Result = "ok" + note
	}

	// 1. Seal (the producer's line), so every reader has a record and a file.
	for i := range rows {
		if rows[i].Args[0] == "seal" {
			run(&rows[i])
		}
	}
	hdr := struct {
		ID      string            `json:"id"`
		Context map[string]string `json:"context"`
	}{}
	info := f.cmd(ctx, "envdr-operator", []string{"--config", env.ConfigPath, "inspect", f.sealed})
	b, err := info.Output()
	require.NoError(t, err, "envdr inspect of the sealed file (was it sealed? %v): %s", rows, b)
	require.NoError(t, json.Unmarshal(b, &hdr), "%s", b)
	f.recordID = hdr.ID
	if id := hdr.Context["envdr:id"]; id != "" {
		f.recordID = id // the record is named by the context's envdr:id
	}
	require.NotEmpty(t, f.recordID)

	// 2. The daemons, in the background for the rest of the matrix.
	type bg struct {
		r    *row
		cmd  *exec.Cmd
		out  *bytes.Buffer
		done chan error
	}
	var daemons []*bg
	for i := range rows {
		r := &rows[i]
		if !r.daemon {
			continue
		}
		if !profile(r.Identity) {
			r.Result = "SKIP: the stand-in has no " + r.Identity + " profile"
			continue
		}
		d := &bg{r: r, out: &bytes.Buffer{}, done: make(chan error, 1)}
		d.cmd = f.cmd(ctx, r.Identity, f.concrete(r.Args))
		d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
		require.NoError(t, d.cmd.Start())
		go func() { d.done <- d.cmd.Wait() }()
		daemons = append(daemons, d)
	}
	// The sealed record reaches every region through the daemons.
	deadline := time.Now().Add(90 * time.Second)
	for {
		ok := true
		for _, region := range env.Regions {
			c := f.cmd(ctx, "envdr-operator", []string{"--config", env.ConfigPath, "verify", "--region", region, "--id", f.recordID, "--no-write"})
			if c.Run() != nil {
				ok = false
			}
		}
		if ok {
			break
		}
		require.True(t, time.Now().Before(deadline), "the daemons did not replicate %s into every region", f.recordID)
		time.Sleep(time.Second)
	}

	// 3. Every other command, under its identity.
	for i := range rows {
		r := &rows[i]
		if r.daemon || r.Args[0] == "seal" || strings.HasPrefix(r.Args[0], "s3:") {
			continue
		}
		if strings.HasPrefix(r.Args[0], "sqs:") {
			if !profile(r.Identity) {
				r.Result = "SKIP: the stand-in has no " + r.Identity + " profile"
				continue
			}
			// KEDA reads the region's queue depth (the same attributes as its aws-sqs-queue
			// scaler); on the stand-in, that region's queue.
			region := regionOfQueueURL(r.Args[1])
			q, _ := env.Queues(region)
			_, err := sqs.NewFromConfig(env.AWSConfigAs(region, r.Identity)).GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
				QueueUrl: aws.String(q), AttributeNames: []sqstypes.QueueAttributeName{
					sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
			if err != nil {
				r.Result = fmt.Sprintf("FAIL: queue depth of %s (%s): %v", region, q, err)
			} else {
				r.Result = "ok"
			}
			continue
		}
		run(r)
	}

	for _, d := range daemons {
		select {
		case err := <-d.done:
			d.r.Result = fmt.Sprintf("FAIL: exited early: %v: %s", err, lastLines(d.out.Bytes(), 6))
		default:
			// It replicated the sealed record (above); now it must drain and stop cleanly.
			_ = d.cmd.Process.Signal(os.Interrupt)
			select {
			case err := <-d.done:
				if err != nil {
					d.r.Result = fmt.Sprintf("FAIL: on SIGINT: %v: %s", err, lastLines(d.out.Bytes(), 6))
				}
			case <-time.After(60 * time.Second):
				_ = d.cmd.Process.Kill()
				<-d.done
				d.r.Result = "FAIL: did not stop within 60s of SIGINT"
			}
			if d.r.Result == "" {
				d.r.Result = "ok"
			}
		}
	}

	// 3b. The S3 data path, once the daemons have stopped (its object events are not theirs
	// to consume yet).
	for i := range rows {
		r := &rows[i]
		if !strings.HasPrefix(r.Args[0], "s3:") {
			continue
		}
		if err := runS3(t, ctx, env, *r); err != nil {
			r.Result = "FAIL: " + err.Error()
		} else {
			r.Result = "ok"
		}
	}

	// 4. What each role must not do.
	nots := mustNots(t, env)

	// Print the matrix (and keep docs/DEPLOY.md's copy honest).
	var md strings.Builder
	md.WriteString("| workload | identity | command | result |\n| --- | --- | --- | --- |\n")
	for _, r := range rows {
		res := r.Result
		if strings.HasPrefix(res, "FAIL") {
			res = "FAIL"
		}
		fmt.Fprintf(&md, "| %s | %s | `%s` | %s |\n", r.Workload, r.Identity, r.command(), res)
	}
	for _, n := range nots {
		fmt.Fprintf(&md, "| must not | %s | %s | %s |\n", n.role, n.what, n.result)
	}
	fmt.Println("identity matrix (workload | identity | command | result):")
	fmt.Print(md.String())
	if why != "" {
		fmt.Println("SKIP identity matrix rows of the ECS Scheduler (from the Terraform plan): " + why)
	}
	if len(f.missingProfileRoles) > 0 {
		var missing []string
		for r := range f.missingProfileRoles {
			missing = append(missing, r)
		}
		sort.Strings(missing)
		fmt.Printf("NOTE the stand-in has no profile for %v yet: envdr-nobody played each, with that role's rendered identity policy and key policy grants\n", missing)
	}
	for _, r := range rows {
		require.False(t, strings.HasPrefix(r.Result, "FAIL"), "%s as %s: %s: %s", r.Workload, r.Identity, r.command(), r.Result)
		require.NotEmpty(t, r.Result, "%s: not run", r.command())
	}
	for _, n := range nots {
		require.False(t, strings.HasPrefix(n.result, "FAIL"), "%s must not %s: %s", n.role, n.what, n.result)
	}
	// The drills pushed their outcome (when they ran).
	for _, r := range rows {
		if r.Args[0] == "drill" && r.Result == "ok" && strings.Contains(strings.Join(r.Args, " "), "--pushgateway") {
			n := 0
			pushes.Range(func(any, any) bool { n++; return true })
			require.Positive(t, n, "a drill with --pushgateway pushed nothing")
		}
	}
	checkDeployCopy(t, rows)
}

func regionOfQueueURL(u string) string {
	h := strings.Split(strings.TrimPrefix(u, "https://"), ".")
	if len(h) > 1 && h[0] == "sqs" {
		return h[1]
	}
	return ""
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

type mustNot struct{ role, what, result string }

// mustNots calls KMS and DynamoDB as each role and requires AccessDenied where the role must not
// act: the daemon never makes data keys, the producer never decrypts or scans, and nobody but
// the failover role (key administrators) moves a multi-Region key's primary.
func mustNots(t *testing.T, env *localtest.Env) []mustNot {
	ctx := context.Background()
	home := env.Config.HomeRegion
	key := env.Config.Regions[0].Key
	for _, r := range env.Config.Regions {
		if r.Name == home {
			key = r.Key
		}
	}
	// A real wrap, made as the producer, for the Decrypt attempt.
	admin := kms.NewFromConfig(env.AWSConfig(home))
	dk, err := kms.NewFromConfig(env.AWSConfigAs(home, "envdr-producer")).GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32),
		EncryptionContext: map[string]string{"envdr:id": "must-not"}})
	require.NoError(t, err)
	clear(dk.Plaintext)
	denied := func(err error) string {
		switch {
		case err == nil:
			return "FAIL: allowed"
		case strings.Contains(err.Error(), "AccessDenied"):
			return "denied"
		default:
			return "FAIL: " + err.Error()
		}
	}
	var out []mustNot
	add := func(role, what string, call func(aws.Config) error) {
		as, note, restore := standIn(t, env, role)
		defer restore()
		res := denied(call(env.AWSConfigAs(home, as)))
		if res == "denied" {
			res += note
		}
		out = append(out, mustNot{role, what, res})
	}
	add("envdr-daemon", "kms:GenerateDataKey", func(c aws.Config) error {
		_, err := kms.NewFromConfig(c).GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), NumberOfBytes: aws.Int32(32),
			EncryptionContext: map[string]string{"envdr:id": "must-not"}})
		return err
	})
	add("envdr-producer", "kms:Decrypt", func(c aws.Config) error {
		_, err := kms.NewFromConfig(c).Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, KeyId: aws.String(key),
			EncryptionContext: map[string]string{"envdr:id": "must-not"}})
		return err
	})
	add("envdr-producer", "dynamodb:Scan", func(c aws.Config) error {
		_, err := localaws.NewDynamoDB(c).Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(env.Config.Table), Limit: aws.Int32(1)})
		return err
	})
	md, err := admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key)})
	require.NoError(t, err)
	other := ""
	for _, r := range env.Config.Regions {
		if r.Name != home && r.Mode == "mrk" {
			other = r.Name
		}
	}
	for _, role := range []string{"envdr-daemon", "envdr-producer", "envdr-operator", "envdr-rewrap", "envdr-drill", "envdr-gameday"} {
		add(role, "kms:UpdatePrimaryRegion", func(c aws.Config) error {
			_, err := kms.NewFromConfig(c).UpdatePrimaryRegion(ctx, &kms.UpdatePrimaryRegionInput{KeyId: md.KeyMetadata.Arn, PrimaryRegion: aws.String(other)})
			return err
		})
	}
	// The S3 data path, on the home region's bucket and the object the S3 rows wrote: only
	// producers and game days write, producers never read, rewrap has no S3, nobody deletes.
	bucket := env.Bucket(home)
	put := func(c aws.Config) error {
		_, err := localaws.NewS3Client(c).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(s3Key), Body: strings.NewReader("x")})
		return err
	}
	get := func(c aws.Config) error {
		o, err := localaws.NewS3Client(c).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(s3Key)})
		if err == nil {
			o.Body.Close()
		}
		return err
	}
	for _, role := range []string{"envdr-daemon", "envdr-operator", "envdr-drill"} {
		add(role, "s3:PutObject", put)
	}
	add("envdr-producer", "s3:GetObject", get)
	add("envdr-rewrap", "s3:GetObject", get)
	for _, role := range []string{"envdr-producer", "envdr-daemon", "envdr-operator", "envdr-drill", "envdr-gameday"} {
		add(role, "s3:DeleteObject", func(c aws.Config) error {
			_, err := localaws.NewS3Client(c).DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(s3Key)})
			return err
		})
	}
	return out
}

// applyShipped sets the stand-in's keys up as terraform/modules/kms-mrk does: automatic
// rotation on (on the primary; replicas share it) and the key policy `envdr policy render`
// generates (the modules apply the same documents, make validate checks that).
func applyShipped(t *testing.T, env *localtest.Env) { applyRendered(t, env, policy.Options{}) }

// applyRendered renders the policies with opts and puts the key policies on the stand-in's keys;
// it returns the rendered documents by file name.
func applyRendered(t *testing.T, env *localtest.Env, opts policy.Options) map[string]*policy.Document {
	ctx := context.Background()
	docs, err := policy.Render(env.Config, opts)
	require.NoError(t, err)
	byName := map[string]*policy.Document{}
	for _, d := range docs {
		byName[d.Name] = d.Doc
	}
	for _, r := range env.Config.Regions {
		c := kms.NewFromConfig(env.AWSConfig(r.Name))
		md, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(r.Key)})
		require.NoError(t, err)
		if md.KeyMetadata.MultiRegionConfiguration == nil || md.KeyMetadata.MultiRegionConfiguration.MultiRegionKeyType != kmstypes.MultiRegionKeyTypeReplica {
			_, err = c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: md.KeyMetadata.Arn})
			require.NoError(t, err, "region %s: EnableKeyRotation", r.Name)
		}
		doc := byName[policy.KeyPolicyPrefix+r.Name+".json"]
		require.NotNil(t, doc, "render has no key policy for %s", r.Name)
		_, err = c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: md.KeyMetadata.Arn, Policy: aws.String(string(doc.JSON()))})
		require.NoError(t, err, "region %s: PutKeyPolicy", r.Name)
	}
	return byName
}

// standIn returns the stand-in profile to run role's rows under. A role the stand-in has no
// profile for yet (its profiles predate the role) is played by envdr-nobody: it gets the role's
// rendered identity policy, and the keys get key policies rendered with envdr-nobody's ARN in
// that role's place, so the call is authorized by exactly the role's grants. restore puts the
// shipped key policies back and leaves envdr-nobody with nothing.
func standIn(t *testing.T, env *localtest.Env, role string) (profile, note string, restore func()) {
	if _, ok := env.IAM.Identity(role); ok {
		return role, "", func() {}
	}
	nobody, ok := env.IAM.Identity(iam.RoleNobody)
	require.True(t, ok)
	var opts policy.Options
	short := strings.TrimPrefix(role, "envdr-")
	switch short {
	case "drill":
		opts.DrillRole = nobody.ARN()
	case "failover":
		opts.FailoverRole = nobody.ARN()
	case "gameday":
		opts.GamedayRole = nobody.ARN()
	default:
		t.Fatalf("no stand-in profile for %s and no rendered role to play it", role)
	}
	docs := applyRendered(t, env, opts)
	doc := docs["iam-"+short+".json"]
	require.NotNil(t, doc, "render has no iam-%s.json", short)
	require.NoError(t, env.IAM.SetPolicy(iam.RoleNobody, doc))
	return iam.RoleNobody, " (as envdr-nobody with iam-" + short + ".json and " + role + "'s key policy grants: the stand-in has no " + role + " profile yet)",
		func() {
			require.NoError(t, env.IAM.SetPolicy(iam.RoleNobody))
			applyShipped(t, env)
		}
}

// checkDeployCopy requires docs/DEPLOY.md's copy of the matrix to list every row's workload,
// identity and command.
func checkDeployCopy(t *testing.T, rows []row) {
	b, err := os.ReadFile(filepath.Join(repo, "docs/DEPLOY.md"))
	require.NoError(t, err)
	var missing []string
	for _, r := range rows {
		line := fmt.Sprintf("| %s | %s | `%s` |", r.Workload, r.Identity, r.command())
		if !bytes.Contains(b, []byte(line)) {
			missing = append(missing, line)
		}
	}
	if len(missing) > 0 {
		t.Error(errors.New("docs/DEPLOY.md's identity matrix lacks these rows (copy the printed matrix):\n" + strings.Join(missing, "\n")))
	}
}
