// Package config holds envdr's configuration: one YAML schema for real AWS and for the local
// stand-in's local/envdr.yaml, plus ENVDR_* environment overrides. Every command loads it through
// Load; validation errors name the field and the fix.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Key modes for a region.
const (
	// ModeMRK: the region holds a replica of the home region's multi-Region key; wraps are made
	// with ReEncrypt inside KMS and the DEK never leaves KMS.
	ModeMRK = "mrk"
	// ModeIndependent: the region has its own single-Region key; wraps are made by decrypting the
	// DEK once in the source region and encrypting it under this region's key.
	ModeIndependent = "independent"
)

// Verification modes of the replication policy.
const (
	VerifyAll  = "all"
	VerifyNone = "none"
	// VerifySamplePrefix starts "sample:P%": verify a random P percent of events.
	VerifySamplePrefix = "sample:"
)

// Config is the whole envdr configuration.
type Config struct {
	// HomeRegion is where producers seal (GenerateDataKey) and where the queue lives.
	HomeRegion string `yaml:"home_region" env:"HOME_REGION"`
	// QueueURL is the home region's SQS queue of replication events (the single queue of a
	// single-queue setup; with per-region queues, regions[].queue_url of the home region).
	QueueURL string `yaml:"queue_url" env:"QUEUE_URL"`
	// DLQURL is the home region's dead-letter queue that receives poison events with a reason.
	DLQURL string `yaml:"dlq_url" env:"DLQ_URL"`
	// Table is the DynamoDB (global) table of multi-wrapped records.
	Table string `yaml:"table" env:"TABLE"`
	// Regions lists every region that must be able to open envelopes on its own.
	Regions []Region `yaml:"regions" envPrefix:"REGIONS_"`
	// Policy is the replication policy: which regions must hold a verified wrap before an event
	// is acknowledged.
	Policy Policy `yaml:"policy" envPrefix:"POLICY_"`
	// Worker tunes envdr run.
	Worker Worker `yaml:"worker" envPrefix:"WORKER_"`
	// Scrub is envdr run's continuous re-verification of the table (off by default).
	Scrub Scrub `yaml:"scrub,omitempty" envPrefix:"SCRUB_"`
	// MRKWrap is how mrk regions get their wrap: reencrypt (default: ReEncrypt in the region, so
	// the wrap comes from the region's own KMS) or shared (the source wrap recorded under the
	// region's replica ARN: a multi-Region key's replicas share key material, and the region's
	// verification Decrypt proves it opens there; N KMS calls per envelope instead of 2N-1).
	MRKWrap string `yaml:"mrk_wrap,omitempty" env:"MRK_WRAP"`
	// SealRegions is the order in which seal tries regions for a data key (GenerateDataKey),
	// falling over to the next when one is unreachable, silent or failing; default: home_region,
	// then the other regions in the order listed.
	SealRegions []string `yaml:"seal_regions,omitempty" env:"SEAL_REGIONS"`
	// EnqueueCopies is how many regions' queues seal --enqueue sends each event to: the sealing
	// region's, then the next ones in seal order, so the event survives the sealing region's
	// loss. Default 2 when the sealing region uses a multi-Region key (any replica region can
	// then wrap and verify on its own), 1 in independent mode (only the source key can unwrap).
	EnqueueCopies int `yaml:"enqueue_copies,omitempty" env:"ENQUEUE_COPIES"`
	// EnqueueCopyDelay delays the extra copies, so that normally the sealing region's daemon
	// has replicated the envelope before a copy is seen and the copy costs no KMS call
	// (default 2s; at most 15m, SQS's limit).
	EnqueueCopyDelay time.Duration `yaml:"enqueue_copy_delay,omitempty" env:"ENQUEUE_COPY_DELAY"`
	// TrustedKeys lists further KMS keys (key or alias ARNs) that open, verify, drill, rewrap and
	// the daemon may unwrap with, besides each region's key (a multi-Region key's replicas are
	// trusted with it). Every unwrap is refused, before any KMS call, under a key that is none of
	// these; the envelope header and the record are not authenticated before the unwrap.
	TrustedKeys []string `yaml:"trusted_keys,omitempty" env:"TRUSTED_KEYS"`
	// Local describes the local stand-in when this config was written by `envdr local`; empty
	// for real AWS.
	Local *Local `yaml:"local,omitempty" env:"-"`
}

