package localaws

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws/admin"
	"github.com/envdr/envdr/localaws/iam"
)

// DefaultBasePort is the first of the stand-in's fixed ports (see Ports and admin.DefaultBasePort).
const DefaultBasePort = admin.DefaultBasePort

// Ports is the fixed port layout of `envdr local serve` from a base port B:
// B admin, B+1 fauxqs, B+2 DynamoDB Local, and for the i-th region B+10+10i (KMS), +1 (SQS),
// +2 (DynamoDB), +3 (S3): with B=24660, us-east-1 is 24670-24673, eu-west-1 24680-24683 and
// ap-southeast-2 24690-24693.
type Ports struct {
	Admin, Fauxqs, DynamoDB int
	Regions                 map[string]RegionPorts
}

// PortLayout computes Ports for a base port and regions.
func PortLayout(base int, regions []string) Ports {
	p := Ports{Admin: base, Fauxqs: base + 1, DynamoDB: base + 2, Regions: map[string]RegionPorts{}}
	for i, r := range regions {
		b := base + 10 + 10*i
		p.Regions[r] = RegionPorts{KMS: b, SQS: b + 1, DynamoDB: b + 2, S3: b + 3}
	}
	return p
}

// ServeOptions configures Serve.
type ServeOptions struct {
	// Dir holds the stand-in's files: envdr.yaml, backends.json, logs/ (default "local").
	Dir string
	// Tools is where scripts/localaws-install.sh installed the backends (default ".tools/localaws").
	Tools string
	// BasePort; DefaultBasePort if 0.
	BasePort int
	// Regions, home first; DefaultRegions if empty.
	Regions []string
	// KMS is the KMS stand-in: its per-region handlers and its test hooks.
	KMS      func(region string) http.Handler
	KMSHooks KMSHooks
	// IAM is the identities and policies (the KMS service should use it as its Authorizer);
	// nil: a fresh iam.New(). Serve writes Dir/credentials and attaches the policies `envdr
	// policy render` generates for the written config.
	IAM *iam.IAM
	// PersistDynamoDB keeps DynamoDB Local's data in Dir/dynamodb instead of memory.
	PersistDynamoDB bool
	// Lag is the global tables' replication lag: 0 means DefaultReplicationLag, negative none.
	Lag time.Duration
	// Jitter is the global tables' replication jitter: each item waits Lag plus up to Jitter.
	Jitter time.Duration
	// Log receives progress lines.
	Log io.Writer
	// Ready is called once everything is provisioned and the config is written.
	Ready func(configPath string)
}

// ConfigFile is the config the stand-in writes inside its directory (admin.ConfigFile).
const ConfigFile = admin.ConfigFile

