package policy

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/envdr/envdr/internal/config"
)

// Options are the inputs of Render that the envdr config does not hold.
type Options struct {
	// DaemonRole, ProducerRole, OperatorRole, RewrapRole, DrillRole, FailoverRole and
	// GamedayRole are the role ARNs named in the key policies. Empty means
	// arn:PARTITION:iam::ACCOUNT:role/envdr-daemon (-producer, -operator, -rewrap, -drill,
	// -failover, -gameday).
	DaemonRole, ProducerRole, OperatorRole, RewrapRole string
	DrillRole, FailoverRole, GamedayRole               string
	// Admins are the key administrators (the only principals that may change the key policy or
	// schedule deletion). Empty means the account root, which keeps the key manageable through
	// IAM without delegating any use of it.
	Admins []string
	// QueueKeys are the KMS keys of the queues' SSE-KMS encryption, if the queues use them
	// instead of SQS-managed encryption: one per region, since SQS uses only a key in the
	// queue's own region. Producers, the daemon and game days get each only through SQS in
	// that key's region (kms:ViaService sqs.REGION.amazonaws.com).
	QueueKeys []string
}

// Named is a policy document with the name it is rendered or read under.
type Named struct {
	// Name is the file name for rendered documents, the path for linted files.
	Name string
	Doc  *Document
}

// File names of rendered documents; key policies are KeyPolicyPrefix + region + ".json".
const (
	KeyPolicyPrefix = "kms-key-policy."
	DaemonPolicy    = "iam-daemon.json"
	ProducerPolicy  = "iam-producer.json"
	OperatorPolicy  = "iam-operator.json"
	RewrapPolicy    = "iam-rewrap.json"
	DrillPolicy     = "iam-drill.json"
	FailoverPolicy  = "iam-failover.json"
	GamedayPolicy   = "iam-gameday.json"
)

// Roles are the envdr roles by short name, in the order the key policies name them: the role
// ARN defaults to arn:PARTITION:iam::ACCOUNT:role/envdr-NAME and the identity policy is
// iam-NAME.json. The local stand-in has a profile per role (envdr-NAME).
var Roles = []string{"daemon", "producer", "operator", "rewrap", "drill", "failover", "gameday"}