// Region is one region and its key.
type Region struct {
	// Name is the AWS region name, e.g. eu-west-1.
	Name string `yaml:"name" env:"NAME"`
	// Key is the KMS key ARN or alias ARN used in this region.
	Key string `yaml:"key" env:"KEY"`
	// Mode is mrk or independent.
	Mode string `yaml:"mode" env:"MODE"`
	// PreviousKeys are this region's earlier keys (key or alias ARNs in the region): events and
	// wraps under them are still accepted (unwrapped) while rewrap moves the records to Key.
	PreviousKeys []string `yaml:"previous_keys,omitempty" env:"PREVIOUS_KEYS"`
	// KMSRate is this daemon's share of the region's KMS request quota, requests per second.
	KMSRate float64 `yaml:"kms_rate" env:"KMS_RATE"`
	// QueueURL is this region's SQS queue of replication events, DLQURL its dead-letter queue;
	// empty when the region has no queue of its own (a single-queue setup uses the top-level
	// queue_url and dlq_url, the home region's).
	QueueURL string `yaml:"queue_url,omitempty" env:"QUEUE_URL"`
	DLQURL   string `yaml:"dlq_url,omitempty" env:"DLQ_URL"`
	// Bucket is this region's S3 bucket of sealed envelopes (the S3 data path): the bucket
	// producers write to when this region seals, and this region's replica of the others'
	// objects (S3 Cross-Region Replication). Empty when the region has no data path.
	Bucket string `yaml:"bucket,omitempty" env:"BUCKET"`
	// Endpoints overrides the AWS endpoints (the local stand-in); empty means the AWS defaults.
	Endpoints Endpoints `yaml:"endpoints,omitempty" envPrefix:"ENDPOINTS_"`
}

// Endpoints are per-service endpoint overrides for one region.
type Endpoints struct {
	KMS      string `yaml:"kms,omitempty" env:"KMS"`
	SQS      string `yaml:"sqs,omitempty" env:"SQS"`
	DynamoDB string `yaml:"dynamodb,omitempty" env:"DYNAMODB"`
	// STS answers GetCallerIdentity (the caller recorded in drill reports); the stand-in serves
	// it on the region's KMS port.
	STS string `yaml:"sts,omitempty" env:"STS"`
	// S3 is the region's S3 endpoint (the stand-in serves it path-style).
	S3 string `yaml:"s3,omitempty" env:"S3"`
}

// Policy is the replication policy.
type Policy struct {
	// Required regions must each hold a wrap (and a verification, unless verify is none).
	Required []string `yaml:"required" env:"REQUIRED"`
	// Quorum, when > 0, also accepts any Quorum regions of Regions instead of all of Required.
	Quorum int `yaml:"quorum,omitempty" env:"QUORUM"`
	// Verify is all, none or sample:P% (e.g. sample:10%).
	Verify string `yaml:"verify" env:"VERIFY"`
}

// Worker tunes the daemon.
type Worker struct {
	// Concurrency is the number of events worked on at once.
	Concurrency int `yaml:"concurrency" env:"CONCURRENCY"`
	// Visibility is the SQS visibility timeout the worker keeps extending while it works.
	Visibility time.Duration `yaml:"visibility" env:"VISIBILITY"`
	// Grace is how long SIGTERM waits for in-flight work before cancelling it.
	Grace time.Duration `yaml:"grace" env:"GRACE"`
	// Attempts is how many tries one KMS or DynamoDB call gets within one delivery.
	Attempts int `yaml:"attempts" env:"ATTEMPTS"`
	// MaxAge ends retries: an event still not replicated this long after it was first sent goes
	// to the DLQ with reason expired. Must be below the queue's retention (SQS: at most 14 days).
	MaxAge time.Duration `yaml:"max_age" env:"MAX_AGE"`
	// KMSTimeout bounds each attempt of a KMS call; DynamoDBTimeout each attempt of a DynamoDB
	// call. An attempt without an answer in time counts as the region being unreachable (a
	// blackholed or browned-out region is deferred like a lost one).
	KMSTimeout      time.Duration `yaml:"kms_timeout,omitempty" env:"KMS_TIMEOUT"`
	DynamoDBTimeout time.Duration `yaml:"dynamodb_timeout,omitempty" env:"DYNAMODB_TIMEOUT"`
	// SQSTimeout bounds each SQS call (send, delete, change visibility); a receive gets the
	// long-poll wait on top.
	SQSTimeout time.Duration `yaml:"sqs_timeout,omitempty" env:"SQS_TIMEOUT"`
}

