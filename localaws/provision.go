package localaws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws/iam"
)

// Default resource names of the stand-in.
const (
	AliasMRK         = "alias/envdr-mrk"
	AliasIndependent = "alias/envdr-independent"
	QueueName        = "envdr-events"
	DLQName          = "envdr-events-dlq"
	TableName        = "envdr-records"
	// BucketPrefix names each region's bucket: envdr-data-REGION.
	BucketPrefix = "envdr-data-"
	// ReplicationRole is the IAM role S3 replication assumes in the stand-in's replication
	// configurations (the stand-in does not check its permissions).
	ReplicationRole = "envdr-s3-replication"
	// NotificationID is the id of the notification configuration that sends each bucket's
	// ObjectCreated events to its region's events queue.
	NotificationID = "envdr-events"
	// MaxReceiveCount is the redrive policy's receive limit before an event goes to the DLQ.
	MaxReceiveCount = 5
)

// ProvisionOptions names what Provision creates.
type ProvisionOptions struct {
	// Regions, home region first.
	Regions []string
	// Endpoints returns a region's endpoints.
	Endpoints func(region string) config.Endpoints
	// AccessKey, SecretKey sign the calls (defaults: the fixed fake credentials).
	AccessKey, SecretKey string
	// Names; defaults are the constants above.
	AliasMRK, AliasIndependent, Queue, DLQ, Table string
	// Admin is the admin endpoint URL recorded in the config's local section.
	Admin string
	// DefaultKeyPolicies leaves the keys with KMS's default key policy (the account root,
	// delegating everything to IAM) instead of the key policies `envdr policy render` generates.
	DefaultKeyPolicies bool
	// S3 provisions the data path: in every region a versioned bucket, named BucketPrefix +
	// REGION + BucketSuffix, whose ObjectCreated events go to the region's events queue
	// (S3 sends s3:TestEvent there when that is set up), replicating to every other region's
	// bucket. The config then names each region's bucket.
	S3                         bool
	BucketPrefix, BucketSuffix string
}

// RegionKeys are the keys provisioned in one region.
type RegionKeys struct {
	// MRK is the multi-Region key ARN (the primary in the home region, a replica elsewhere).
	MRK string `json:"mrk"`
	// Independent is the region's own single-Region key ARN.
	Independent string `json:"independent"`
}

// Provisioned is what Provision created or found.
type Provisioned struct {
	Config *config.Config
	Keys   map[string]RegionKeys
}

func (o *ProvisionOptions) defaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&o.AccessKey, AccessKey)
	def(&o.SecretKey, SecretKey)
	def(&o.AliasMRK, AliasMRK)
	def(&o.AliasIndependent, AliasIndependent)
	def(&o.Queue, QueueName)
	def(&o.DLQ, DLQName)
	def(&o.Table, TableName)
	def(&o.BucketPrefix, BucketPrefix)
	if len(o.Regions) == 0 {
		o.Regions = DefaultRegions
	}
}