// Serve runs the stand-in until ctx ends or a backend dies: it starts fauxqs and DynamoDB Local
// as child processes, puts every region's endpoints in front of them and the KMS stand-in,
// provisions keys, queue and table, and writes Dir/backends.json and (last) Dir/envdr.yaml.
// Children are stopped before it returns.
func Serve(ctx context.Context, o ServeOptions) (err error) {
	if o.Dir == "" {
		o.Dir = "local"
	}
	if o.Tools == "" {
		o.Tools = ".tools/localaws"
	}
	if o.BasePort == 0 {
		o.BasePort = DefaultBasePort
	}
	if len(o.Regions) == 0 {
		o.Regions = DefaultRegions
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	logf := func(format string, a ...any) { fmt.Fprintf(o.Log, "envdr local: "+format+"\n", a...) }
	ports := PortLayout(o.BasePort, o.Regions)
	cfgPath := filepath.Join(o.Dir, ConfigFile)
	backendsPath := filepath.Join(o.Dir, "backends.json")

	tools, err := LoadTools(o.Tools)
	if err != nil {
		return err
	}
	if tools.DynamoDBLauncher == "" {
		logf("warning: no JDK at install time: DynamoDB Local listens on all interfaces, not only 127.0.0.1")
	}
	// Fail early and clearly if another stand-in holds the ports.
	if err := portsFree(ports); err != nil {
		return err
	}
	logDir := filepath.Join(o.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	// Stale files must not make waiters think this run is ready.
	_ = os.Remove(cfgPath)
	_ = os.Remove(backendsPath)

	fqLog, err := os.Create(filepath.Join(logDir, "fauxqs.log"))
	if err != nil {
		return err
	}
	defer fqLog.Close()
	ddbLog, err := os.Create(filepath.Join(logDir, "dynamodb.log"))
	if err != nil {
		return err
	}
	defer ddbLog.Close()

	start := time.Now()
	fq, err := StartFauxqs(tools, ports.Fauxqs, fqLog)
	if err != nil {
		return err
	}
	defer fq.Stop(5 * time.Second)
	var dbPath string
	if o.PersistDynamoDB {
		dbPath, _ = filepath.Abs(filepath.Join(o.Dir, "dynamodb"))
		if err := os.MkdirAll(dbPath, 0o755); err != nil {
			return err
		}
	} else {
		if dbPath, err = MemoryDBDir(); err != nil {
			return err
		}
		defer os.RemoveAll(dbPath) // after DynamoDB Local has stopped (defers run in reverse)
	}
	ddb, err := StartDynamoDB(tools, ports.DynamoDB, dbPath, ddbLog)
	if err != nil {
		return err
	}
	defer ddb.Stop(10 * time.Second)

	backends := Backends{
		SQS:      fmt.Sprintf("http://127.0.0.1:%d", ports.Fauxqs),
		S3:       fmt.Sprintf("http://127.0.0.1:%d", ports.Fauxqs),
		DynamoDB: fmt.Sprintf("http://127.0.0.1:%d", ports.DynamoDB),
		Admin:    fmt.Sprintf("http://127.0.0.1:%d", ports.Admin),
		PID:      os.Getpid(),
	}
	waitCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- WaitHTTP(waitCtx, backends.SQS+"/health", fq) }()
	go func() { errc <- WaitHTTP(waitCtx, backends.DynamoDB+"/", ddb) }()
	for range 2 {
		if err := <-errc; err != nil {
			return fmt.Errorf("%w (logs in %s)", err, logDir)
		}
	}
	logf("backends up in %s (fauxqs %s, DynamoDB Local %s)", time.Since(start).Round(time.Millisecond), backends.SQS, backends.DynamoDB)

	if o.IAM == nil {
		o.IAM = iam.New()
	}
	credPath := filepath.Join(o.Dir, CredentialsFile)
	stack, err := NewStack(StackOptions{Regions: o.Regions, KMS: o.KMS, Backends: backends, Ports: ports.Regions, IAM: o.IAM})
	if err != nil {
		return err
	}
	defer stack.Close()
	if o.Lag != 0 {
		if err := stack.GlobalTables().SetLag("", "", max(o.Lag, 0)); err != nil {
			return err
		}
	}
	if err := stack.GlobalTables().SetJitter("", "", o.Jitter); err != nil {
		return err
	}
	admin := &Admin{Stack: stack, KMS: o.KMSHooks, IAM: o.IAM}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", ports.Admin))
	if err != nil {
		return fmt.Errorf("admin endpoint: %w", err)
	}
	adminSrv := &http.Server{Handler: admin.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = adminSrv.Serve(ln) }()
	defer adminSrv.Close()

	if err := WriteBackends(backendsPath, backends); err != nil {
		return err
	}
	defer os.Remove(backendsPath)

	pctx, pcancel := context.WithTimeout(ctx, 60*time.Second)
	defer pcancel()
	prov, err := Provision(pctx, ProvisionOptions{
		Regions: o.Regions,
		Endpoints: func(r string) config.Endpoints {
			ep, _ := stack.Endpoints(r)
			return ep
		},
		Admin: backends.Admin,
		S3:    true,
	})
	if err != nil {
		return err
	}
	if err := LoadRenderedPolicies(o.IAM, prov.Config); err != nil {
		return err
	}
	// After the rendered policies: every role they name has a profile.
	if err := o.IAM.WriteCredentials(credPath); err != nil {
		return err
	}
	if err := WriteConfig(cfgPath, prov.Config); err != nil {
		return err
	}
	if _, err := config.Load(cfgPath); err != nil {
		return fmt.Errorf("the written config does not load: %w", err)
	}
	admin.SetReady()
	logf("ready in %s: %s (admin %s; profiles in %s)", time.Since(start).Round(time.Millisecond), cfgPath, backends.Admin, credPath)
	for _, r := range o.Regions {
		ep, _ := stack.Endpoints(r)
		rc, _ := prov.Config.Region(r)
		logf("  %-15s kms %s  sqs %s  dynamodb %s  s3 %s (bucket %s)  mrk %s  independent %s", r, ep.KMS, ep.SQS, ep.DynamoDB, ep.S3, rc.Bucket, prov.Keys[r].MRK, prov.Keys[r].Independent)
	}
	if o.Ready != nil {
		o.Ready(cfgPath)
	}

	select {
	case <-ctx.Done():
		logf("stopping")
		return nil
	case <-fq.Done():
		return fmt.Errorf("fauxqs exited: %v (log %s)", fq.Err(), fqLog.Name())
	case <-ddb.Done():
		return fmt.Errorf("DynamoDB Local exited: %v (log %s)", ddb.Err(), ddbLog.Name())
	}
}

// WriteConfig writes c as YAML atomically, with a header saying where it came from.
func WriteConfig(path string, c *config.Config) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	head := "# Written by `envdr-local` (make local-up): the local three-region stand-in.\n" +
		"# Regenerated on every start; edit a copy, not this file.\n"
	return writeFileAtomic(path, append([]byte(head), b...))
}

func portsFree(p Ports) error {
	all := []int{p.Admin, p.Fauxqs, p.DynamoDB}
	for _, r := range sortedKeys(p.Regions) {
		rp := p.Regions[r]
		all = append(all, rp.KMS, rp.SQS, rp.DynamoDB, rp.S3)
	}
	var errs []error
	for _, port := range all {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			errs = append(errs, fmt.Errorf("port %d is in use (another `envdr-local`? run make local-down, or pick --base-port): %w", port, err))
			continue
		}
		_ = ln.Close()
	}
	return errors.Join(errs...)
}
