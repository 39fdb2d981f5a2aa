// Package config holds envdr's configuration: one YAML schema for real AWS and for the local
// stand-in's local/envdr.yaml, plus ENVDR_* environment overrides. Every command loads it through
// Load; validation errors name the field and the fix.
package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
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
	HomeRegion string `yaml:"home_region"`
	// QueueURL is the SQS queue of replication events.
	QueueURL string `yaml:"queue_url"`
	// DLQURL is the dead-letter queue that receives poison events with a reason.
	DLQURL string `yaml:"dlq_url"`
	// Table is the DynamoDB (global) table of multi-wrapped records.
	Table string `yaml:"table"`
	// Regions lists every region that must be able to open envelopes on its own.
	Regions []Region `yaml:"regions"`
	// Policy is the replication policy: which regions must hold a verified wrap before an event
	// is acknowledged.
	Policy Policy `yaml:"policy"`
	// Worker tunes envdr run.
	Worker Worker `yaml:"worker"`
	// Local describes the local stand-in when this config was written by `envdr local`; empty
	// for real AWS.
	Local *Local `yaml:"local,omitempty"`
}

// Region is one region and its key.
type Region struct {
	// Name is the AWS region name, e.g. eu-west-1.
	Name string `yaml:"name"`
	// Key is the KMS key ARN or alias ARN used in this region.
	Key string `yaml:"key"`
	// Mode is mrk or independent.
	Mode string `yaml:"mode"`
	// KMSRate is this daemon's share of the region's KMS request quota, requests per second.
	KMSRate float64 `yaml:"kms_rate"`
	// Endpoints overrides the AWS endpoints (the local stand-in); empty means the AWS defaults.
	Endpoints Endpoints `yaml:"endpoints,omitempty"`
}

// Endpoints are per-service endpoint overrides for one region.
type Endpoints struct {
	KMS      string `yaml:"kms,omitempty"`
	SQS      string `yaml:"sqs,omitempty"`
	DynamoDB string `yaml:"dynamodb,omitempty"`
}

// Policy is the replication policy.
type Policy struct {
	// Required regions must each hold a wrap (and a verification, unless verify is none).
	Required []string `yaml:"required"`
	// Quorum, when > 0, also accepts any Quorum regions of Regions instead of all of Required.
	Quorum int `yaml:"quorum,omitempty"`
	// Verify is all, none or sample:P% (e.g. sample:10%).
	Verify string `yaml:"verify"`
}

// Worker tunes the daemon.
type Worker struct {
	// Concurrency is the number of events worked on at once.
	Concurrency int `yaml:"concurrency"`
	// Visibility is the SQS visibility timeout the worker keeps extending while it works.
	Visibility time.Duration `yaml:"visibility"`
	// Grace is how long SIGTERM waits for in-flight work before cancelling it.
	Grace time.Duration `yaml:"grace"`
	// Attempts is how many tries one KMS or DynamoDB call gets within one delivery.
	Attempts int `yaml:"attempts"`
	// KMSTimeout bounds each attempt of a KMS call; DynamoDBTimeout each attempt of a DynamoDB
	// call. An attempt without an answer in time counts as the region being unreachable (a
	// blackholed or browned-out region is deferred like a lost one).
	KMSTimeout      time.Duration `yaml:"kms_timeout,omitempty"`
	DynamoDBTimeout time.Duration `yaml:"dynamodb_timeout,omitempty"`
	// SQSTimeout bounds each SQS call (send, delete, change visibility); a receive gets the
	// long-poll wait on top.
	SQSTimeout time.Duration `yaml:"sqs_timeout,omitempty"`
}

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
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML (unknown fields are errors), applies environment overrides and defaults,
// and validates.
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if err := c.applyEnv(os.LookupEnv); err != nil {
		return nil, err
	}
	c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// applyEnv applies the documented ENVDR_* overrides.
func (c *Config) applyEnv(lookup func(string) (string, bool)) error {
	str := map[string]*string{
		"ENVDR_HOME_REGION": &c.HomeRegion,
		"ENVDR_QUEUE_URL":   &c.QueueURL,
		"ENVDR_DLQ_URL":     &c.DLQURL,
		"ENVDR_TABLE":       &c.Table,
		"ENVDR_VERIFY":      &c.Policy.Verify,
	}
	for k, p := range str {
		if v, ok := lookup(k); ok {
			*p = v
		}
	}
	if v, ok := lookup("ENVDR_REQUIRED"); ok {
		c.Policy.Required = splitList(v)
	}
	if v, ok := lookup("ENVDR_CONCURRENCY"); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("ENVDR_CONCURRENCY=%q: want a whole number", v)
		}
		c.Worker.Concurrency = n
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
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
		c.Worker.Concurrency = 16
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
		if r.Mode != ModeMRK && r.Mode != ModeIndependent {
			bad(f+".mode", "%q for region %s; use mrk or independent", r.Mode, r.Name)
		}
		if r.KMSRate < 0 {
			bad(f+".kms_rate", "%v for region %s; use a positive requests-per-second share", r.KMSRate, r.Name)
		}
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
	if c.Worker.Attempts < 1 {
		bad("worker.attempts", "%d; use 1 or more", c.Worker.Attempts)
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
