package recovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/policy"
	"github.com/envdr/envdr/regions"
)

// Check statuses.
const (
	StatusPass = "pass"
	StatusFail = "fail"
	StatusWarn = "warn"
)

// Check names, stable for --json consumers.
const (
	CheckReachable = "region-reachable"
	CheckKey       = "key-enabled"
	CheckRotation  = "key-rotation"
	CheckReplica   = "mrk-replica"
	CheckPrimary   = "mrk-primary"
	CheckTable     = "table"
	CheckQueue     = "queue"
	CheckDLQ       = "dlq"
	CheckPolicy    = "key-policy"
)

// Check is one row of the doctor's table.
type Check struct {
	Check  string `json:"check"`
	Region string `json:"region,omitempty"`
	// Target is what was checked: a key ARN, table name or queue URL.
	Target string `json:"target,omitempty"`
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
	Fix    string `json:"fix,omitempty"`
}

// DoctorReport is every check in a stable order (region config order, then check).
type DoctorReport struct {
	Checks   []Check `json:"checks"`
	Failed   int     `json:"failed"`
	Warnings int     `json:"warnings"`
	// Lost are the regions whose KMS did not answer (unreachable, silent past the region
	// timeout, or 5xx): their region-reachable check fails and their other checks are skipped;
	// every other region is still checked.
	Lost []string `json:"lost_regions"`
}

// Passed reports whether no check failed (warnings do not fail).
func (r *DoctorReport) Passed() bool { return r.Failed == 0 }

// DoctorOptions tune Doctor.
type DoctorOptions struct {
	// Admins are extra key-administrator principals for the key-policy lint.
	Admins []string
	// Regions tunes the per-region clients.
	Regions regions.Options
	// RegionTimeout bounds the first call to each region's KMS, which decides whether the region
	// is lost (default DefaultRegionTimeout).
	RegionTimeout time.Duration
}

// regionFacts is what doctor learned about one region's key.
type regionFacts struct {
	md     *kmstypes.KeyMetadata
	policy *policy.Named
}

// Doctor checks the live setup: each region reachable; each key exists, is enabled and rotates;
// multi-Region replicas exist in every mrk region and agree with the primary; the table in
// every region, the queue and its DLQ exist; and the key policies pass the policy linter (no
// wildcard principal may decrypt, an encryption-context condition is required, replicas agree).
func Doctor(ctx context.Context, cfg *config.Config, opts DoctorOptions) (*DoctorReport, error) {
	topo, err := regions.New(ctx, cfg, opts.Regions)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var checks []Check
	add := func(c Check) {
		mu.Lock()
		checks = append(checks, c)
		mu.Unlock()
	}
	facts := map[string]*regionFacts{}
	var wg sync.WaitGroup
	for _, rc := range cfg.Regions {
		r, err := topo.Region(rc.Name)
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := doctorRegion(ctx, cfg, rc, r, opts.RegionTimeout, add)
			mu.Lock()
			facts[rc.Name] = f
			mu.Unlock()
		}()
	}
	wg.Wait()
	lost := map[string]bool{}
	for _, c := range checks {
		if c.Check == CheckReachable && c.Status == StatusFail {
			lost[c.Region] = true
		}
	}
	doctorReplicas(cfg, facts, add)
	doctorPolicies(cfg, facts, opts.Admins, add)
	doctorPermissions(ctx, cfg, facts, add)
	for _, rc := range cfg.Regions {
		q, dlq := cfg.Queues(rc.Name)
		if r, err := topo.Region(rc.Name); err == nil && !lost[rc.Name] && (q != "" || rc.Name == cfg.HomeRegion) {
			doctorQueues(ctx, r, q, dlq, add)
		}
	}

	order := map[string]int{}
	for i, n := range cfg.RegionNames() {
		order[n] = i
	}
	checkOrder := map[string]int{CheckReachable: 0, CheckKey: 1, CheckRotation: 2, CheckPrimary: 3, CheckReplica: 4, CheckPolicy: 5, CheckTable: 6, CheckQueue: 7, CheckDLQ: 8, CheckDaemonPermissions: 9}
	sort.SliceStable(checks, func(i, j int) bool {
		a, b := checks[i], checks[j]
		if order[a.Region] != order[b.Region] {
			return order[a.Region] < order[b.Region]
		}
		return checkOrder[a.Check] < checkOrder[b.Check]
	})
	rep := &DoctorReport{Checks: checks, Lost: []string{}}
	for _, n := range cfg.RegionNames() {
		if lost[n] {
			rep.Lost = append(rep.Lost, n)
		}
	}
	for _, c := range checks {
		switch c.Status {
		case StatusFail:
			rep.Failed++
		case StatusWarn:
			rep.Warnings++
		}
	}
	return rep, nil
}

