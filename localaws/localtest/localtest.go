// Package localtest gives each test its own three-region AWS stand-in: a fresh in-memory KMS
// stand-in and per-region endpoints on ephemeral ports, in front of the shared SQS and DynamoDB
// backends that `make local-up` starts, with its own keys, queue, DLQ and table. Tests can run in
// parallel and lose regions without disturbing each other.
//
//	env := localtest.New(t)
//	cfg := env.Config                 // ready for every envdr package
//	env.Down("eu-west-1")             // eu-west-1 refuses connections
//	kc := kms.NewFromConfig(env.AWSConfig("eu-west-1"))
package localtest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/kms"
)

var _ localaws.KMSHooks = (*kms.Service)(nil)

// EnvRequire makes a missing stand-in fatal instead of a skip (make test sets it).
const EnvRequire = "ENVDR_REQUIRE_LOCAL"

// EnvLag sets every Env's replication lag (default localaws.DefaultReplicationLag), e.g.
// ENVDR_LOCAL_LAG=1s for the lag sweep (make test-lag).
const EnvLag = "ENVDR_LOCAL_LAG"

// EnvJitter sets every Env's replication jitter (default 0): each item replicates after the lag
// plus a random delay in [0, jitter] of its own, so a transaction's items arrive apart and in
// any order. ENVDR_LOCAL_JITTER=500ms in the lag sweep (make test-lag).
const EnvJitter = "ENVDR_LOCAL_JITTER"

// EnvSeed fixes the seed of every Env's jitter (default: random, logged by each test), to
// replay a failing run's replication schedule.
const EnvSeed = "ENVDR_LOCAL_SEED"

// Env is one test's three-region stand-in.
type Env struct {
	// Config is a validated config for this Env: home us-east-1, mrk mode on the multi-Region
	// key's ARNs, this Env's endpoints, queue, DLQ and table.
	Config *config.Config
	// Regions, home first.
	Regions []string
	// Keys per region: the multi-Region key (primary or replica) and the independent key.
	Keys map[string]localaws.RegionKeys
	// KMS is the in-process KMS stand-in behind this Env's KMS endpoints.
	KMS *kms.Service
	// Stack is the set of per-region endpoints.
	Stack *localaws.Stack
	// Backends are the shared emulators behind the stack.
	Backends localaws.Backends
	// Admin is this Env's admin endpoint URL (also Config.Local.Admin), for code and CLI tests
	// that lose regions the way `envdr local down` does.
	Admin string
	// ConfigPath is Config written as YAML, for --config in CLI tests.
	ConfigPath string
	// IAM holds the identities (profiles envdr-admin, -daemon, -producer, -operator, -rewrap,
	// -nobody) and their identity policies, `envdr policy render`'s for Config to begin with;
	// IAM.SetPolicy replaces one (as PUT /iam/roles/{role}/policy does).
	IAM *iam.IAM
	// CredentialsPath is the AWS shared-credentials file with a profile per role, for
	// AWS_SHARED_CREDENTIALS_FILE in CLI tests.
	CredentialsPath string

	t testing.TB
}

// Options tune NewWith.
type Options struct {
	// ExtraRegions are served too (their own KMS, SQS and DynamoDB endpoints, and a replica of
	// every table) but are not in Config: a region a test adds later (a backfill).
	ExtraRegions []string
	// DefaultKeyPolicies leaves the keys with KMS's default key policy (the account root,
	// delegating every action to IAM, so the admin may use them) instead of the key policies
	// `envdr policy render` generates, which every Env's keys carry otherwise. Only for a test
	// whose subject is not authorization and which cannot yet run each call as the role that
	// makes it.
	DefaultKeyPolicies bool
	// Jitter is the replication jitter between every pair of regions; 0: ENVDR_LOCAL_JITTER's,
	// or none.
	Jitter time.Duration
	// Seed seeds the jitter's random source; 0: ENVDR_LOCAL_SEED's, or a random seed. The seed
	// used is logged when there is jitter.
	Seed uint64
	// ClockSkew offsets regions' write clocks (last writer wins compares their times).
	ClockSkew map[string]time.Duration
	// S3 provisions the data path too: a versioned bucket per region (Config.Regions[].Bucket,
	// envdr-data-REGION-HASH) whose ObjectCreated events go to the region's events queue, each
	// replicating to every other region's. Setting the notifications puts one s3:TestEvent in
	// each region's queue, as S3 does. Off by default, so other tests' queues hold only theirs.
	S3 bool
}