// Scrub is the continuous scrubber of envdr run: each region's daemons re-verify that region's
// wraps, the oldest verification first, spending at most Budget of the region's KMS rate, so
// the whole table is verified again every Period (docs/OPERATIONS.md).
type Scrub struct {
	// Budget is the share of the region's KMS rate (kms_rate, as the limiter finds it) the
	// scrubber may spend: "5%" (or a fraction, 0.05); "" or "0%": off.
	Budget string `yaml:"budget,omitempty" env:"BUDGET"`
	// Period is how often every record should be verified again: "7d", "36h", "90m"
	// (default 7d).
	Period string `yaml:"period,omitempty" env:"PERIOD"`
}

// BudgetFraction is Budget as a fraction in [0, 1) (0: off).
func (s Scrub) BudgetFraction() (float64, error) {
	t := strings.TrimSpace(s.Budget)
	if t == "" {
		return 0, nil
	}
	pct := strings.HasSuffix(t, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(t, "%"), 64)
	if err != nil {
		return 0, fmt.Errorf("%q; use a share such as 5%% (or 0.05)", s.Budget)
	}
	if pct {
		v /= 100
	}
	if v < 0 || v > 0.5 {
		return 0, fmt.Errorf("%q; use 0%% (off) up to 50%% of the region's KMS rate", s.Budget)
	}
	return v, nil
}

// PeriodDuration is Period parsed (Go durations, plus whole days "7d"); default 7 days.
func (s Scrub) PeriodDuration() (time.Duration, error) {
	t := strings.TrimSpace(s.Period)
	if t == "" {
		return DefaultScrubPeriod, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(t, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, fmt.Errorf("%q; use a duration such as 7d, 36h or 90m", s.Period)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(t); err != nil {
			return 0, fmt.Errorf("%q; use a duration such as 7d, 36h or 90m", s.Period)
		}
	}
	if d < time.Minute || d > 365*24*time.Hour {
		return 0, fmt.Errorf("%q; use 1m up to 365d", s.Period)
	}
	return d, nil
}

// DefaultScrubPeriod is scrub.period's default.
const DefaultScrubPeriod = 7 * 24 * time.Hour

// DefaultMaxAge is worker.max_age's default: 3 days (SQS's default retention is 4).
const DefaultMaxAge = 72 * time.Hour

// maxSQSRetention is SQS's longest message retention.
const maxSQSRetention = 14 * 24 * time.Hour

// Default per-call timeouts of the worker (see Worker).
const (
	DefaultKMSTimeout      = 5 * time.Second
	DefaultDynamoDBTimeout = 5 * time.Second
	DefaultSQSTimeout      = 10 * time.Second
)

// Local describes the stand-in that wrote this config.
type Local struct {
	// Admin is the base URL of the stand-in's admin endpoint (region down/up, KMS counters).
	Admin string `yaml:"admin"`
	// AccessKey and SecretKey are the fixed fake credentials the stand-in accepts.
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
}

// Load reads a YAML config file, applies ENVDR_* overrides, fills defaults and validates.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	var ce *Error
	if errors.As(err, &ce) {
		ce.File = path
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes YAML (unknown fields are errors), applies environment overrides and defaults,
// and validates. Its errors are an *Error listing every problem, one per line.
func Parse(b []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, decodeError(nil, err)
	}
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, decodeError(&doc, err)
	}
	if err := c.applyEnv(os.Environ()); err != nil {
		return nil, &Error{Problems: problems(err)}
	}
	c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, &Error{Problems: problems(err)}
	}
	return &c, nil
}