// primaryOf returns the primary key ARN and region of a multi-Region key's metadata.
func primaryOf(md *kmstypes.KeyMetadata) (arn, region string) {
	if md != nil && md.MultiRegionConfiguration != nil && md.MultiRegionConfiguration.PrimaryKey != nil {
		return aws.ToString(md.MultiRegionConfiguration.PrimaryKey.Arn), aws.ToString(md.MultiRegionConfiguration.PrimaryKey.Region)
	}
	return "", ""
}

func doctorRegion(ctx context.Context, cfg *config.Config, rc config.Region, r *regions.Region, timeout time.Duration, add func(Check)) *regionFacts {
	f := &regionFacts{}
	kc := r.KMS()
	if timeout <= 0 {
		timeout = DefaultRegionTimeout
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	out, err := kc.DescribeKey(tctx, &kms.DescribeKeyInput{KeyId: aws.String(rc.Key)})
	silent := err != nil && tctx.Err() != nil && ctx.Err() == nil
	cancel()
	if err != nil && (silent || regions.IsConnError(err) || regions.IsOutage(err)) {
		why := "KMS did not answer: " + shortCause(err)
		if silent {
			why = fmt.Sprintf("KMS did not answer within %s", timeout)
		}
		// A lost region is one row that says so; its other checks would only repeat it.
		add(Check{Check: CheckReachable, Region: rc.Name, Status: StatusFail, Detail: "REGION LOST: " + why + "; its other checks were skipped, the other regions were checked",
			Fix: fmt.Sprintf("check the network path to KMS in %s (VPC endpoints, proxies, AWS Health); on the local stand-in: envdr local up %s", rc.Name, rc.Name)})
		return f
	}
	add(Check{Check: CheckReachable, Region: rc.Name, Status: StatusPass, Detail: "KMS answered"})
	var nf *kmstypes.NotFoundException
	switch {
	case errors.As(err, &nf):
		fix := fmt.Sprintf("create the key in %s or correct regions[].key in the config", rc.Name)
		if rc.Mode == config.ModeMRK && regions.IsMultiRegionKeyARN(rc.Key) && rc.Name != cfg.HomeRegion {
			home, _ := cfg.Region(cfg.HomeRegion)
			fix = fmt.Sprintf("replicate the primary key into %s: aws kms replicate-key --region %s --key-id %s --replica-region %s",
				rc.Name, cfg.HomeRegion, home.Key, rc.Name)
		}
		add(Check{Check: CheckKey, Region: rc.Name, Target: rc.Key, Status: StatusFail, Detail: "the key does not exist in " + rc.Name + " (missing replica?)", Fix: fix})
	case err != nil:
		add(Check{Check: CheckKey, Region: rc.Name, Target: rc.Key, Status: StatusFail, Detail: "DescribeKey: " + trimErr(err),
			Fix: "grant the operator role kms:DescribeKey on the key (envdr policy render) and check the key ARN"})
	default:
		f.md = out.KeyMetadata
		arn := aws.ToString(f.md.Arn)
		switch f.md.KeyState {
		case kmstypes.KeyStateEnabled:
			add(Check{Check: CheckKey, Region: rc.Name, Target: arn, Status: StatusPass, Detail: "exists and is enabled"})
		case kmstypes.KeyStatePendingDeletion, kmstypes.KeyStatePendingReplicaDeletion:
			add(Check{Check: CheckKey, Region: rc.Name, Target: arn, Status: StatusFail, Detail: "the key is pending deletion: every wrap under it becomes unrecoverable",
				Fix: fmt.Sprintf("aws kms cancel-key-deletion --region %s --key-id %s && aws kms enable-key --region %s --key-id %s", rc.Name, arn, rc.Name, arn)})
		default:
			add(Check{Check: CheckKey, Region: rc.Name, Target: arn, Status: StatusFail, Detail: fmt.Sprintf("the key is %s: %s cannot open its wraps", f.md.KeyState, rc.Name),
				Fix: fmt.Sprintf("aws kms enable-key --region %s --key-id %s", rc.Name, arn)})
		}
		rot, err := kc.GetKeyRotationStatus(ctx, &kms.GetKeyRotationStatusInput{KeyId: aws.String(arn)})
		primary, primaryRegion := primaryOf(f.md)
		if primary == "" {
			primary, primaryRegion = arn, rc.Name
		}
		fix := fmt.Sprintf("aws kms enable-key-rotation --region %s --key-id %s", primaryRegion, primary)
		if primary != arn {
			fix += " (rotation of a multi-Region key is set on its primary)"
		}
		switch {
		case err != nil:
			add(Check{Check: CheckRotation, Region: rc.Name, Target: arn, Status: StatusFail, Detail: "GetKeyRotationStatus: " + trimErr(err),
				Fix: "grant the operator role kms:GetKeyRotationStatus (envdr policy render)"})
		case !rot.KeyRotationEnabled:
			add(Check{Check: CheckRotation, Region: rc.Name, Target: arn, Status: StatusFail, Detail: "automatic key rotation is off", Fix: fix})
		default:
			add(Check{Check: CheckRotation, Region: rc.Name, Target: arn, Status: StatusPass,
				Detail: fmt.Sprintf("rotates every %d days", aws.ToInt32(rot.RotationPeriodInDays))})
		}
		pol, err := kc.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(arn), PolicyName: aws.String("default")})
		if err != nil {
			add(Check{Check: CheckPolicy, Region: rc.Name, Target: arn, Status: StatusFail, Detail: "GetKeyPolicy: " + trimErr(err),
				Fix: "grant the operator role kms:GetKeyPolicy (envdr policy render)"})
		} else if docs, err := policy.Load(policy.KeyPolicyPrefix+rc.Name+".json", []byte(aws.ToString(pol.Policy))); err != nil || len(docs) != 1 {
			add(Check{Check: CheckPolicy, Region: rc.Name, Target: arn, Status: StatusFail, Detail: fmt.Sprintf("the key policy does not parse: %v", err),
				Fix: "replace it with the one envdr policy render writes (aws kms put-key-policy)"})
		} else {
			f.policy = &docs[0]
		}
	}

	tout, err := r.DynamoDB().DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(cfg.Table)})
	var rnf *ddbtypes.ResourceNotFoundException
	switch {
	case errors.As(err, &rnf):
		add(Check{Check: CheckTable, Region: rc.Name, Target: cfg.Table, Status: StatusFail, Detail: "the table has no replica in " + rc.Name,
			Fix: fmt.Sprintf("aws dynamodb update-table --region %s --table-name %s --replica-updates 'Create={RegionName=%s}' (or terraform/modules/table)", cfg.HomeRegion, cfg.Table, rc.Name)})
	case err != nil:
		add(Check{Check: CheckTable, Region: rc.Name, Target: cfg.Table, Status: StatusFail, Detail: "DescribeTable: " + trimErr(err),
			Fix: "check the table name and grant the operator role dynamodb:DescribeTable"})
	case tout.Table.TableStatus != ddbtypes.TableStatusActive:
		add(Check{Check: CheckTable, Region: rc.Name, Target: cfg.Table, Status: StatusWarn, Detail: "status " + string(tout.Table.TableStatus),
			Fix: "wait for the table to become ACTIVE"})
	default:
		add(Check{Check: CheckTable, Region: rc.Name, Target: cfg.Table, Status: StatusPass, Detail: "exists and is ACTIVE"})
	}
	return f
}