// New starts an Env and registers its teardown with t.Cleanup. Without running backends it
// fails the test when ENVDR_REQUIRE_LOCAL=1 and skips it otherwise.
func New(t testing.TB) *Env { t.Helper(); return NewWith(t, Options{}) }

// NewWith is New with options.
func NewWith(t testing.TB, o Options) *Env {
	t.Helper()
	b := RequireBackends(t)
	served := append(append([]string(nil), localaws.DefaultRegions...), o.ExtraRegions...)
	m := iam.New()
	// Replicas are Creating and UpdatePrimaryRegion's keys Updating for a short while only,
	// so tests stay fast (kms.Options; `envdr local serve` keeps AWS-like defaults).
	svc, err := kms.NewService(kms.Options{Regions: served, Authorizer: m,
		ReplicaCreating: 100 * time.Millisecond, Updating: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("localtest: KMS stand-in: %v", err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	stack, err := localaws.NewStack(localaws.StackOptions{Regions: served, KMS: svc.Handler, Backends: b, IAM: m})
	if err != nil {
		t.Fatalf("localtest: %v", err)
	}
	t.Cleanup(func() { _ = stack.Close() })

	suffix := uniqueSuffix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prov, err := localaws.ProvisionIsolatedWith(ctx, stack, suffix, localaws.ProvisionOptions{DefaultKeyPolicies: o.DefaultKeyPolicies, S3: o.S3})
	if err != nil {
		t.Fatalf("localtest: provision: %v", err)
	}
	if v := os.Getenv(EnvLag); v != "" {
		lag, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("localtest: %s=%q: %v", EnvLag, v, err)
		}
		if err := stack.GlobalTables().SetLag("", "", lag); err != nil {
			t.Fatalf("localtest: %v", err)
		}
	}
	setSchedule(t, stack.GlobalTables(), o)
	if err := localaws.LoadRenderedPolicies(m, prov.Config); err != nil {
		t.Fatalf("localtest: %v", err)
	}
	e := &Env{
		IAM:      m,
		Config:   prov.Config,
		Regions:  append([]string(nil), localaws.DefaultRegions...),
		Keys:     prov.Keys,
		KMS:      svc,
		Stack:    stack,
		Backends: b,
		t:        t,
	}
	t.Cleanup(e.deleteResources)

	admin := &localaws.Admin{Stack: stack, KMS: svc, IAM: m}
	admin.SetReady()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("localtest: admin endpoint: %v", err)
	}
	srv := &http.Server{Handler: admin.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	e.Admin = "http://" + ln.Addr().String()
	e.Config.Local.Admin = e.Admin

	dir := t.TempDir()
	e.CredentialsPath = filepath.Join(dir, localaws.CredentialsFile)
	if err := m.WriteCredentials(e.CredentialsPath); err != nil {
		t.Fatalf("localtest: %v", err)
	}
	e.ConfigPath = filepath.Join(dir, localaws.ConfigFile)
	if err := localaws.WriteConfig(e.ConfigPath, e.Config); err != nil {
		t.Fatalf("localtest: %v", err)
	}
	return e
}

// setSchedule applies o's (or the environment's) jitter, seed and clock skew.
func setSchedule(t testing.TB, g *localaws.GlobalTables, o Options) {
	t.Helper()
	jitter, seed := o.Jitter, o.Seed
	if v := os.Getenv(EnvJitter); jitter == 0 && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			t.Fatalf("localtest: %s=%q: want a duration >= 0", EnvJitter, v)
		}
		jitter = d
	}
	if v := os.Getenv(EnvSeed); seed == 0 && v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("localtest: %s=%q: want an unsigned integer", EnvSeed, v)
		}
		seed = n
	}
	if seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	g.SetSeed(seed)
	if err := g.SetJitter("", "", jitter); err != nil {
		t.Fatalf("localtest: %v", err)
	}
	if jitter > 0 {
		t.Logf("localtest: replication jitter %s, seed %d (replay with %s=%d)", jitter, seed, EnvSeed, seed)
	}
	for r, d := range o.ClockSkew {
		if err := g.SetSkew(r, d); err != nil {
			t.Fatalf("localtest: clock skew: %v", err)
		}
	}
}

