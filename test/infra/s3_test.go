//go:build infra

package infra

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/envdr/envdr/internal/config"
)

// The S3 data path (issue 24): its roots and their checks join the plan checks of
// terraform_test.go.
func init() {
	three := []string{"us-east-1", "eu-west-1", "ap-southeast-2"}
	roots["modules/buckets/examples/basic"] = nil
	rootChecks["modules/buckets/examples/basic"] = func(p *Plan) error {
		return checkBuckets(p, bucketWant{
			regions: three, kms: true, lock: &objectLock{"GOVERNANCE", 30}, notify: true, noncurrentDays: 90,
		})
	}
	// The three-region example as terraform.tfvars.example shows it (SSE-S3, no Object Lock) and,
	// in the one-cluster variant, with SSE-KMS and compliance-mode Object Lock.
	for root, want := range map[string]bucketWant{
		"examples/three-region":             {regions: three, notify: true, noncurrentDays: 90},
		"examples/three-region#one-cluster": {regions: three, kms: true, lock: &objectLock{"COMPLIANCE", 7}, notify: true, noncurrentDays: 30},
	} {
		prev := rootChecks[root]
		rootChecks[root] = func(p *Plan) error {
			return errors.Join(prev(p), checkBuckets(p, want), checkQueueNotifications(p, want.regions), checkConfigBuckets(p, want.regions), checkS3Access(p))
		}
	}
	prevQueue := rootChecks["modules/queue/examples/basic"]
	rootChecks["modules/queue/examples/basic"] = func(p *Plan) error {
		return errors.Join(prevQueue(p), checkQueueNotifications(p, []string{"us-east-1"}))
	}
	prevOps := rootChecks["modules/ecs-ops/examples/basic"]
	rootChecks["modules/ecs-ops/examples/basic"] = func(p *Plan) error {
		return errors.Join(prevOps(p), checkS3Alarms(p, "envdr-data-111122223333-us-east-1", []string{"eu-west-1", "ap-southeast-2"}))
	}
	roots["examples/three-region#one-cluster"] = append(roots["examples/three-region#one-cluster"],
		`bucket_sse=aws:kms`, `object_lock={mode="COMPLIANCE",days=7}`, `noncurrent_version_expiration_days=30`)
}

type objectLock struct {
	mode string
	days float64
}

// bucketWant is what a root's buckets must be.
type bucketWant struct {
	regions        []string
	kms            bool        // SSE-KMS under a bucket key per region (else SSE-S3)
	lock           *objectLock // Object Lock default retention, or none
	notify         bool        // ObjectCreated notifications to each region's events queue
	noncurrentDays float64
}

// byRegion returns the plan's resources of type typ by their region; of the S3 resources only
// modules/buckets' (named data: the trail's log bucket is another).
func byRegion(p *Plan, typ string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, r := range p.All(typ) {
		if strings.HasPrefix(typ, "aws_s3_") && r.Name != "data" {
			continue
		}
		out[str(r.Values["region"])] = r.Values
	}
	return out
}