// Actions by role. Kept as variables so tests and the linter share them.
var (
	// adminActions manage a key but never use it: a key administrator cannot decrypt.
	adminActions = []string{
		"kms:CancelKeyDeletion", "kms:CreateAlias", "kms:DeleteAlias", "kms:DescribeKey",
		"kms:DisableKey", "kms:DisableKeyRotation", "kms:EnableKey", "kms:EnableKeyRotation",
		"kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListAliases", "kms:ListGrants",
		"kms:ListKeyPolicies", "kms:ListKeyRotations", "kms:ListResourceTags", "kms:PutKeyPolicy",
		"kms:ReplicateKey", "kms:RevokeGrant", "kms:RotateKeyOnDemand", "kms:ScheduleKeyDeletion",
		"kms:TagResource", "kms:UntagResource", "kms:UpdateAlias", "kms:UpdateKeyDescription",
		"kms:UpdatePrimaryRegion",
	}
	operatorKeyReadActions = []string{"kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus"}
	// daemonTableActions: records are read with BatchGetItem and written with PutItem or a
	// TransactWriteItems of Put and Delete items (which IAM authorizes per item action).
	daemonTableActions = []string{
		"dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
	}
	operatorTableActions = []string{
		"dynamodb:BatchGetItem", "dynamodb:DescribeContinuousBackups", "dynamodb:DescribeTable", "dynamodb:GetItem",
		"dynamodb:Query", "dynamodb:Scan",
	}
	rewrapTableActions = []string{
		"dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:DescribeTable", "dynamodb:GetItem",
		"dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem",
	}
	// daemonQueueActions: consuming, plus GetQueueAttributes (maxReceiveCount of the redrive
	// policy, retention, queue depth) and SendMessage (the re-send just before SQS would redrive
	// a still-valid event to the DLQ).
	daemonQueueActions = []string{
		"sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessage",
	}
	rewrapKeyActions = []string{"kms:Decrypt", "kms:Encrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo"}
	// rewrapDescribeActions: without --since, rewrap asks KMS when the key last rotated
	// (ListKeyRotations) to pick the wraps made before it.
	rewrapDescribeActions = []string{"kms:DescribeKey", "kms:ListKeyRotations"}
	// drillTableActions: the drill scans the table in one surviving region and reads each
	// record there (BatchGetItem, GetItem), and a sampled drill sizes its scan from the table's
	// item count (DescribeTable); it never writes.
	drillTableActions = []string{"dynamodb:BatchGetItem", "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:Scan"}
	// gamedayTableActions: a game day reads back the records of the envelopes it sealed.
	gamedayTableActions = []string{"dynamodb:BatchGetItem", "dynamodb:GetItem"}
	// gamedayKeyActions: a game day seals (GenerateDataKey) and opens each region's wrap alone
	// (Decrypt), both with envdr:id in the context.
	gamedayKeyActions = []string{"kms:Decrypt", "kms:GenerateDataKey"}
	// The S3 data path (regions[].bucket). Every role that touches it does so in every region's
	// bucket, as it uses every region's key: seal falls over to the next region's bucket, open
	// and the drills read whichever region's replica survives.
	//
	// producerObjectActions: seal streams the envelope up as a multipart upload
	// (CreateMultipartUpload, UploadPart and CompleteMultipartUpload are all s3:PutObject) and
	// aborts it when the seal fails.
	producerObjectActions = []string{"s3:AbortMultipartUpload", "s3:PutObject"}
	// daemonObjectActions: the S3 event source reads the envelope's header with a ranged GET
	// (IAM has no condition on the range: the role may read whole objects), of the version the
	// event names (a GET with versionId is s3:GetObjectVersion).
	daemonObjectActions = []string{"s3:GetObject", "s3:GetObjectVersion"}
	// readObjectActions: open, drills and game days read envelopes whole.
	readObjectActions = []string{"s3:GetObject"}
	// listBucketActions: without s3:ListBucket S3 answers a missing key 403 AccessDenied, not
	// 404 NoSuchKey; open's fall-over to the next replica and the drill's data RPO (objects not
	// yet replicated) must tell "not there yet" from "not allowed".
	listBucketActions = []string{"s3:ListBucket"}
	// failoverKeyActions: failover --promote moves a multi-Region key's primary. KMS authorizes
	// UpdatePrimaryRegion on the primary key and on the replica that becomes primary, so every
	// MRK of the family grants it.
	failoverKeyActions = []string{"kms:DescribeKey", "kms:UpdatePrimaryRegion"}
)

// DaemonActions are the actions `envdr run` calls: the policy linter checks a daemon policy
// allows each of them.
func DaemonActions() []string {
	out := []string{"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt"}
	out = append(out, daemonTableActions...)
	return append(out, daemonQueueActions...)
}

// keyRef is one region's key as IAM sees it.
type keyRef struct {
	region, mode string
	// resource is the key ARN, or key/* in the key's account and region when the config names
	// an alias (an alias ARN in Resource would match the alias, not the key).
	resource string
	// alias is "alias/NAME" when the config names an alias ARN; it becomes a
	// kms:ResourceAliases condition.
	alias string
	// family groups the keys whose policies must be identical (an MRK and its replicas).
	family string
}

// env is everything Render derives from the config.
type env struct {
	partition, account, home string
	keys                     []keyRef
	queueARN, dlqARN         string
	// previous are the keys that are no longer a region's key but still unwrap: each region's
	// previous_keys and the config's trusted_keys (key ARNs, and alias ARNs scoped by alias).
	previousKeys    []string
	previousAliases map[string][]string // region -> alias/NAME
	// queueARNs and dlqARNs: every region's queue and DLQ (the home region's first).
	queueARNs, dlqARNs []string
	tableARNs          []string
	opts               Options
	// scrub: envdr run scrubs (scrub.budget > 0), so the daemon also scans the table.
	scrub bool
	// buckets: every region's bucket of the S3 data path (regions[].bucket), in config order;
	// none: the roles get no S3 statement.
	buckets []string
}