// Provision creates, or finds and reuses, the stand-in's resources: a multi-Region primary key
// in the home region replicated to every other region, an independent key per region, aliases
// for both, the event queue with its DLQ, and the records table. It returns a validated config
// whose regions use the multi-Region key (mrk mode). Every key then carries the key policy
// `envdr policy render` generates for it (ApplyKeyPolicies), unless o.DefaultKeyPolicies.
func Provision(ctx context.Context, o ProvisionOptions) (*Provisioned, error) {
	o.defaults()
	home := o.Regions[0]
	cfgs := map[string]aws.Config{}
	kc := map[string]*kms.Client{}
	for _, r := range o.Regions {
		cfgs[r] = AWSConfig(r, o.Endpoints(r), o.AccessKey, o.SecretKey)
		kc[r] = kms.NewFromConfig(cfgs[r])
	}
	keys := map[string]RegionKeys{}

	// Multi-Region key: primary in the home region, replicas share its key ID elsewhere.
	primary, err := aliasTarget(ctx, kc[home], o.AliasMRK)
	if err != nil {
		return nil, fmt.Errorf("provision %s %s: %w", home, o.AliasMRK, err)
	}
	if primary == nil {
		out, err := kc[home].CreateKey(ctx, &kms.CreateKeyInput{
			MultiRegion: aws.Bool(true),
			Description: aws.String("envdr local stand-in: multi-Region primary"),
		})
		if err != nil {
			return nil, fmt.Errorf("provision %s: CreateKey (multi-Region): %w", home, err)
		}
		primary = out.KeyMetadata
		if _, err := kc[home].CreateAlias(ctx, &kms.CreateAliasInput{AliasName: &o.AliasMRK, TargetKeyId: primary.KeyId}); err != nil {
			return nil, fmt.Errorf("provision %s: CreateAlias %s: %w", home, o.AliasMRK, err)
		}
	}
	if err := ensureEnabled(ctx, kc[home], primary); err != nil {
		return nil, fmt.Errorf("provision %s: %w", home, err)
	}
	keys[home] = RegionKeys{MRK: aws.ToString(primary.Arn)}
	for _, r := range o.Regions[1:] {
		replica, err := describe(ctx, kc[r], aws.ToString(primary.KeyId))
		if err != nil {
			return nil, fmt.Errorf("provision %s: DescribeKey %s: %w", r, aws.ToString(primary.KeyId), err)
		}
		if replica == nil {
			out, err := kc[home].ReplicateKey(ctx, &kms.ReplicateKeyInput{
				KeyId:         primary.Arn,
				ReplicaRegion: aws.String(r),
				Description:   aws.String("envdr local stand-in: multi-Region replica"),
			})
			if err != nil {
				return nil, fmt.Errorf("provision %s: ReplicateKey %s to %s: %w", home, aws.ToString(primary.Arn), r, err)
			}
			replica = out.ReplicaKeyMetadata
		}
		if err := ensureEnabled(ctx, kc[r], replica); err != nil {
			return nil, fmt.Errorf("provision %s: %w", r, err)
		}
		// A new replica is Creating for a while, as on AWS: wait until it can be used.
		if err := waitEnabled(ctx, kc[r], aws.ToString(replica.Arn)); err != nil {
			return nil, fmt.Errorf("provision %s: %w", r, err)
		}
		if err := ensureAlias(ctx, kc[r], o.AliasMRK, aws.ToString(replica.KeyId)); err != nil {
			return nil, fmt.Errorf("provision %s: %w", r, err)
		}
		keys[r] = RegionKeys{MRK: aws.ToString(replica.Arn)}
	}

	// One single-Region key per region.
	for _, r := range o.Regions {
		md, err := aliasTarget(ctx, kc[r], o.AliasIndependent)
		if err != nil {
			return nil, fmt.Errorf("provision %s %s: %w", r, o.AliasIndependent, err)
		}
		if md == nil {
			out, err := kc[r].CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("envdr local stand-in: independent key")})
			if err != nil {
				return nil, fmt.Errorf("provision %s: CreateKey: %w", r, err)
			}
			md = out.KeyMetadata
			if _, err := kc[r].CreateAlias(ctx, &kms.CreateAliasInput{AliasName: &o.AliasIndependent, TargetKeyId: md.KeyId}); err != nil {
				return nil, fmt.Errorf("provision %s: CreateAlias %s: %w", r, o.AliasIndependent, err)
			}
		}
		if err := ensureEnabled(ctx, kc[r], md); err != nil {
			return nil, fmt.Errorf("provision %s: %w", r, err)
		}
		k := keys[r]
		k.Independent = aws.ToString(md.Arn)
		keys[r] = k
	}

	// A queue and a DLQ in every region, and the table's replica in every region (a global
	// table: CreateTable through one region's endpoint makes every replica).
	queues := map[string][2]string{}
	for _, r := range o.Regions {
		q, d, err := provisionQueues(ctx, sqs.NewFromConfig(cfgs[r]), o.Queue, o.DLQ)
		if err != nil {
			return nil, fmt.Errorf("provision %s: %w", r, err)
		}
		queues[r] = [2]string{q, d}
	}
	for _, r := range o.Regions {
		if err := provisionTable(ctx, NewDynamoDB(cfgs[r]), o.Table); err != nil {
			return nil, fmt.Errorf("provision %s: %w", r, err)
		}
	}

	buckets := map[string]string{}
	if o.S3 {
		for _, r := range o.Regions {
			buckets[r] = o.BucketPrefix + r + o.BucketSuffix
		}
		if err := provisionBuckets(ctx, cfgs, o.Regions, buckets, queues); err != nil {
			return nil, err
		}
	}

	c := &config.Config{
		HomeRegion: home,
		QueueURL:   queues[home][0],
		DLQURL:     queues[home][1],
		Table:      o.Table,
		Policy:     config.Policy{Required: append([]string(nil), o.Regions...), Verify: config.VerifyAll},
		Local:      &config.Local{Admin: o.Admin, AccessKey: o.AccessKey, SecretKey: o.SecretKey},
	}
	for _, r := range o.Regions {
		c.Regions = append(c.Regions, config.Region{
			Name: r, Key: keys[r].MRK, Mode: config.ModeMRK, KMSRate: 1000, Endpoints: o.Endpoints(r),
			QueueURL: queues[r][0], DLQURL: queues[r][1], Bucket: buckets[r],
		})
	}
	c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("provision: the config it would write is invalid: %w", err)
	}
	// The keys carry the key policies we ship, so that every caller is held to them as on AWS.
	if !o.DefaultKeyPolicies {
		if err := ApplyKeyPolicies(ctx, kc, c, keys); err != nil {
			return nil, fmt.Errorf("provision: %w", err)
		}
	}
	return &Provisioned{Config: c, Keys: keys}, nil
}