// ToolsDir is the .tools/localaws above the working directory, where `make local-up` installs
// the stand-in's pinned tools (Node with fauxqs's node_modules, DynamoDB Local).
func ToolsDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, ".tools", "localaws")
		if _, err := os.Stat(filepath.Join(p, "paths.json")); err == nil {
			return p
		}
		if filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir)
	}
	// The tools come with make local-up, as the backends do.
	RequireBackends(t)
	t.Fatal("backends are running but .tools/localaws is not above the working directory")
	return ""
}

// RequireBackends returns the shared backends that `make local-up` started. Without them it
// fails the test when ENVDR_REQUIRE_LOCAL=1 and skips it otherwise.
func RequireBackends(t testing.TB) localaws.Backends {
	t.Helper()
	b, err := localaws.FindBackends()
	if err != nil {
		msg := "local AWS stand-in backends not running (run make local-up): " + err.Error()
		if os.Getenv(EnvRequire) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return b
}

// deleteResources removes the queues, DLQs and table replicas from the shared backends,
// bypassing the per-region endpoints (which the test may have left down).
func (e *Env) deleteResources() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.Stack.DeleteProvisioned(ctx, e.Backends, e.Config); err != nil {
		e.t.Logf("localtest: cleanup: %v", err)
	}
}

// uniqueSuffix names this test's resources: readable (from the test name) and unique.
func uniqueSuffix(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '-'
	}, t.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	return strings.Trim(name, "-") + "-" + hex.EncodeToString(b[:])
}

// Queues returns a region's events queue and DLQ URLs.
func (e *Env) Queues(region string) (queueURL, dlqURL string) {
	e.t.Helper()
	r, ok := e.Config.Region(region)
	if !ok {
		e.t.Fatalf("localtest: unknown region %q", region)
	}
	return r.QueueURL, r.DLQURL
}

// SetLag sets the global tables' replication lag between every pair of regions.
func (e *Env) SetLag(d time.Duration) {
	e.t.Helper()
	if err := e.Stack.GlobalTables().SetLag("", "", d); err != nil {
		e.t.Fatalf("localtest: %v", err)
	}
}

// SetJitter sets the global tables' replication jitter between every pair of regions: each
// item then waits the lag plus a random delay in [0, d].
func (e *Env) SetJitter(d time.Duration) {
	e.t.Helper()
	if err := e.Stack.GlobalTables().SetJitter("", "", d); err != nil {
		e.t.Fatalf("localtest: %v", err)
	}
}

// SetSkew offsets region's write clock by d (negative: behind) for last writer wins.
func (e *Env) SetSkew(region string, d time.Duration) {
	e.t.Helper()
	if err := e.Stack.GlobalTables().SetSkew(region, d); err != nil {
		e.t.Fatalf("localtest: %v", err)
	}
}