// WithDefaults fills zero fields with their defaults.
func (c *Config) WithDefaults() {
	for i := range c.Regions {
		if c.Regions[i].Mode == "" {
			c.Regions[i].Mode = ModeMRK
		}
		if c.Regions[i].KMSRate == 0 {
			c.Regions[i].KMSRate = 1000
		}
	}
	if len(c.Policy.Required) == 0 && c.Policy.Quorum == 0 {
		for _, r := range c.Regions {
			c.Policy.Required = append(c.Policy.Required, r.Name)
		}
	}
	if c.Policy.Verify == "" {
		c.Policy.Verify = VerifyAll
	}
	if c.Worker.Concurrency == 0 {
		c.Worker.Concurrency = 64
	}
	if c.Worker.Visibility == 0 {
		c.Worker.Visibility = 60 * time.Second
	}
	if c.Worker.Grace == 0 {
		c.Worker.Grace = 30 * time.Second
	}
	if c.Worker.Attempts == 0 {
		c.Worker.Attempts = 5
	}
	if c.EnqueueCopyDelay == 0 {
		c.EnqueueCopyDelay = DefaultEnqueueCopyDelay
	}
	if c.Worker.MaxAge == 0 {
		c.Worker.MaxAge = DefaultMaxAge
	}
	if c.Worker.KMSTimeout == 0 {
		c.Worker.KMSTimeout = DefaultKMSTimeout
	}
	if c.Worker.DynamoDBTimeout == 0 {
		c.Worker.DynamoDBTimeout = DefaultDynamoDBTimeout
	}
	if c.Worker.SQSTimeout == 0 {
		c.Worker.SQSTimeout = DefaultSQSTimeout
	}
}