// NewDynamoDB builds a DynamoDB client for the stand-in. DynamoDB Local's error responses do not
// carry the CRC32 the SDK checks, which only produces warnings; skip the check.
func NewDynamoDB(cfg aws.Config) *dynamodb.Client {
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
}

// aliasTarget returns the metadata of the key an alias points to, or nil if the alias does not
// exist.
func aliasTarget(ctx context.Context, c *kms.Client, alias string) (*kmstypes.KeyMetadata, error) {
	return describe(ctx, c, alias)
}

func describe(ctx context.Context, c *kms.Client, keyID string) (*kmstypes.KeyMetadata, error) {
	out, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &keyID})
	var nf *kmstypes.NotFoundException
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return out.KeyMetadata, nil
}

// ensureEnabled brings a reused key back to Enabled: a drill may have disabled it or scheduled
// its deletion, and every start of the stand-in should hand out working keys.
func ensureEnabled(ctx context.Context, c *kms.Client, md *kmstypes.KeyMetadata) error {
	id := md.KeyId
	switch md.KeyState {
	case kmstypes.KeyStateEnabled, kmstypes.KeyStateCreating:
		return nil
	case kmstypes.KeyStatePendingDeletion, kmstypes.KeyStatePendingReplicaDeletion:
		if _, err := c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: id}); err != nil {
			return fmt.Errorf("CancelKeyDeletion %s: %w", aws.ToString(md.Arn), err)
		}
	}
	if _, err := c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: id}); err != nil {
		return fmt.Errorf("EnableKey %s (was %s): %w", aws.ToString(md.Arn), md.KeyState, err)
	}
	return nil
}

// waitEnabled polls DescribeKey until the key is Enabled (a replica leaves Creating).
func waitEnabled(ctx context.Context, c *kms.Client, arn string) error {
	for {
		md, err := describe(ctx, c, arn)
		if err != nil {
			return fmt.Errorf("DescribeKey %s: %w", arn, err)
		}
		if md != nil && md.KeyState != kmstypes.KeyStateCreating {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("key %s still Creating: %w", arn, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func ensureAlias(ctx context.Context, c *kms.Client, alias, keyID string) error {
	md, err := aliasTarget(ctx, c, alias)
	if err != nil {
		return fmt.Errorf("DescribeKey %s: %w", alias, err)
	}
	if md != nil {
		if aws.ToString(md.KeyId) == keyID {
			return nil
		}
		if _, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: &alias, TargetKeyId: &keyID}); err == nil {
			return nil
		}
		if _, err := c.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: &alias}); err != nil {
			return fmt.Errorf("DeleteAlias %s (pointing at %s, want %s): %w", alias, aws.ToString(md.KeyId), keyID, err)
		}
	}
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: &alias, TargetKeyId: &keyID}); err != nil {
		return fmt.Errorf("CreateAlias %s: %w", alias, err)
	}
	return nil
}