// doctorReplicas checks that every mrk region holds a replica of the home region's primary and
// that each replica names the same primary.
func doctorReplicas(cfg *config.Config, facts map[string]*regionFacts, add func(Check)) {
	// The reference is the home region's key, or, with the home region lost, the first region
	// that answered with a multi-Region key.
	home := facts[cfg.HomeRegion]
	if home == nil || home.md == nil {
		home = nil
		for _, rc := range cfg.Regions {
			if f := facts[rc.Name]; rc.Mode == config.ModeMRK && f != nil && f.md != nil && aws.ToBool(f.md.MultiRegion) {
				home = f
				break
			}
		}
	}
	if home == nil || home.md == nil || !aws.ToBool(home.md.MultiRegion) {
		return
	}
	primary, primaryRegion := primaryOf(home.md)
	if _, configured := cfg.Region(primaryRegion); configured {
		add(Check{Check: CheckPrimary, Region: primaryRegion, Target: primary, Status: StatusPass,
			Detail: "the multi-Region key's primary is in " + primaryRegion + " (envdr failover --promote REGION moves it)"})
	} else {
		add(Check{Check: CheckPrimary, Region: primaryRegion, Target: primary, Status: StatusWarn,
			Detail: "the multi-Region key's primary is in " + primaryRegion + ", which is not a configured region: rotation and new replicas are managed from there",
			Fix:    "envdr failover --promote REGION (a configured region), or add " + primaryRegion + " to regions"})
	}
	listed := map[string]bool{}
	if mrc := home.md.MultiRegionConfiguration; mrc != nil {
		for _, k := range mrc.ReplicaKeys {
			listed[aws.ToString(k.Region)] = true
		}
		listed[primaryRegion] = true
	}
	for _, rc := range cfg.Regions {
		if rc.Mode != config.ModeMRK {
			continue
		}
		f := facts[rc.Name]
		fix := fmt.Sprintf("aws kms replicate-key --region %s --key-id %s --replica-region %s", primaryRegion, primary, rc.Name)
		switch {
		case !listed[rc.Name]:
			add(Check{Check: CheckReplica, Region: rc.Name, Target: rc.Key, Status: StatusFail,
				Detail: fmt.Sprintf("the primary %s has no replica in %s", primary, rc.Name), Fix: fix})
		case f == nil || f.md == nil:
			// Unreachable or missing: reported by the region's own checks.
		case !aws.ToBool(f.md.MultiRegion):
			add(Check{Check: CheckReplica, Region: rc.Name, Target: aws.ToString(f.md.Arn), Status: StatusFail,
				Detail: "mode is mrk but the key is a single-Region key", Fix: fix + " and point regions[].key at the replica (or set mode: independent)"})
		default:
			p, _ := primaryOf(f.md)
			if p != primary {
				add(Check{Check: CheckReplica, Region: rc.Name, Target: aws.ToString(f.md.Arn), Status: StatusFail,
					Detail: fmt.Sprintf("the key's primary is %s, the home region's is %s: wraps cannot move between them inside KMS", p, primary), Fix: fix})
			} else {
				add(Check{Check: CheckReplica, Region: rc.Name, Target: aws.ToString(f.md.Arn), Status: StatusPass, Detail: "replica of " + primary})
			}
		}
	}

}