// Settle waits until every replication direction (global tables and S3) has applied what was
// written so far (a region that is down keeps its changes pending: Settle then fails the test
// after 30 s).
func (e *Env) Settle() {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pending := e.Stack.S3().Pending()
		for _, p := range e.Stack.GlobalTables().Stats() {
			pending += p.Pending
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("localtest: %d replicated changes still pending after 30s", pending)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SettleIfUp is Settle when every region is up; with a region down (its changes stay pending
// until it returns) it returns at once.
func (e *Env) SettleIfUp() {
	e.t.Helper()
	for _, r := range e.Stack.Regions() {
		if !e.Stack.IsUp(r) {
			return
		}
	}
	e.Settle()
}

// Down loses a region: its KMS, SQS, DynamoDB and S3 endpoints refuse connections.
func (e *Env) Down(region string) {
	e.t.Helper()
	if err := e.Stack.Down(region); err != nil {
		e.t.Fatalf("localtest: %v", err)
	}
}

// Up restores a region on the same ports.
func (e *Env) Up(region string) {
	e.t.Helper()
	if err := e.Stack.Up(region); err != nil {
		e.t.Fatalf("localtest: %v", err)
	}
}

// Counters returns this Env's KMS calls, region -> operation -> calls.
func (e *Env) Counters() map[string]map[string]int64 { return e.KMS.Counters() }

// ResetCounters zeroes the KMS call counters (provisioning's calls are counted too).
func (e *Env) ResetCounters() { e.KMS.ResetCounters() }

// SetRateLimit makes a region's KMS answer ThrottlingException past rps requests per second;
// 0 removes the limit.
func (e *Env) SetRateLimit(region string, rps float64) { e.KMS.SetRateLimit(region, rps) }

// Endpoints returns a region's endpoints.
func (e *Env) Endpoints(region string) config.Endpoints {
	e.t.Helper()
	ep, err := e.Stack.Endpoints(region)
	if err != nil {
		e.t.Fatalf("localtest: %v", err)
	}
	return ep
}

// ConfigAs is a copy of cfg (nil: Config) whose own credentials (the local section's, used when
// no AWS_PROFILE is set) are role's: in-process envdr code then calls AWS as that role, as the
// deployed workload does (iam.RoleProducer for seal, iam.RoleDaemon for run, ...).
func (e *Env) ConfigAs(cfg *config.Config, role string) *config.Config {
	e.t.Helper()
	if cfg == nil {
		cfg = e.Config
	}
	id, ok := e.IAM.Identity(role)
	if !ok {
		e.t.Fatalf("localtest: no role %q", role)
	}
	c := *cfg
	c.Regions = append([]config.Region(nil), cfg.Regions...)
	local := config.Local{}
	if cfg.Local != nil {
		local = *cfg.Local
	}
	local.AccessKey, local.SecretKey = id.AccessKey, id.SecretKey
	c.Local = &local
	return &c
}

// ConfigPathAs writes ConfigAs(cfg, role) to a file of the test's and returns its path, for
// --config of a CLI run as role.
func (e *Env) ConfigPathAs(cfg *config.Config, role string) string {
	e.t.Helper()
	path := filepath.Join(e.t.TempDir(), role+".yaml")
	if err := localaws.WriteConfig(path, e.ConfigAs(cfg, role)); err != nil {
		e.t.Fatalf("localtest: %v", err)
	}
	return path
}

// AWSConfigAs is AWSConfig signed as one of the stand-in's roles (iam.RoleDaemon, ...).
func (e *Env) AWSConfigAs(region, role string) aws.Config {
	e.t.Helper()
	id, ok := e.IAM.Identity(role)
	if !ok {
		e.t.Fatalf("localtest: no role %q", role)
	}
	return localaws.AWSConfig(region, e.Endpoints(region), id.AccessKey, id.SecretKey)
}

// S3As is an S3 client for one region's endpoint (path-style), signed as role.
func (e *Env) S3As(region, role string) *s3.Client {
	e.t.Helper()
	return localaws.NewS3Client(e.AWSConfigAs(region, role))
}

// Bucket is a region's bucket (Options.S3).
func (e *Env) Bucket(region string) string {
	e.t.Helper()
	r, ok := e.Config.Region(region)
	if !ok || r.Bucket == "" {
		e.t.Fatalf("localtest: region %q has no bucket (localtest.Options.S3)", region)
	}
	return r.Bucket
}

// AWSConfig is an SDK config for one region: its endpoints for KMS, SQS, DynamoDB and S3 (through
// aws.Config.ConfigSources) and the admin's credentials (allowed everything). Build clients with kms.NewFromConfig etc.;
// for DynamoDB prefer localaws.NewDynamoDB (no CRC32 warnings from DynamoDB Local).
func (e *Env) AWSConfig(region string) aws.Config {
	return localaws.AWSConfig(region, e.Endpoints(region), localaws.AccessKey, localaws.SecretKey)
}