// provisionQueues creates (idempotently, as SQS CreateQueue is) the DLQ and the queue that
// redrives to it after MaxReceiveCount receives.
func provisionQueues(ctx context.Context, c *sqs.Client, queue, dlq string) (queueURL, dlqURL string, err error) {
	d, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &dlq, Attributes: map[string]string{
		string(sqstypes.QueueAttributeNameMessageRetentionPeriod): "1209600",
	}})
	if err != nil {
		return "", "", fmt.Errorf("CreateQueue %s: %w", dlq, err)
	}
	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: d.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return "", "", fmt.Errorf("GetQueueAttributes %s: %w", dlq, err)
	}
	redrive, _ := json.Marshal(map[string]string{
		"deadLetterTargetArn": attrs.Attributes[string(sqstypes.QueueAttributeNameQueueArn)],
		"maxReceiveCount":     fmt.Sprint(MaxReceiveCount),
	})
	q, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &queue, Attributes: map[string]string{
		string(sqstypes.QueueAttributeNameRedrivePolicy): string(redrive),
	}})
	if err != nil {
		return "", "", fmt.Errorf("CreateQueue %s: %w", queue, err)
	}
	return aws.ToString(q.QueueUrl), aws.ToString(d.QueueUrl), nil
}

// provisionBuckets creates (or reuses) every region's bucket with versioning, sends its
// ObjectCreated events to the region's events queue, and replicates each bucket to every other.
func provisionBuckets(ctx context.Context, cfgs map[string]aws.Config, regions []string, buckets map[string]string, queues map[string][2]string) error {
	for _, r := range regions {
		c := NewS3Client(cfgs[r])
		b := buckets[r]
		in := &s3.CreateBucketInput{Bucket: aws.String(b)}
		if r != "us-east-1" {
			in.CreateBucketConfiguration = &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(r)}
		}
		_, err := c.CreateBucket(ctx, in)
		var owned *s3types.BucketAlreadyOwnedByYou
		if err != nil && !errors.As(err, &owned) {
			return fmt.Errorf("provision %s: CreateBucket %s: %w", r, b, err)
		}
		if _, err := c.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: aws.String(b),
			VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled}}); err != nil {
			return fmt.Errorf("provision %s: PutBucketVersioning %s: %w", r, b, err)
		}
		if _, err := c.PutBucketNotificationConfiguration(ctx, &s3.PutBucketNotificationConfigurationInput{Bucket: aws.String(b),
			NotificationConfiguration: &s3types.NotificationConfiguration{QueueConfigurations: []s3types.QueueConfiguration{{
				Id: aws.String(NotificationID), QueueArn: aws.String(QueueARN(r, queues[r][0])),
				Events: []s3types.Event{"s3:ObjectCreated:*"},
			}}}}); err != nil {
			return fmt.Errorf("provision %s: PutBucketNotificationConfiguration %s: %w", r, b, err)
		}
	}
	for _, r := range regions {
		var rules []s3types.ReplicationRule
		for i, d := range regions {
			if d == r {
				continue
			}
			rules = append(rules, s3types.ReplicationRule{
				ID: aws.String("to-" + d), Priority: aws.Int32(int32(i + 1)), Status: s3types.ReplicationRuleStatusEnabled,
				Filter:                  &s3types.ReplicationRuleFilter{Prefix: aws.String("")},
				DeleteMarkerReplication: &s3types.DeleteMarkerReplication{Status: s3types.DeleteMarkerReplicationStatusDisabled},
				Destination: &s3types.Destination{Bucket: aws.String(BucketARN(buckets[d])),
					// Replication Time Control, as terraform/ configures it (not emulated:
					// the stand-in's lag is `envdr local lag`).
					ReplicationTime: &s3types.ReplicationTime{Status: s3types.ReplicationTimeStatusEnabled, Time: &s3types.ReplicationTimeValue{Minutes: aws.Int32(15)}},
					Metrics:         &s3types.Metrics{Status: s3types.MetricsStatusEnabled, EventThreshold: &s3types.ReplicationTimeValue{Minutes: aws.Int32(15)}},
				},
			})
		}
		if len(rules) == 0 {
			continue
		}
		if _, err := NewS3Client(cfgs[r]).PutBucketReplication(ctx, &s3.PutBucketReplicationInput{Bucket: aws.String(buckets[r]),
			ReplicationConfiguration: &s3types.ReplicationConfiguration{
				Role: aws.String("arn:aws:iam::" + iam.Account + ":role/" + ReplicationRole), Rules: rules,
			}}); err != nil {
			return fmt.Errorf("provision %s: PutBucketReplication %s: %w", r, buckets[r], err)
		}
	}
	return nil
}