// Validate checks the config; each error names the field and the fix.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if c.HomeRegion == "" {
		bad("home_region", "missing; set it to the region where producers seal, e.g. us-east-1")
	}
	if c.Table == "" {
		bad("table", "missing; set it to the DynamoDB records table name")
	}
	if len(c.Regions) == 0 {
		bad("regions", "empty; list every region that must open envelopes on its own")
	}
	seen := map[string]bool{}
	home := false
	for i, r := range c.Regions {
		f := fmt.Sprintf("regions[%d]", i)
		if r.Name == "" {
			bad(f+".name", "missing; set the AWS region name")
		} else if seen[r.Name] {
			bad(f+".name", "%q listed twice; list each region once", r.Name)
		}
		seen[r.Name] = true
		if r.Name == c.HomeRegion {
			home = true
		}
		if r.Key == "" {
			bad(f+".key", "missing for region %s; set the KMS key ARN or alias ARN", r.Name)
		} else if kr := ARNRegion(r.Key); kr == "" {
			bad(f+".key", "%q is not a KMS key or alias ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)", r.Key)
		} else if kr != r.Name {
			bad(f+".key", "%q is in region %s, not %s; use the key (or replica) in %s", r.Key, kr, r.Name, r.Name)
		}
		seenPrev := map[string]bool{}
		for j, k := range r.PreviousKeys {
			pf := fmt.Sprintf("%s.previous_keys[%d]", f, j)
			switch kr := ARNRegion(k); {
			case kr == "":
				bad(pf, "%q is not a KMS key or alias ARN", k)
			case kr != r.Name:
				bad(pf, "%q is in region %s, not %s; list only keys of %s", k, kr, r.Name, r.Name)
			case k == r.Key:
				bad(pf, "%q is the region's current key; list only earlier keys", k)
			case seenPrev[k]:
				bad(pf, "%q listed twice; list each key once", k)
			}
			seenPrev[k] = true
		}
		if r.Mode != ModeMRK && r.Mode != ModeIndependent {
			bad(f+".mode", "%q for region %s; use mrk or independent", r.Mode, r.Name)
		}
		if r.KMSRate < 0 {
			bad(f+".kms_rate", "%v for region %s; use a positive requests-per-second share", r.KMSRate, r.Name)
		}
	}
	seenTrusted := map[string]bool{}
	for i, k := range c.TrustedKeys {
		f := fmt.Sprintf("trusted_keys[%d]", i)
		kr := ARNRegion(k)
		switch {
		case kr == "":
			bad(f, "%q is not a KMS key or alias ARN (arn:aws:kms:REGION:ACCOUNT:key/ID or alias/NAME)", k)
		case !seen[kr]:
			bad(f, "%q is in region %s, which is not among regions; remove it or add the region", k, kr)
		case seenTrusted[k]:
			bad(f, "%q listed twice; list each key once", k)
		}
		seenTrusted[k] = true
	}
	if c.HomeRegion != "" && len(c.Regions) > 0 && !home {
		bad("home_region", "%q is not among regions; add it to regions", c.HomeRegion)
	}
	for _, r := range c.Policy.Required {
		if !seen[r] {
			bad("policy.required", "%q is not among regions; add it to regions or remove it", r)
		}
	}
	if c.Policy.Quorum < 0 || c.Policy.Quorum > len(c.Regions) {
		bad("policy.quorum", "%d; use 0 (all required) up to the number of regions (%d)", c.Policy.Quorum, len(c.Regions))
	}
	if _, err := c.Policy.SamplePercent(); err != nil {
		bad("policy.verify", "%v", err)
	}
	if c.Worker.Concurrency < 1 {
		bad("worker.concurrency", "%d; use 1 or more", c.Worker.Concurrency)
	}
	if c.Worker.Visibility < time.Second {
		bad("worker.visibility", "%s; use 1s or more (SQS counts whole seconds; 60s is the default)", c.Worker.Visibility)
	}
	if c.Worker.MaxAge < time.Minute || c.Worker.MaxAge >= maxSQSRetention {
		bad("worker.max_age", "%s; use 1m up to below 14 days (SQS's longest retention), and below your queue's retention (default 72h)", c.Worker.MaxAge)
	}
	if c.Worker.Attempts < 1 {
		bad("worker.attempts", "%d; use 1 or more", c.Worker.Attempts)
	}
	if c.MRKWrap != "" && c.MRKWrap != MRKWrapReEncrypt && c.MRKWrap != MRKWrapShared {
		bad("mrk_wrap", "%q; use reencrypt (the default) or shared", c.MRKWrap)
	}
	if _, err := c.Scrub.BudgetFraction(); err != nil {
		bad("scrub.budget", "%v", err)
	}
	if _, err := c.Scrub.PeriodDuration(); err != nil {
		bad("scrub.period", "%v", err)
	}
	if c.MRKWrap == MRKWrapShared && c.Policy.Verify != VerifyAll {
		// shared records the source wrap's bytes as each region's wrap; only the region's own
		// verification Decrypt proves them there, so acking unverified would ack unchecked bytes.
		bad("mrk_wrap", "shared needs policy.verify: all (each region's Decrypt is what proves the shared wrap opens there); it is %q", c.Policy.Verify)
	}
	sealSeen := map[string]bool{}
	for i, r := range c.SealRegions {
		if !seen[r] {
			bad(fmt.Sprintf("seal_regions[%d]", i), "%q is not among regions; add it to regions or remove it", r)
		} else if sealSeen[r] {
			bad(fmt.Sprintf("seal_regions[%d]", i), "%q listed twice; list each region once", r)
		}
		sealSeen[r] = true
	}
	if c.EnqueueCopies < 0 || c.EnqueueCopies > len(c.Regions) {
		bad("enqueue_copies", "%d; use 1 up to the number of regions (%d), or leave it out for the default", c.EnqueueCopies, len(c.Regions))
	}
	if c.EnqueueCopyDelay < 0 || c.EnqueueCopyDelay > 15*time.Minute {
		bad("enqueue_copy_delay", "%s; use 0 to 15m (SQS's longest message delay)", c.EnqueueCopyDelay)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"worker.kms_timeout", c.Worker.KMSTimeout}, {"worker.dynamodb_timeout", c.Worker.DynamoDBTimeout}, {"worker.sqs_timeout", c.Worker.SQSTimeout}} {
		if d.v < 0 || (d.v > 0 && d.v < 100*time.Millisecond) {
			bad(d.field, "%s; use a duration of 100ms or more (default: KMS and DynamoDB 5s, SQS 10s)", d.v)
		}
	}
	return errors.Join(errs...)
}