// Render generates, for cfg, the key policy of every region's key and the IAM policies of the
// daemon, producer and operator roles, sorted by name.
func Render(cfg *config.Config, opts Options) ([]Named, error) {
	e, err := derive(cfg, opts)
	if err != nil {
		return nil, err
	}
	var out []Named
	for _, k := range e.keys {
		out = append(out, Named{Name: KeyPolicyPrefix + k.region + ".json", Doc: e.keyPolicy(k)})
	}
	out = append(out,
		Named{Name: DaemonPolicy, Doc: e.daemon()},
		Named{Name: ProducerPolicy, Doc: e.producer()},
		Named{Name: OperatorPolicy, Doc: e.operator()},
		Named{Name: RewrapPolicy, Doc: e.rewrap()},
		Named{Name: DrillPolicy, Doc: e.drill()},
		Named{Name: FailoverPolicy, Doc: e.failover()},
		Named{Name: GamedayPolicy, Doc: e.gameday()},
	)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

var accountRE = regexp.MustCompile(`^[0-9]{12}$`)

func derive(cfg *config.Config, opts Options) (*env, error) {
	if cfg == nil || len(cfg.Regions) == 0 {
		return nil, errors.New("policy: config has no regions")
	}
	e := &env{home: cfg.HomeRegion, opts: opts}
	if b, err := cfg.Scrub.BudgetFraction(); err == nil && b > 0 {
		e.scrub = true
	}
	for _, r := range cfg.Regions {
		p := strings.SplitN(r.Key, ":", 6)
		if len(p) != 6 || p[0] != "arn" || p[2] != "kms" {
			return nil, fmt.Errorf("policy: region %s: key %q is not a KMS key or alias ARN", r.Name, r.Key)
		}
		part, region, acct, res := p[1], p[3], p[4], p[5]
		if !accountRE.MatchString(acct) {
			return nil, fmt.Errorf("policy: region %s: key %q has no 12-digit account ID", r.Name, r.Key)
		}
		if e.account == "" {
			e.partition, e.account = part, acct
		} else if acct != e.account || part != e.partition {
			return nil, fmt.Errorf("policy: region %s: key %q is in account %s, other keys in %s; envdr's roles and keys live in one account", r.Name, r.Key, acct, e.account)
		}
		k := keyRef{region: region, mode: r.Mode}
		switch {
		case strings.HasPrefix(res, "alias/"):
			k.resource = fmt.Sprintf("arn:%s:kms:%s:%s:key/*", part, region, acct)
			k.alias = res
		case strings.HasPrefix(res, "key/"):
			k.resource = r.Key
		default:
			return nil, fmt.Errorf("policy: region %s: key %q is neither key/ID nor alias/NAME", r.Name, r.Key)
		}
		if r.Mode == config.ModeMRK {
			// Replicas share the key ID (mrk-...) or, in an alias-based config, the alias name.
			_, id, _ := strings.Cut(res, "/")
			k.family = "mrk-" + strings.TrimPrefix(id, "mrk-")
		} else {
			k.family = "key-" + region
		}
		e.keys = append(e.keys, k)
	}
	if cfg.Table == "" {
		return nil, errors.New("policy: config has no table")
	}
	for _, r := range cfg.Regions {
		if r.Bucket != "" {
			e.buckets = appendNew(e.buckets, r.Bucket)
		}
	}
	for _, k := range e.keys {
		e.tableARNs = append(e.tableARNs, fmt.Sprintf("arn:%s:dynamodb:%s:%s:table/%s", e.partition, k.region, e.account, cfg.Table))
	}
	var err error
	if e.queueARN, err = queueARN(cfg.QueueURL, e.partition, e.home, e.account); err != nil {
		return nil, fmt.Errorf("policy: queue_url: %w", err)
	}
	if cfg.DLQURL != "" {
		if e.dlqARN, err = queueARN(cfg.DLQURL, e.partition, e.home, e.account); err != nil {
			return nil, fmt.Errorf("policy: dlq_url: %w", err)
		}
	}
	addPrevious := func(arn string) error {
		p := strings.SplitN(arn, ":", 6)
		if len(p) != 6 || p[2] != "kms" {
			return fmt.Errorf("%q is not a KMS key or alias ARN", arn)
		}
		switch {
		case strings.HasPrefix(p[5], "alias/"):
			if e.previousAliases == nil {
				e.previousAliases = map[string][]string{}
			}
			e.previousAliases[p[3]] = appendNew(e.previousAliases[p[3]], p[5])
		default:
			e.previousKeys = appendNew(e.previousKeys, arn)
		}
		return nil
	}
	for _, r := range cfg.Regions {
		for _, k := range r.PreviousKeys {
			if err := addPrevious(k); err != nil {
				return nil, fmt.Errorf("policy: region %s: previous_keys: %w", r.Name, err)
			}
		}
	}
	for _, k := range cfg.TrustedKeys {
		if err := addPrevious(k); err != nil {
			return nil, fmt.Errorf("policy: trusted_keys: %w", err)
		}
	}
	e.queueARNs, e.dlqARNs = Strings{e.queueARN}, nil
	if e.dlqARN != "" {
		e.dlqARNs = Strings{e.dlqARN}
	}
	for _, r := range cfg.Regions {
		if r.QueueURL != "" {
			a, err := queueARN(r.QueueURL, e.partition, r.Name, e.account)
			if err != nil {
				return nil, fmt.Errorf("policy: region %s: queue_url: %w", r.Name, err)
			}
			e.queueARNs = appendNew(e.queueARNs, a)
		}
		if r.DLQURL != "" {
			a, err := queueARN(r.DLQURL, e.partition, r.Name, e.account)
			if err != nil {
				return nil, fmt.Errorf("policy: region %s: dlq_url: %w", r.Name, err)
			}
			e.dlqARNs = appendNew(e.dlqARNs, a)
		}
	}
	for _, r := range []struct {
		arn  *string
		name string
	}{
		{&e.opts.DaemonRole, "daemon"}, {&e.opts.ProducerRole, "producer"}, {&e.opts.OperatorRole, "operator"},
		{&e.opts.RewrapRole, "rewrap"}, {&e.opts.DrillRole, "drill"}, {&e.opts.FailoverRole, "failover"},
		{&e.opts.GamedayRole, "gameday"},
	} {
		if *r.arn == "" {
			*r.arn = e.role("envdr-" + r.name)
		}
	}
	if len(e.opts.Admins) == 0 {
		e.opts.Admins = []string{fmt.Sprintf("arn:%s:iam::%s:root", e.partition, e.account)}
	}
	seen := map[string]string{}
	for _, k := range e.opts.QueueKeys {
		region := config.ARNRegion(k)
		if region == "" || !strings.Contains(k, ":key/") {
			return nil, fmt.Errorf("policy: queue key %q is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)", k)
		}
		if prev, ok := seen[region]; ok && prev != k {
			return nil, fmt.Errorf("policy: queue keys %s and %s are both in %s: give one key per region", prev, k, region)
		}
		seen[region] = k
	}
	return e, nil
}

func appendNew(list []string, v string) []string {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}

func (e *env) role(name string) string {
	return fmt.Sprintf("arn:%s:iam::%s:role/%s", e.partition, e.account, name)
}

// queueARN turns a queue URL into its ARN. The region comes from the host
// (sqs.REGION.amazonaws.com or REGION.queue.amazonaws.com); other hosts, such as the local
// stand-in's, mean the home region.
func queueARN(raw, partition, home, account string) (string, error) {
	if raw == "" {
		return "", errors.New("missing; set the SQS queue URL")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%q is not a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)", raw)
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 || parts[1] == "" {
		return "", fmt.Errorf("%q: want the path /ACCOUNT/NAME", raw)
	}
	acct, name := parts[0], parts[1]
	if !accountRE.MatchString(acct) {
		acct = account
	}
	region := home
	host := strings.Split(u.Hostname(), ".")
	switch {
	case len(host) >= 3 && host[0] == "sqs":
		region = host[1]
	case len(host) >= 3 && host[1] == "queue":
		region = host[0]
	}
	return fmt.Sprintf("arn:%s:sqs:%s:%s:%s", partition, region, acct, name), nil
}

// contextCondition requires the envelope ID in the encryption context. kms:EncryptionContextKeys
// is multivalued: ForAnyValue:StringEquals is true only if the request's context has the key,
// while ForAllValues would also pass a request with no context at all.
func contextCondition() map[string]Strings {
	return map[string]Strings{"kms:EncryptionContextKeys": {ContextKey}}
}

// keyUse is an IAM statement allowing actions on one region's key, scoped by alias when the
// config names one (kms:ResourceAliases is multivalued, hence ForAnyValue).
func keyUse(sid string, k keyRef, actions []string, requireContext bool) Statement {
	anyValue := map[string]Strings{}
	if requireContext {
		anyValue = contextCondition()
	}
	if k.alias != "" {
		anyValue["kms:ResourceAliases"] = Strings{k.alias}
	}
	s := Statement{Sid: sid, Effect: "Allow", Action: actions, Resource: Strings{k.resource}}
	if len(anyValue) > 0 {
		s.Condition = Conditions{"ForAnyValue:StringEquals": anyValue}
	}
	return s
}

// sidRegion turns us-east-1 into UsEast1 for statement IDs (alphanumeric only).
func sidRegion(r string) string {
	var b strings.Builder
	for _, p := range strings.Split(r, "-") {
		if p != "" {
			b.WriteString(strings.ToUpper(p[:1]) + p[1:])
		}
	}
	return b.String()
}

// daemonKeyActions: every region decrypts (verification, and the source side of independent
// mode) and encrypts (independent mode targets); MRK regions also re-encrypt inside KMS.
func daemonKeyActions(mode string) []string {
	if mode == config.ModeMRK {
		return []string{"kms:Decrypt", "kms:Encrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo"}
	}
	return []string{"kms:Decrypt", "kms:Encrypt"}
}

// bucketARNs are the data path's buckets (ListBucket); objectARNs their objects.
func (e *env) bucketARNs() Strings {
	out := Strings{}
	for _, b := range e.buckets {
		out = append(out, fmt.Sprintf("arn:%s:s3:::%s", e.partition, b))
	}
	return out
}

func (e *env) objectARNs() Strings {
	out := Strings{}
	for _, b := range e.buckets {
		out = append(out, fmt.Sprintf("arn:%s:s3:::%s/*", e.partition, b))
	}
	return out
}

// s3 is a statement on the data path's objects (or, with onBuckets, the buckets); none without
// buckets.
func (e *env) s3(sid string, actions []string, onBuckets bool) []Statement {
	if len(e.buckets) == 0 {
		return nil
	}
	res := e.objectARNs()
	if onBuckets {
		res = e.bucketARNs()
	}
	return []Statement{{Sid: sid, Effect: "Allow", Action: actions, Resource: res}}
}

// queues is every region's events queue and DLQ (queue depth: status, /metrics, the alerts).
func (e *env) queues() Strings {
	return append(append(Strings{}, e.queueARNs...), e.dlqARNs...)
}

func (e *env) daemon() *Document {
	d := &Document{Version: Version}
	for _, k := range e.keys {
		d.Statement = append(d.Statement, keyUse("WrapAndVerify"+sidRegion(k.region), k, daemonKeyActions(k.mode), true))
	}
	for _, k := range e.keys {
		d.Statement = append(d.Statement, keyUse("DescribeKey"+sidRegion(k.region), k, []string{"kms:DescribeKey"}, false))
	}
	tableActions := daemonTableActions
	if e.scrub {
		// The scrubber reads the table segment by segment (Scan); without scrubbing the daemon
		// never scans, and keeps no such right.
		tableActions = append(slices.Clone(daemonTableActions), "dynamodb:Scan")
	}
	d.Statement = append(d.Statement,
		Statement{Sid: "Records", Effect: "Allow", Action: tableActions, Resource: e.tableARNs},
		Statement{Sid: "ConsumeEvents", Effect: "Allow", Action: daemonQueueActions, Resource: e.queueARNs},
	)
	if len(e.dlqARNs) > 0 {
		d.Statement = append(d.Statement, Statement{Sid: "DeadLetter", Effect: "Allow", Action: Strings{"sqs:SendMessage"}, Resource: e.dlqARNs})
	}
	// envdr_queue_messages on /metrics (the DLQ alert) and the retention check at start-up.
	d.Statement = append(d.Statement, Statement{Sid: "QueueDepth", Effect: "Allow", Action: Strings{"sqs:GetQueueAttributes"}, Resource: e.queues()})
	d.Statement = append(d.Statement, e.s3("ReadEnvelopeHeaders", daemonObjectActions, false)...)
	d.Statement = append(d.Statement, e.previous([]string{"kms:Decrypt", "kms:ReEncryptFrom"})...)
	// Receiving from (and dead-lettering to) an SSE-KMS queue needs its key, through SQS only.
	d.Statement = append(d.Statement, e.queueKey([]string{"kms:Decrypt", "kms:GenerateDataKey"})...)
	return d
}

// previous lets a role unwrap (actions, with the context condition) and describe the keys that
// events and records may still name: previous_keys and trusted_keys. Key ARNs go in one
// statement; alias ARNs as key/* of their region scoped by kms:ResourceAliases.
func (e *env) previous(actions []string) []Statement {
	var out []Statement
	if len(e.previousKeys) > 0 {
		out = append(out,
			Statement{Sid: "PreviousKeys", Effect: "Allow", Action: actions, Resource: e.previousKeys,
				Condition: Conditions{"ForAnyValue:StringEquals": contextCondition()}},
			Statement{Sid: "DescribePreviousKeys", Effect: "Allow", Action: Strings{"kms:DescribeKey"}, Resource: e.previousKeys})
	}
	regionsWithAliases := make([]string, 0, len(e.previousAliases))
	for r := range e.previousAliases {
		regionsWithAliases = append(regionsWithAliases, r)
	}
	sort.Strings(regionsWithAliases)
	for _, r := range regionsWithAliases {
		k := keyRef{region: r, resource: fmt.Sprintf("arn:%s:kms:%s:%s:key/*", e.partition, r, e.account)}
		aliases := e.previousAliases[r]
		use := keyUse("PreviousAliases"+sidRegion(r), k, actions, true)
		use.Condition["ForAnyValue:StringEquals"]["kms:ResourceAliases"] = aliases
		desc := Statement{Sid: "DescribePreviousAliases" + sidRegion(r), Effect: "Allow", Action: Strings{"kms:DescribeKey"}, Resource: Strings{k.resource},
			Condition: Conditions{"ForAnyValue:StringEquals": {"kms:ResourceAliases": aliases}}}
		out = append(out, use, desc)
	}
	return out
}

func (e *env) producer() *Document {
	d := &Document{Version: Version}
	// Every region seals: seal falls over to the next configured region when the home region is
	// unreachable, and sends the event to the sealing region's queue (and one more).
	for _, k := range e.keys {
		d.Statement = append(d.Statement, keyUse("Seal"+sidRegion(k.region), k, []string{"kms:GenerateDataKey"}, true))
	}
	d.Statement = append(d.Statement, Statement{Sid: "Enqueue", Effect: "Allow", Action: Strings{"sqs:SendMessage"}, Resource: e.queueARNs})
	d.Statement = append(d.Statement, e.s3("PutEnvelopes", producerObjectActions, false)...)
	d.Statement = append(d.Statement, e.queueKey([]string{"kms:Decrypt", "kms:GenerateDataKey"})...)
	return d
}

func (e *env) operator() *Document {
	d := &Document{Version: Version}
	for _, k := range e.keys {
		d.Statement = append(d.Statement, keyUse("Open"+sidRegion(k.region), k, []string{"kms:Decrypt"}, true))
	}
	for _, k := range e.keys {
		d.Statement = append(d.Statement, keyUse("InspectKey"+sidRegion(k.region), k, operatorKeyReadActions, false))
	}
	d.Statement = append(d.Statement,
		Statement{Sid: "ReadRecords", Effect: "Allow", Action: operatorTableActions, Resource: e.tableARNs},
		Statement{Sid: "QueueDepth", Effect: "Allow", Action: Strings{"sqs:GetQueueAttributes"}, Resource: e.queues()},
	)
	d.Statement = append(d.Statement, e.s3("OpenEnvelopes", readObjectActions, false)...)
	d.Statement = append(d.Statement, e.s3("ListEnvelopes", listBucketActions, true)...)
	d.Statement = append(d.Statement, e.previous([]string{"kms:Decrypt"})...)
	return d
}

// rewrap is the role of `envdr rewrap`: re-make a region's wraps (ReEncrypt inside KMS, or
// Decrypt where a wrap exists and Encrypt here) and rewrite the records; no queue.
func (e *env) rewrap() *Document {
	d := &Document{Version: Version}
	for _, k := range e.keys {
		d.Statement = append(d.Statement, keyUse("Rewrap"+sidRegion(k.region), k, rewrapKeyActions, true))
	}
	for _, k := range e.keys {
		d.Statement = append(d.Statement, keyUse("DescribeKey"+sidRegion(k.region), k, rewrapDescribeActions, false))
	}
	d.Statement = append(d.Statement, Statement{Sid: "Records", Effect: "Allow", Action: rewrapTableActions, Resource: e.tableARNs})
	d.Statement = append(d.Statement, e.previous([]string{"kms:Decrypt", "kms:ReEncryptFrom"})...)
	return d
}

// queueKey grants each region's queue key only when SQS in that region calls KMS on the role's
// behalf (kms:ViaService) for this account's callers (kms:CallerAccount); both are
// single-valued keys, hence plain StringEquals. A key serves only the queues of its own region.
func (e *env) queueKey(actions []string) []Statement {
	var out []Statement
	for _, k := range e.opts.QueueKeys {
		region := config.ARNRegion(k)
		out = append(out, Statement{
			Sid: "QueueEncryption" + sidRegion(region), Effect: "Allow", Action: actions, Resource: Strings{k},
			Condition: Conditions{"StringEquals": {
				"kms:CallerAccount": {e.account},
				"kms:ViaService":    {"sqs." + region + ".amazonaws.com"},
			}},
		})
	}
	return out
}

// drill is the role of scheduled and manual drills (`envdr drill`): scan the table in a
// surviving region, open each record's wrap there (Decrypt), and count the queue's backlog for
// the recovery point. Read-only: no writes, no sealing, no queue consumption.
func (e *env) drill() *Document {
	d := &Document{Version: Version}
	for _, k := range e.keys {
		d.Statement = append(d.Statement, keyUse("Unwrap"+sidRegion(k.region), k, []string{"kms:Decrypt"}, true))
	}
	for _, k := range e.keys {
		d.Statement = append(d.Statement, keyUse("DescribeKey"+sidRegion(k.region), k, []string{"kms:DescribeKey"}, false))
	}
	d.Statement = append(d.Statement,
		Statement{Sid: "ScanRecords", Effect: "Allow", Action: drillTableActions, Resource: e.tableARNs},
		Statement{Sid: "QueueDepth", Effect: "Allow", Action: Strings{"sqs:GetQueueAttributes"}, Resource: e.queues()},
	)
	// drill --data: open sampled objects from each survivor's replica, and list the replicas
	// to count the objects not yet replicated (data RPO).
	d.Statement = append(d.Statement, e.s3("OpenReplicas", readObjectActions, false)...)
	d.Statement = append(d.Statement, e.s3("ListReplicas", listBucketActions, true)...)
	d.Statement = append(d.Statement, e.previous([]string{"kms:Decrypt"})...)
	return d
}

// failover is the role of `envdr failover --promote`: describe the keys and move a
// multi-Region key's primary (UpdatePrimaryRegion, authorized on both the primary and the
// replica). It is a key administrator for that one action and uses no key.
func (e *env) failover() *Document {
	d := &Document{Version: Version}
	for _, k := range e.keys {
		actions := []string{"kms:DescribeKey"}
		if k.mode == config.ModeMRK {
			actions = failoverKeyActions
		}
		d.Statement = append(d.Statement, keyUse("Promote"+sidRegion(k.region), k, actions, false))
	}
	return d
}

// gameday is the role of `envdr gameday`: it seals test envelopes in every region (with
// fall-over), enqueues their events, and reads the records back to open each region's wrap
// alone. It does not consume the queue or write records: the daemons do.
func (e *env) gameday() *Document {
	d := &Document{Version: Version}
	for _, k := range e.keys {
		d.Statement = append(d.Statement, keyUse("SealAndOpen"+sidRegion(k.region), k, gamedayKeyActions, true))
	}
	for _, k := range e.keys {
		d.Statement = append(d.Statement, keyUse("DescribeKey"+sidRegion(k.region), k, []string{"kms:DescribeKey"}, false))
	}
	d.Statement = append(d.Statement,
		Statement{Sid: "ReadRecords", Effect: "Allow", Action: gamedayTableActions, Resource: e.tableARNs},
		Statement{Sid: "Enqueue", Effect: "Allow", Action: Strings{"sqs:SendMessage"}, Resource: e.queueARNs},
	)
	// A game day uploads test envelopes during the loss and opens them from the survivors'
	// replicas, as the drill does.
	d.Statement = append(d.Statement, e.s3("UploadTestEnvelopes", producerObjectActions, false)...)
	d.Statement = append(d.Statement, e.s3("OpenReplicas", readObjectActions, false)...)
	d.Statement = append(d.Statement, e.s3("ListReplicas", listBucketActions, true)...)
	d.Statement = append(d.Statement, e.previous([]string{"kms:Decrypt"})...)
	d.Statement = append(d.Statement, e.queueKey([]string{"kms:Decrypt", "kms:GenerateDataKey"})...)
	return d
}

// keyPolicy is the key policy of one region's key. It names no region, so an MRK's primary and
// replicas carry the identical document (Lint checks that). Producers may seal in every region
// (seal falls over when the home region is unreachable).
func (e *env) keyPolicy(k keyRef) *Document {
	use := func(sid, principal string, actions []string, cond Conditions) Statement {
		return Statement{Sid: sid, Effect: "Allow", Principal: AWS(principal), Action: actions, Resource: Strings{"*"}, Condition: cond}
	}
	withContext := func(extra Conditions) Conditions {
		c := Conditions{"ForAnyValue:StringEquals": contextCondition()}
		for op, kv := range extra {
			c[op] = kv
		}
		return c
	}
	modes := config.ModeIndependent
	failover := []string{"kms:DescribeKey"}
	if k.mode == config.ModeMRK {
		modes = config.ModeMRK
		failover = failoverKeyActions
	}
	return &Document{
		Version: Version,
		ID:      "envdr-" + k.family,
		Statement: []Statement{
			{
				Sid: "KeyAdministration", Effect: "Allow", Principal: AWS(e.opts.Admins...),
				Action: adminActions, Resource: Strings{"*"},
			},
			{
				// A guard against later edits or grants that open the key to other accounts.
				Sid: "DenyOtherAccounts", Effect: "Deny", Principal: &Principal{ByType: map[string]Strings{"AWS": {"*"}}},
				Action: Strings{"kms:*"}, Resource: Strings{"*"},
				Condition: Conditions{"StringNotEquals": {"kms:CallerAccount": {e.account}}},
			},
			use("DaemonWrapAndVerify", e.opts.DaemonRole, daemonKeyActions(modes), withContext(nil)),
			use("DaemonDescribeKey", e.opts.DaemonRole, []string{"kms:DescribeKey"}, nil),
			use("ProducerSeal", e.opts.ProducerRole, []string{"kms:GenerateDataKey"}, withContext(nil)),
			use("OperatorOpen", e.opts.OperatorRole, []string{"kms:Decrypt"}, withContext(nil)),
			use("OperatorInspectKey", e.opts.OperatorRole, operatorKeyReadActions, nil),
			use("RewrapKeyUse", e.opts.RewrapRole, rewrapKeyActions, withContext(nil)),
			use("RewrapDescribeKey", e.opts.RewrapRole, rewrapDescribeActions, nil),
			use("DrillUnwrap", e.opts.DrillRole, []string{"kms:Decrypt"}, withContext(nil)),
			use("DrillDescribeKey", e.opts.DrillRole, []string{"kms:DescribeKey"}, nil),
			use("FailoverPromote", e.opts.FailoverRole, failover, nil),
			use("GamedaySealAndOpen", e.opts.GamedayRole, gamedayKeyActions, withContext(nil)),
			use("GamedayDescribeKey", e.opts.GamedayRole, []string{"kms:DescribeKey"}, nil),
		},
	}
}