// provisionTable creates the records table (partition key id) unless it exists, and waits
// until it is ACTIVE.
func provisionTable(ctx context.Context, c *dynamodb.Client, table string) error {
	_, err := c.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            &table,
		BillingMode:          ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: ddbtypes.KeyTypeHash}},
	})
	var inUse *ddbtypes.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("CreateTable %s: %w", table, err)
	}
	for {
		out, err := c.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &table})
		if err != nil {
			return fmt.Errorf("DescribeTable %s: %w", table, err)
		}
		if out.Table.TableStatus == ddbtypes.TableStatusActive {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("table %s not ACTIVE: %w", table, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ProvisionIsolated provisions, behind stack's endpoints, the keys and a queue, DLQ and table of
// their own named with suffix: one test's or one benchmark's isolated three-region setup.
// Unless defaultKeyPolicies, the keys carry the rendered key policies.
func ProvisionIsolated(ctx context.Context, stack *Stack, suffix string, defaultKeyPolicies bool) (*Provisioned, error) {
	return ProvisionIsolatedWith(ctx, stack, suffix, ProvisionOptions{DefaultKeyPolicies: defaultKeyPolicies})
}

// ProvisionIsolatedWith is ProvisionIsolated with options (DefaultKeyPolicies, S3); names and
// endpoints are set here. Buckets are named envdr-data-REGION-HASH, HASH from suffix (bucket
// names are at most 63 characters and global).
func ProvisionIsolatedWith(ctx context.Context, stack *Stack, suffix string, o ProvisionOptions) (*Provisioned, error) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(suffix))
	return Provision(ctx, ProvisionOptions{
		S3:                 o.S3,
		BucketSuffix:       fmt.Sprintf("-%08x", h.Sum32()),
		DefaultKeyPolicies: o.DefaultKeyPolicies,
		Regions:            DefaultRegions,
		Endpoints: func(r string) config.Endpoints {
			ep, _ := stack.Endpoints(r)
			return ep
		},
		Queue: "envdr-events-" + suffix,
		DLQ:   "envdr-events-dlq-" + suffix,
		Table: "envdr-records-" + suffix,
	})
}

// DeleteProvisioned removes what Provision made for c from the shared backends: every region's
// queue and DLQ, and every replica of the table. It bypasses the regions' endpoints, which a
// test may have left down; keys stay (they live in the KMS stand-in).
func (s *Stack) DeleteProvisioned(ctx context.Context, b Backends, c *config.Config) error {
	var errs []error
	urls := []string{c.QueueURL, c.DLQURL}
	for _, r := range c.Regions {
		urls = append(urls, r.QueueURL, r.DLQURL)
	}
	done := map[string]bool{}
	for _, u := range urls {
		if u == "" || done[u] {
			continue
		}
		done[u] = true
		region := queueRegion(u)
		if region == "" {
			region = c.HomeRegion
		}
		sc := sqs.NewFromConfig(AWSConfig(region, config.Endpoints{SQS: b.SQS}, AccessKey, SecretKey))
		if _, err := sc.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(u)}); err != nil {
			errs = append(errs, fmt.Errorf("DeleteQueue %s: %w", u, err))
		}
	}
	for _, r := range s.regions {
		if _, _, err := s.global.call(ctx, r, "DeleteTable", map[string]string{"TableName": c.Table}); err != nil {
			errs = append(errs, fmt.Errorf("DeleteTable %s in %s: %w", c.Table, r, err))
		}
	}
	for _, r := range c.Regions {
		if r.Bucket != "" {
			if err := s.s3.deleteBucket(ctx, r.Bucket); err != nil {
				errs = append(errs, fmt.Errorf("delete bucket %s of %s: %w", r.Bucket, r.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}