// Values of mrk_wrap.
const (
	MRKWrapReEncrypt = "reencrypt"
	MRKWrapShared    = "shared"
)

// DefaultEnqueueCopyDelay is enqueue_copy_delay's default.
const DefaultEnqueueCopyDelay = 2 * time.Second

// SealOrder is the order in which seal tries regions: seal_regions, else home_region and then
// the other regions as listed.
func (c *Config) SealOrder() []string {
	if len(c.SealRegions) > 0 {
		return append([]string(nil), c.SealRegions...)
	}
	out := []string{c.HomeRegion}
	for _, r := range c.Regions {
		if r.Name != c.HomeRegion {
			out = append(out, r.Name)
		}
	}
	return out
}

// Copies is how many queues an event sealed in region goes to (enqueue_copies, or its default
// for the region's key mode), never more than the regions that have a queue.
func (c *Config) Copies(region string) int {
	n := c.EnqueueCopies
	if n == 0 {
		n = 1
		if r, ok := c.Region(region); ok && r.Mode == ModeMRK {
			n = 2
		}
	}
	return n
}

// Queues returns a region's events queue and DLQ: regions[].queue_url and dlq_url, else, for
// the home region of a single-queue setup, the top-level queue_url and dlq_url. Both are empty
// when the region has no queue.
func (c *Config) Queues(region string) (queueURL, dlqURL string) {
	if r, ok := c.Region(region); ok && r.QueueURL != "" {
		return r.QueueURL, r.DLQURL
	}
	if region == c.HomeRegion {
		return c.QueueURL, c.DLQURL
	}
	return "", ""
}

// SamplePercent returns the share of events to verify, 0..100.
func (p Policy) SamplePercent() (float64, error) {
	switch {
	case p.Verify == VerifyAll || p.Verify == "":
		return 100, nil
	case p.Verify == VerifyNone:
		return 0, nil
	case strings.HasPrefix(p.Verify, VerifySamplePrefix) && strings.HasSuffix(p.Verify, "%"):
		s := strings.TrimSuffix(strings.TrimPrefix(p.Verify, VerifySamplePrefix), "%")
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v < 0 || v > 100 {
			return 0, fmt.Errorf("%q: the sample must be 0%% to 100%%, e.g. sample:10%%", p.Verify)
		}
		return v, nil
	}
	return 0, fmt.Errorf("%q; use all, none or sample:P%% (e.g. sample:10%%)", p.Verify)
}

// Region returns the named region's config.
func (c *Config) Region(name string) (Region, bool) {
	for _, r := range c.Regions {
		if r.Name == name {
			return r, true
		}
	}
	return Region{}, false
}

// RegionNames lists the configured regions in order.
func (c *Config) RegionNames() []string {
	out := make([]string, len(c.Regions))
	for i, r := range c.Regions {
		out[i] = r.Name
	}
	return out
}

// ARNRegion returns the region field of a KMS key or alias ARN, or "" if s is not one.
func ARNRegion(s string) string {
	p := strings.SplitN(s, ":", 6)
	if len(p) != 6 || p[0] != "arn" || p[2] != "kms" || p[3] == "" {
		return ""
	}
	if !strings.HasPrefix(p[5], "key/") && !strings.HasPrefix(p[5], "alias/") {
		return ""
	}
	return p[3]
}

// ARNAccount returns the account field of an ARN, or "".
func ARNAccount(s string) string {
	p := strings.SplitN(s, ":", 6)
	if len(p) != 6 {
		return ""
	}
	return p[4]
}