// checkBuckets: a bucket per region with versioning, public access blocked, ACLs off, the chosen
// encryption, optional Object Lock, lifecycle rules, a TLS-only policy, notifications to the
// region's queue, and replication to every other bucket with RTC and metrics, through a role
// with the permissions AWS documents.
func checkBuckets(p *Plan, want bucketWant) error {
	var errs []string
	fail := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }

	buckets := byRegion(p, "aws_s3_bucket")
	names := map[string]string{}
	for _, r := range want.regions {
		b, ok := buckets[r]
		if !ok {
			fail("no bucket in %s", r)
			continue
		}
		names[r] = str(b["bucket"])
		// Set on the bucket, a change of Object Lock would replace the bucket (and lose its
		// envelopes); the lock configuration turns it on for the existing bucket instead.
		if b["object_lock_enabled"] == true {
			fail("bucket %s: object_lock_enabled is set on the bucket: turning Object Lock on later would replace it", names[r])
		}
	}
	if len(buckets) != len(want.regions) {
		fail("%d buckets, want one in each of %v", len(buckets), want.regions)
	}

	for r, v := range byRegion(p, "aws_s3_bucket_versioning") {
		if c := blocks(v["versioning_configuration"]); len(c) != 1 || str(c[0]["status"]) != "Enabled" {
			fail("bucket in %s: versioning is not Enabled (replication needs it)", r)
		}
	}
	for r, v := range byRegion(p, "aws_s3_bucket_public_access_block") {
		for _, k := range []string{"block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"} {
			if v[k] != true {
				fail("bucket in %s: %s is not true", r, k)
			}
		}
	}
	for r, v := range byRegion(p, "aws_s3_bucket_ownership_controls") {
		if rule := blocks(v["rule"]); len(rule) != 1 || str(rule[0]["object_ownership"]) != "BucketOwnerEnforced" {
			fail("bucket in %s: object ownership is not BucketOwnerEnforced", r)
		}
	}
	for _, typ := range []string{"aws_s3_bucket_versioning", "aws_s3_bucket_public_access_block", "aws_s3_bucket_ownership_controls",
		"aws_s3_bucket_server_side_encryption_configuration", "aws_s3_bucket_lifecycle_configuration", "aws_s3_bucket_policy"} {
		if n := len(byRegion(p, typ)); n != len(want.regions) {
			fail("%d %s, want one per bucket (%d)", n, typ, len(want.regions))
		}
	}

	wantAlg := "AES256"
	if want.kms {
		wantAlg = "aws:kms"
	}
	for r, v := range byRegion(p, "aws_s3_bucket_server_side_encryption_configuration") {
		rule := blocks(v["rule"])
		if len(rule) != 1 {
			fail("bucket in %s: %d encryption rules", r, len(rule))
			continue
		}
		def := blocks(rule[0]["apply_server_side_encryption_by_default"])
		if len(def) != 1 || str(def[0]["sse_algorithm"]) != wantAlg {
			fail("bucket in %s: default encryption %v, want %s", r, def, wantAlg)
		}
		if want.kms && rule[0]["bucket_key_enabled"] != true {
			fail("bucket in %s: SSE-KMS without S3 Bucket Keys", r)
		}
	}

	locks := byRegion(p, "aws_s3_bucket_object_lock_configuration")
	if want.lock == nil && len(locks) > 0 {
		fail("Object Lock is off, but %d lock configurations are planned", len(locks))
	}
	if want.lock != nil {
		for _, r := range want.regions {
			rule := blocks(locks[r]["rule"])
			var ret []map[string]any
			if len(rule) == 1 {
				ret = blocks(rule[0]["default_retention"])
			}
			if str(locks[r]["object_lock_enabled"]) != "Enabled" || len(ret) != 1 || str(ret[0]["mode"]) != want.lock.mode || ret[0]["days"] != want.lock.days {
				fail("bucket in %s: Object Lock default retention %v, want %s for %v days", r, ret, want.lock.mode, want.lock.days)
			}
		}
	}

	for r, v := range byRegion(p, "aws_s3_bucket_lifecycle_configuration") {
		abort, noncurrent := false, false
		for _, rule := range blocks(v["rule"]) {
			if a := blocks(rule["abort_incomplete_multipart_upload"]); len(a) == 1 && a[0]["days_after_initiation"].(float64) > 0 {
				abort = true
			}
			if n := blocks(rule["noncurrent_version_expiration"]); len(n) == 1 && n[0]["noncurrent_days"] == want.noncurrentDays {
				noncurrent = true
			}
		}
		if !abort || !noncurrent {
			fail("bucket in %s: lifecycle must abort incomplete multipart uploads (%v) and expire noncurrent versions after %v days (%v)", r, abort, want.noncurrentDays, noncurrent)
		}
	}

	for r, v := range byRegion(p, "aws_s3_bucket_policy") {
		pol, known := v["policy"]
		if !known {
			// With SSE-KMS the policy names the bucket key's ARN, known only after apply.
			if !want.kms {
				fail("bucket in %s: the bucket policy is not known at plan time", r)
			}
			continue
		}
		var doc policyDoc
		if err := json.Unmarshal([]byte(str(pol)), &doc); err != nil {
			fail("bucket in %s: policy: %v", r, err)
			continue
		}
		tls := doc.find("DenyInsecureTransport")
		if tls == nil || tls.Effect != "Deny" || !strings.Contains(string(tls.Condition), `"aws:SecureTransport":"false"`) {
			fail("bucket in %s: no Deny of requests without TLS (aws:SecureTransport false)", r)
		}
		if (doc.find("DenyOtherEncryption") != nil) != want.kms {
			fail("bucket in %s: DenyOtherEncryption present %v, want %v", r, doc.find("DenyOtherEncryption") != nil, want.kms)
		}
	}

	notes := byRegion(p, "aws_s3_bucket_notification")
	if want.notify {
		for _, r := range want.regions {
			q := blocks(notes[r]["queue"])
			if len(q) != 1 {
				fail("bucket in %s: %d queue notifications, want 1", r, len(q))
				continue
			}
			arn := str(q[0]["queue_arn"])
			if !strings.HasPrefix(arn, "arn:aws:sqs:"+r+":") || !strings.HasSuffix(arn, ":envdr-events") {
				fail("bucket in %s notifies %q, want the region's events queue", r, arn)
			}
			if ev := asList(q[0]["events"]); len(ev) != 1 || str(ev[0]) != "s3:ObjectCreated:*" {
				fail("bucket in %s: notification events %v, want [s3:ObjectCreated:*]", r, ev)
			}
		}
	}

	errs = append(errs, checkReplication(p, want, names)...)
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// checkReplication: every bucket replicates to every other one, each rule with RTC (15 minutes)
// and metrics, delete markers not replicated, SSE-KMS objects opted in with the destination's
// key; the role is S3's with the documented permissions.
func checkReplication(p *Plan, want bucketWant, names map[string]string) []string {
	var errs []string
	fail := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	confs := byRegion(p, "aws_s3_bucket_replication_configuration")
	for _, src := range want.regions {
		var dests []string
		for _, rule := range blocks(confs[src]["rule"]) {
			id := str(rule["id"])
			if str(rule["status"]) != "Enabled" {
				fail("%s rule %s: status %v", src, id, rule["status"])
			}
			if dm := blocks(rule["delete_marker_replication"]); len(dm) != 1 || str(dm[0]["status"]) != "Disabled" {
				fail("%s rule %s: delete marker replication must be Disabled by default", src, id)
			}
			d := blocks(rule["destination"])
			if len(d) != 1 {
				fail("%s rule %s: no destination", src, id)
				continue
			}
			dests = append(dests, str(d[0]["bucket"]))
			rt, m := blocks(d[0]["replication_time"]), blocks(d[0]["metrics"])
			if len(rt) != 1 || str(rt[0]["status"]) != "Enabled" || len(blocks(rt[0]["time"])) != 1 || blocks(rt[0]["time"])[0]["minutes"] != 15.0 {
				fail("%s rule %s: Replication Time Control is not Enabled with 15 minutes: %v", src, id, rt)
			}
			if len(m) != 1 || str(m[0]["status"]) != "Enabled" || len(blocks(m[0]["event_threshold"])) != 1 || blocks(m[0]["event_threshold"])[0]["minutes"] != 15.0 {
				fail("%s rule %s: replication metrics are not Enabled with a 15-minute threshold: %v", src, id, m)
			}
			ssc := blocks(rule["source_selection_criteria"])
			kmsOptIn := len(ssc) == 1 && len(blocks(ssc[0]["sse_kms_encrypted_objects"])) == 1 && str(blocks(ssc[0]["sse_kms_encrypted_objects"])[0]["status"]) == "Enabled"
			if kmsOptIn != want.kms || (len(blocks(d[0]["encryption_configuration"])) == 1) != want.kms {
				fail("%s rule %s: SSE-KMS replication opt-in %v and replica key %v, want both %v", src, id, kmsOptIn, d[0]["encryption_configuration"], want.kms)
			}
		}
		var wantDests []string
		for _, r := range want.regions {
			if r != src {
				wantDests = append(wantDests, "arn:aws:s3:::"+names[r])
			}
		}
		sort.Strings(dests)
		sort.Strings(wantDests)
		if !slices.Equal(dests, wantDests) {
			fail("bucket in %s replicates to %v, want %v", src, dests, wantDests)
		}
	}

	var role map[string]any
	for _, r := range p.All("aws_iam_role") {
		if strings.HasSuffix(str(r.Values["name"]), "-s3-replication") {
			role = r.Values
		}
	}
	if role == nil {
		return append(errs, "no S3 replication role")
	}
	if !strings.Contains(str(role["assume_role_policy"]), `"Service":"s3.amazonaws.com"`) {
		fail("the replication role does not trust s3.amazonaws.com: %s", str(role["assume_role_policy"]))
	}
	var doc policyDoc
	for _, rp := range p.All("aws_iam_role_policy") {
		if str(rp.Values["name"]) == "envdr-s3-replication" {
			if err := json.Unmarshal([]byte(str(rp.Values["policy"])), &doc); err != nil {
				return append(errs, "replication policy: "+err.Error())
			}
		}
	}
	bucketARNs, objectARNs := []string{}, []string{}
	for _, r := range want.regions {
		bucketARNs = append(bucketARNs, "arn:aws:s3:::"+names[r])
		objectARNs = append(objectARNs, "arn:aws:s3:::"+names[r]+"/*")
	}
	sourceObjects := []string{"s3:GetObjectVersionAcl", "s3:GetObjectVersionForReplication", "s3:GetObjectVersionTagging"}
	if want.lock != nil {
		sourceObjects = append(sourceObjects, "s3:GetObjectLegalHold", "s3:GetObjectRetention")
	}
	for sid, w := range map[string]struct{ actions, resources []string }{
		"SourceBuckets":      {[]string{"s3:GetReplicationConfiguration", "s3:ListBucket"}, bucketARNs},
		"SourceObjects":      {sourceObjects, objectARNs},
		"DestinationObjects": {[]string{"s3:ReplicateDelete", "s3:ReplicateObject", "s3:ReplicateTags"}, objectARNs},
	} {
		st := doc.find(sid)
		if st == nil {
			fail("replication policy: no statement %s", sid)
			continue
		}
		if got, want := sorted(st.Action), sorted(w.actions); !slices.Equal(got, want) {
			fail("replication policy %s: actions %v, want %v", sid, got, want)
		}
		if got, want := sorted(st.Resource), sorted(w.resources); !slices.Equal(got, want) {
			fail("replication policy %s: resources %v, want %v", sid, got, want)
		}
	}
	kmsStatements := 0
	for _, st := range doc.Statement {
		if strings.HasPrefix(st.Sid, "DecryptSource") || strings.HasPrefix(st.Sid, "EncryptReplica") {
			kmsStatements++
			if !strings.Contains(string(st.Condition), `"kms:ViaService":"s3.`) || !strings.Contains(string(st.Condition), "kms:EncryptionContext:aws:s3:arn") {
				fail("replication policy %s: KMS use must be through S3 (kms:ViaService) for the bucket's objects (kms:EncryptionContext:aws:s3:arn): %s", st.Sid, st.Condition)
			}
		}
	}
	if want.kms && kmsStatements != 2*len(want.regions) {
		fail("replication policy: %d KMS statements, want Decrypt and Encrypt for each of %d regions", kmsStatements, len(want.regions))
	}
	if !want.kms && kmsStatements != 0 {
		fail("replication policy: KMS statements without SSE-KMS")
	}
	for _, k := range p.All("aws_kms_key") {
		if k.Name != "bucket" {
			continue
		}
		if !want.kms {
			fail("bucket key %s planned without SSE-KMS", k.Address)
		}
		if !strings.Contains(str(k.Values["policy"]), `"kms:ViaService":"s3.`+str(k.Values["region"])+`.amazonaws.com"`) {
			fail("bucket key %s: its users may use it only through S3 in its region: %s", k.Address, str(k.Values["policy"]))
		}
		var kp policyDoc
		if err := json.Unmarshal([]byte(str(k.Values["policy"])), &kp); err != nil {
			fail("bucket key %s: %v", k.Address, err)
			continue
		}
		// Readers (the daemon, operators, drills) decrypt and never make data keys.
		if r := kp.find("ReadThroughS3"); r == nil || !slices.Equal(sorted(r.Action), []string{"kms:Decrypt"}) {
			fail("bucket key %s: ReadThroughS3 must allow kms:Decrypt only: %+v", k.Address, r)
		}
	}
	return errs
}