// doctorPolicies lints each key policy alone, then the multi-Region ones together (primary
// first) for divergent replicas.
func doctorPolicies(cfg *config.Config, facts map[string]*regionFacts, admins []string, add func(Check)) {
	l := policy.Linter{Admins: admins}
	var mrk []policy.Named
	if f := facts[cfg.HomeRegion]; f != nil && f.policy != nil {
		if rc, _ := cfg.Region(cfg.HomeRegion); rc.Mode == config.ModeMRK {
			mrk = append(mrk, *f.policy)
		}
	}
	for _, rc := range cfg.Regions {
		f := facts[rc.Name]
		if f == nil || f.policy == nil {
			continue
		}
		if rc.Mode == config.ModeMRK && rc.Name != cfg.HomeRegion {
			mrk = append(mrk, *f.policy)
		}
		arn := aws.ToString(f.md.Arn)
		findings := l.Lint([]policy.Named{*f.policy})
		reportFindings(rc.Name, arn, findings, add, true)
	}
	if len(mrk) > 1 {
		var div []policy.Finding
		for _, x := range (policy.Linter{Admins: admins, Replicas: true}).Lint(mrk) {
			if x.Rule == policy.RuleReplicaDiverges {
				div = append(div, x)
			}
		}
		for _, x := range div {
			region := strings.TrimSuffix(strings.TrimPrefix(x.Document, policy.KeyPolicyPrefix), ".json")
			reportFindings(region, "", []policy.Finding{x}, add, false)
		}
	}
}