// checkQueueNotifications: each region's events queue lets S3 send, for that region's bucket of
// this account only (aws:SourceArn, aws:SourceAccount).
func checkQueueNotifications(p *Plan, regions []string) error {
	pols := byRegion(p, "aws_sqs_queue_policy")
	var errs []string
	for _, r := range regions {
		var doc policyDoc
		if err := json.Unmarshal([]byte(str(pols[r]["policy"])), &doc); err != nil {
			errs = append(errs, fmt.Sprintf("queue policy in %s: %v", r, err))
			continue
		}
		st := doc.find("S3ObjectCreatedNotifications")
		if st == nil || !strings.Contains(string(st.Principal), "s3.amazonaws.com") || slices.Compare(sorted(st.Action), []string{"sqs:SendMessage"}) != 0 {
			errs = append(errs, fmt.Sprintf("queue policy in %s: no statement letting s3.amazonaws.com SendMessage", r))
			continue
		}
		var cond map[string]map[string]any
		_ = json.Unmarshal(st.Condition, &cond)
		src := fmt.Sprint(cond["ArnLike"]["aws:SourceArn"])
		if !strings.Contains(src, "arn:aws:s3:::") || !strings.Contains(src, r) {
			errs = append(errs, fmt.Sprintf("queue policy in %s: aws:SourceArn %s does not name the region's bucket", r, src))
		}
		if str(cond["StringEquals"]["aws:SourceAccount"]) != "111122223333" {
			errs = append(errs, fmt.Sprintf("queue policy in %s: aws:SourceAccount %v, want the account", r, cond["StringEquals"]["aws:SourceAccount"]))
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// checkConfigBuckets: the config the root writes names each region's planned bucket.
func checkConfigBuckets(p *Plan, regions []string) error {
	raw, ok := p.output("envdr_config")
	if !ok {
		return errors.New("no envdr_config output")
	}
	cfg, err := config.Parse([]byte(str(raw)))
	if err != nil {
		return fmt.Errorf("envdr_config: %w", err)
	}
	buckets := byRegion(p, "aws_s3_bucket")
	for _, r := range cfg.Regions {
		if b := str(buckets[r.Name]["bucket"]); r.Bucket == "" || r.Bucket != b {
			return fmt.Errorf("envdr_config: region %s names bucket %q, the plan's bucket there is %q", r.Name, r.Bucket, b)
		}
	}
	if len(cfg.Regions) != len(regions) {
		return fmt.Errorf("envdr_config has %d regions, want %d", len(cfg.Regions), len(regions))
	}
	return nil
}

// checkS3Alarms: per replication rule of the source bucket, alarms on S3's ReplicationLatency,
// OperationsPendingReplication and OperationsFailedReplication with the rule's dimensions.
func checkS3Alarms(p *Plan, source string, destRegions []string) error {
	want := map[string]bool{}
	for _, r := range destRegions {
		for _, m := range []string{"ReplicationLatency", "OperationsPendingReplication", "OperationsFailedReplication"} {
			want[m+" envdr-data-111122223333-"+r+" envdr-to-"+r] = true
		}
	}
	var errs []string
	for _, a := range p.All("aws_cloudwatch_metric_alarm") {
		if a.Name != "s3_replication" {
			continue
		}
		v := a.Values
		dims, _ := v["dimensions"].(map[string]any)
		key := str(v["metric_name"]) + " " + str(dims["DestinationBucket"]) + " " + str(dims["RuleId"])
		if !want[key] || str(v["namespace"]) != "AWS/S3" || str(dims["SourceBucket"]) != source {
			errs = append(errs, fmt.Sprintf("unexpected S3 replication alarm %s: %s %v", a.Address, v["namespace"], v["dimensions"]))
			continue
		}
		delete(want, key)
		if str(v["metric_name"]) == "OperationsFailedReplication" && (v["threshold"] != 0.0 || str(v["statistic"]) != "Sum") {
			errs = append(errs, fmt.Sprintf("%s: any failed replication must alarm (Sum > 0), got %v > %v", a.Address, v["statistic"], v["threshold"]))
		}
	}
	for k := range want {
		errs = append(errs, "no S3 replication alarm on "+k)
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// checkS3Access: envdr's roles reach the buckets as their commands need and no further:
// producers write and cannot read, the daemon only reads (the version a notification names),
// operators, drills and game days read and list, game days also write, rewrap and failover have
// no S3 access at all.
func checkS3Access(p *Plan) error {
	want := map[string][]string{
		"producer": {"s3:AbortMultipartUpload", "s3:PutObject"},
		"daemon":   {"s3:GetObject", "s3:GetObjectVersion"},
		"operator": {"s3:GetObject", "s3:ListBucket"},
		"drill":    {"s3:GetObject", "s3:ListBucket"},
		"gameday":  {"s3:AbortMultipartUpload", "s3:GetObject", "s3:ListBucket", "s3:PutObject"},
	}
	got := map[string][]string{}
	for _, rp := range p.All("aws_iam_role_policy") {
		if !strings.HasPrefix(rp.Address, "module.iam.") {
			continue // not an envdr role's (the replication role's, the execution role's)
		}
		// module.iam.aws_iam_role_policy.daemon, or module.iam.aws_iam_role_policy.s3["daemon"]
		role := rp.Name
		if _, key, ok := strings.Cut(rp.Address, `["`); ok {
			role = strings.TrimSuffix(key, `"]`)
		}
		var doc policyDoc
		if err := json.Unmarshal([]byte(str(rp.Values["policy"])), &doc); err != nil {
			return fmt.Errorf("%s: %w", rp.Address, err)
		}
		for _, st := range doc.Statement {
			for _, a := range st.Action {
				if strings.HasPrefix(a, "s3:") {
					got[role] = append(got[role], a)
					for _, res := range st.Resource {
						if !strings.HasPrefix(res, "arn:aws:s3:::envdr-data-111122223333-") {
							return fmt.Errorf("role %s: %s on %s, outside envdr's buckets", role, a, res)
						}
					}
				}
			}
		}
	}
	for role := range got {
		got[role] = sorted(got[role])
	}
	for _, role := range []string{"producer", "daemon", "operator", "drill", "gameday", "rewrap", "failover"} {
		if !slices.Equal(got[role], want[role]) {
			return fmt.Errorf("role %s: S3 actions %v, want %v", role, got[role], want[role])
		}
	}
	return nil
}

// policyDoc is an IAM-style policy document as the checks read it.
type policyDoc struct {
	Statement []policyStatement
}

type policyStatement struct {
	Sid       string
	Effect    string
	Principal json.RawMessage
	Action    stringOrList
	Resource  stringOrList
	Condition json.RawMessage
}

// stringOrList decodes a policy element that is a string or a list of strings.
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

func (d *policyDoc) find(sid string) *policyStatement {
	for i := range d.Statement {
		if d.Statement[i].Sid == sid {
			return &d.Statement[i]
		}
	}
	return nil
}

func sorted(l []string) []string {
	out := slices.Clone(l)
	sort.Strings(out)
	return out
}

// The replication and queue checks refuse what AWS would not accept or what would leave a bucket
// unprotected: a rule without RTC, a queue policy without aws:SourceArn.
func TestS3ChecksRefuse(t *testing.T) {
	t.Parallel()
	rule := func(rtc string) map[string]any {
		return map[string]any{
			"id": "envdr-to-eu-west-1", "status": "Enabled",
			"delete_marker_replication": []any{map[string]any{"status": "Disabled"}},
			"destination": []any{map[string]any{
				"bucket":           "arn:aws:s3:::b-eu",
				"replication_time": []any{map[string]any{"status": rtc, "time": []any{map[string]any{"minutes": 15.0}}}},
				"metrics":          []any{map[string]any{"status": "Enabled", "event_threshold": []any{map[string]any{"minutes": 15.0}}}},
			}},
		}
	}
	plan := func(rtc, queuePolicy string) *Plan {
		p := &Plan{}
		p.PlannedValues.RootModule.Resources = []Resource{
			{Type: "aws_s3_bucket_replication_configuration", Name: "data", Values: map[string]any{"region": "us-east-1", "rule": []any{rule(rtc)}}},
			{Type: "aws_iam_role", Values: map[string]any{"name": "envdr-s3-replication", "assume_role_policy": `{"Statement":[{"Principal":{"Service":"s3.amazonaws.com"}}]}`}},
			{Type: "aws_sqs_queue_policy", Values: map[string]any{"region": "us-east-1", "policy": queuePolicy}},
		}
		return p
	}
	want := bucketWant{regions: []string{"us-east-1", "eu-west-1"}}
	names := map[string]string{"us-east-1": "b-us", "eu-west-1": "b-eu"}
	good := `{"Statement":[{"Sid":"S3ObjectCreatedNotifications","Principal":{"Service":"s3.amazonaws.com"},"Action":"sqs:SendMessage",` +
		`"Condition":{"ArnLike":{"aws:SourceArn":["arn:aws:s3:::b-us-east-1"]},"StringEquals":{"aws:SourceAccount":"111122223333"}}}]}`
	noSource := `{"Statement":[{"Sid":"S3ObjectCreatedNotifications","Principal":{"Service":"s3.amazonaws.com"},"Action":"sqs:SendMessage"}]}`

	require.Contains(t, strings.Join(checkReplication(plan("Disabled", good), want, names), "\n"), "Replication Time Control is not Enabled")
	require.NotContains(t, strings.Join(checkReplication(plan("Enabled", good), want, names), "\n"), "Replication Time Control")
	require.NoError(t, checkQueueNotifications(plan("Enabled", good), []string{"us-east-1"}))
	require.ErrorContains(t, checkQueueNotifications(plan("Enabled", noSource), []string{"us-east-1"}), "aws:SourceArn")
}

// The Kubernetes manifests' and the Helm chart's default config name each region's bucket as
// terraform/examples/three-region creates it: the daemon learns the S3 data path from its config
// and needs nothing else.
func TestDeployConfigNamesBuckets(t *testing.T) {
	t.Parallel()
	read := func(path ...string) []byte {
		b, err := os.ReadFile(filepath.Join(append([]string{repo}, path...)...))
		require.NoError(t, err)
		return b
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	require.NoError(t, yaml.Unmarshal(read("deploy", "kubernetes", "configmap.yaml"), &cm))
	var values struct {
		Config struct {
			Content string `json:"content"`
		} `json:"config"`
	}
	require.NoError(t, yaml.Unmarshal(read("deploy", "helm", "envdr", "values.yaml"), &values))
	for name, text := range map[string]string{"deploy/kubernetes/configmap.yaml": cm.Data["envdr.yaml"], "deploy/helm/envdr/values.yaml": values.Config.Content} {
		cfg, err := config.Parse([]byte(text))
		require.NoError(t, err, name)
		require.NotEmpty(t, cfg.Regions, name)
		for _, r := range cfg.Regions {
			require.Equal(t, "envdr-data-111122223333-"+r.Name, r.Bucket, "%s: region %s", name, r.Name)
		}
	}
}