func reportFindings(region, arn string, findings []policy.Finding, add func(Check), passIfClean bool) {
	clean := true
	for _, x := range findings {
		st := StatusWarn
		if x.Severity == policy.SeverityError {
			st, clean = StatusFail, false
		}
		add(Check{Check: CheckPolicy, Region: region, Target: arn, Status: st,
			Detail: fmt.Sprintf("%s (statement %s): %s", x.Rule, x.Statement, x.Reason), Fix: x.Fix})
	}
	if clean && passIfClean {
		add(Check{Check: CheckPolicy, Region: region, Target: arn, Status: StatusPass,
			Detail: "no wildcard principal may decrypt; decrypt and data-key grants require an encryption-context condition"})
	}
}

func doctorQueues(ctx context.Context, r *regions.Region, queueURL, dlqURL string, add func(Check)) {
	q := r.SQS()
	region := r.Name
	attrs := func(url string) (map[string]string, error) {
		out, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url),
			AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameAll}})
		if err != nil {
			return nil, err
		}
		return out.Attributes, nil
	}
	if queueURL == "" {
		add(Check{Check: CheckQueue, Region: region, Status: StatusFail, Detail: "no events queue: envdr run --region " + region + " has nothing to consume",
			Fix: "create the region's queue and DLQ (terraform/modules/queue) and set regions[].queue_url and dlq_url"})
		return
	}
	var dlqARN string
	if dlqURL == "" {
		add(Check{Check: CheckDLQ, Region: region, Status: StatusFail, Detail: "no dead-letter queue: poison events would have nowhere to go",
			Fix: "create a dead-letter queue and set regions[].dlq_url (dlq_url for the home region; terraform/modules/queue)"})
	} else if a, err := attrs(dlqURL); err != nil {
		add(Check{Check: CheckDLQ, Region: region, Target: dlqURL, Status: StatusFail, Detail: "GetQueueAttributes: " + trimErr(err),
			Fix: "create the dead-letter queue (aws sqs create-queue) or correct the DLQ URL"})
	} else {
		dlqARN = a[string(sqstypes.QueueAttributeNameQueueArn)]
		add(Check{Check: CheckDLQ, Region: region, Target: dlqURL, Status: StatusPass, Detail: "exists"})
	}
	a, err := attrs(queueURL)
	if err != nil {
		add(Check{Check: CheckQueue, Region: region, Target: queueURL, Status: StatusFail, Detail: "GetQueueAttributes: " + trimErr(err),
			Fix: "create the queue (aws sqs create-queue) or correct the queue URL"})
		return
	}
	var redrive struct {
		Target string `json:"deadLetterTargetArn"`
	}
	_ = json.Unmarshal([]byte(a[string(sqstypes.QueueAttributeNameRedrivePolicy)]), &redrive)
	switch {
	case dlqARN != "" && redrive.Target != dlqARN:
		add(Check{Check: CheckQueue, Region: region, Target: queueURL, Status: StatusFail,
			Detail: fmt.Sprintf("the queue's redrive policy targets %q, not the configured DLQ %s", redrive.Target, dlqARN),
			Fix:    fmt.Sprintf(`aws sqs set-queue-attributes --region %s --queue-url %s --attributes '{"RedrivePolicy":"{\"deadLetterTargetArn\":\"%s\",\"maxReceiveCount\":\"10\"}"}'`, region, queueURL, dlqARN)})
	default:
		add(Check{Check: CheckQueue, Region: region, Target: queueURL, Status: StatusPass, Detail: "exists, redrives to the DLQ"})
	}
}
