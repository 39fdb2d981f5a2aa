package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"golang.org/x/sync/errgroup"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/kms"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// CallsPerEnvelope are the successful KMS calls per envelope by operation (all regions), by
// region, and in the busiest region.
type CallsPerEnvelope struct {
	PerEnvelope          map[string]float64 `json:"per_envelope"`
	PerRegionPerEnvelope map[string]float64 `json:"per_region_per_envelope"`
	MaxRegionPerEnvelope float64            `json:"max_region_per_envelope"`
}

// ReplicateResult is what one replicator run measured (the JSON written by --out).
type ReplicateResult struct {
	N           int     `json:"n"`
	ThrottleRPS float64 `json:"throttle_rps"` // the stand-in's KMS limit per region; 0: none
	KMSRate     float64 `json:"kms_rate"`     // the daemons' per-region limit (config kms_rate, as it applies)
	// KMSRateUnset: kms_rate was left out of the daemons' config, so the default applied and no
	// daemon was told its share of the quota.
	KMSRateUnset bool   `json:"kms_rate_unset,omitempty"`
	Procs        int    `json:"procs"` // daemon processes on the one queue
	Concurrency  int    `json:"concurrency"`
	Mode         string `json:"mode"`
	MRKWrap      string `json:"mrk_wrap,omitempty"`
	Verify       string `json:"verify"`

	SealS float64 `json:"seal_s"` // sealing and enqueueing (not part of the rate)
	// Daemon is every `envdr run --drain` process together: CPU summed, the longest wall time,
	// the highest peak RSS; Daemons each one (more than one process only).
	Daemon  Measurement   `json:"daemon"`
	Daemons []Measurement `json:"daemons,omitempty"`
	// ProcAcked: envelopes each process acknowledged (its log's distinct "event replicated").
	ProcAcked []int `json:"proc_acked,omitempty"`

	// ActiveS runs from the start of the first event's work (just after the first receive) to
	// the last acknowledgement; EventsPerS = acknowledged events / ActiveS.
	ActiveS    float64 `json:"active_s"`
	EventsPerS float64 `json:"events_per_s"`
	// EventsPerSMid is the rate of the middle 90 % of the acknowledgements (the 5th to the 95th
	// percentile of their times): start-up and a straggler's redelivery left out.
	EventsPerSMid float64 `json:"events_per_s_mid,omitempty"`
	CPUPerEnvMs   float64 `json:"cpu_per_envelope_ms"` // daemon user+sys / N

	// Calls are the KMS stand-in's counters for the daemon's run (throttled calls included);
	// Throttled the calls answered with ThrottlingException, per region and operation.
	Calls     map[string]map[string]int64 `json:"calls"`
	Throttled map[string]map[string]int64 `json:"throttled"`
	// KMSCalls counts every KMS call of the run, throttled ones included; ThrottledCalls those
	// answered with ThrottlingException; ThrottledFraction = ThrottledCalls / KMSCalls.
	KMSCalls          int64   `json:"kms_calls"`
	ThrottledCalls    int64   `json:"throttled_calls"`
	ThrottledFraction float64 `json:"throttled_fraction"`
	CallsPerEnvelope
	// StorageCalls are the SQS and DynamoDB requests the stand-in's endpoints received during the
	// daemons' run, by region and "service:Operation"; StoragePerEnvelope sums them over regions
	// per envelope (the daemons' round trips besides KMS).
	StorageCalls       map[string]map[string]int64 `json:"storage_calls"`
	StoragePerEnvelope map[string]float64          `json:"storage_per_envelope"`
	// QuotaBoundRate = ThrottleRPS / MaxRegionPerEnvelope; Fraction = EventsPerS / QuotaBoundRate.
	QuotaBoundRate float64 `json:"quota_bound_rate,omitempty"`
	Fraction       float64 `json:"fraction,omitempty"`

	Outcomes map[string]int `json:"outcomes"` // daemon log lines by message

	Records         int      `json:"records"`
	RecordsVerified int      `json:"records_verified"`  // verified_at set in every region (verify: all; else wrapped)
	RegionUnwrapsOK int      `json:"region_unwraps_ok"` // independent re-check: Decrypt in the region alone + commitment
	FailedEnvelopes int      `json:"failed_envelopes"`
	DLQ             int      `json:"dlq"`
	QueueLeft       int      `json:"queue_left"`
	Problems        []string `json:"problems,omitempty"`
}

func runReplicate(args []string) error {
	fs := flag.NewFlagSet("replicate", flag.ExitOnError)
	bin := fs.String("envdr", "bin/envdr", "the envdr binary to run as the daemon")
	n := fs.Int("n", 2000, "envelopes to seal and replicate")
	throttle := fs.Float64("throttle", 0, "limit each region's KMS to this many requests/s (0: no limit)")
	kmsRate := fs.String("kms-rate", kmsRateQuota, "the daemons' kms_rate: "+kmsRateQuota+" (= --throttle when throttled, else the default), "+
		kmsRateUnset+" (left out of the config: the default applies, no daemon is told its share), or requests/s")
	procs := fs.Int("procs", 1, "daemon processes to run on the one queue at once")
	concurrency := fs.Int("concurrency", 0, "worker.concurrency of the daemon (0: config default)")
	mode := fs.String("mode", config.ModeMRK, "key mode of every region: mrk or independent")
	mrkWrap := fs.String("mrk-wrap", "", "mrk_wrap of the daemons: reencrypt or shared (empty: config default, reencrypt)")
	verify := fs.String("verify", "", "policy.verify of the daemons: all, none or sample:P% (empty: config default, all)")
	out := fs.String("out", "", "write the result JSON here")
	logPath := fs.String("log", "", "write the daemon's log here (default: next to --out)")
	timeout := fs.Duration("timeout", 20*time.Minute, "stop the daemon after this long")
	cpuProfile := fs.String("cpu-profile", "", "have the daemon write a pprof CPU profile of its run here (envdr run --cpu-profile)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *logPath == "" {
		if *out != "" {
			*logPath = strings.TrimSuffix(*out, ".json") + ".log"
		} else {
			*logPath = filepath.Join(os.TempDir(), "envdr-bench-daemon.log")
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := replicateBench(ctx, replicateOptions{
		Bin: *bin, N: *n, Throttle: *throttle, KMSRate: *kmsRate, Procs: *procs, Concurrency: *concurrency,
		Mode: *mode, MRKWrap: *mrkWrap, Verify: *verify, LogPath: *logPath, Timeout: *timeout, CPUProfile: *cpuProfile,
	})
	if res != nil && *out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if werr := os.WriteFile(*out, append(b, '\n'), 0o644); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "replicate: %d envelopes, %d process(es), %.1f events/s, %.2f ms CPU/envelope, throttled %.4f of KMS calls, failed %d, DLQ %d\n",
		res.N, res.Procs, res.EventsPerS, res.CPUPerEnvMs, res.ThrottledFraction, res.FailedEnvelopes, res.DLQ)
	return nil
}

type replicateOptions struct {
	Bin         string
	N           int
	Throttle    float64
	KMSRate     string // kmsRateQuota, kmsRateUnset or a number
	Procs       int
	Concurrency int
	Mode        string
	MRKWrap     string
	Verify      string
	LogPath     string
	Timeout     time.Duration
	CPUProfile  string
}

// Values of --kms-rate besides a number.
const (
	kmsRateQuota = "quota"
	kmsRateUnset = "default"
)

// daemonKMSRate is the kms_rate to write into the daemons' config: 0 leaves it out (the
// config default applies when the daemon loads it).
func (o replicateOptions) daemonKMSRate() (float64, error) {
	switch o.KMSRate {
	case kmsRateQuota, "":
		return o.Throttle, nil
	case kmsRateUnset:
		return 0, nil
	}
	v, err := strconv.ParseFloat(o.KMSRate, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("--kms-rate %q: use %s, %s or a positive number of requests/s", o.KMSRate, kmsRateQuota, kmsRateUnset)
	}
	return v, nil
}

// logPaths are the daemons' log files: LogPath for one process, LogPath with -pK before its
// extension for K = 1..Procs otherwise.
func (o replicateOptions) logPaths() []string {
	if o.Procs <= 1 {
		return []string{o.LogPath}
	}
	ext := filepath.Ext(o.LogPath)
	out := make([]string, o.Procs)
	for k := range out {
		out[k] = fmt.Sprintf("%s-p%d%s", strings.TrimSuffix(o.LogPath, ext), k+1, ext)
	}
	return out
}

// standIn is an isolated three-region stand-in: an in-process KMS and per-region endpoints on
// ephemeral ports in front of the shared backends, with its own queue, DLQ and table.
type standIn struct {
	svc      *kms.Service
	stack    *localaws.Stack
	backends localaws.Backends
	cfg      *config.Config
	keys     map[string]localaws.RegionKeys
	throttle *throttleCounter
}

func newStandIn(ctx context.Context) (*standIn, error) {
	b, err := localaws.FindBackends()
	if err != nil {
		return nil, fmt.Errorf("no running SQS and DynamoDB backends (envdr-local; set ENVDR_LOCAL_BACKENDS): %w", err)
	}
	svc, err := kms.NewService(kms.Options{Regions: localaws.DefaultRegions})
	if err != nil {
		return nil, fmt.Errorf("KMS stand-in: %w", err)
	}
	tc := newThrottleCounter()
	stack, err := localaws.NewStack(localaws.StackOptions{
		Regions:  localaws.DefaultRegions,
		KMS:      func(r string) http.Handler { return tc.wrap(r, svc.Handler(r)) },
		Backends: b,
	})
	if err != nil {
		_ = svc.Close()
		return nil, err
	}
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	suffix := "bench-" + hex.EncodeToString(rb[:])
	s := &standIn{svc: svc, stack: stack, backends: b, throttle: tc}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	prov, err := localaws.ProvisionIsolated(pctx, stack, suffix, true) // the bench signs everything as the admin: keys keep the default policy
	if err != nil {
		s.close()
		return nil, fmt.Errorf("provision: %w", err)
	}
	s.cfg, s.keys = prov.Config, prov.Keys
	return s, nil
}

// close deletes the queue, DLQ and table straight on the shared backends and stops serving.
func (s *standIn) close() {
	if s.cfg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		direct := localaws.AWSConfig(s.cfg.HomeRegion, config.Endpoints{SQS: s.backends.SQS},
			localaws.AccessKey, localaws.SecretKey)
		sc := sqs.NewFromConfig(direct)
		for _, u := range []string{s.cfg.QueueURL, s.cfg.DLQURL} {
			if _, err := sc.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(u)}); err != nil {
				fmt.Fprintf(os.Stderr, "replicate: cleanup: DeleteQueue %s: %v\n", u, err)
			}
		}
		// The table has a replica per region, each in the backend's database for that region:
		// deleted through the stand-in, which deletes every replica.
		home, _ := s.cfg.Region(s.cfg.HomeRegion)
		viaStandIn := localaws.AWSConfig(s.cfg.HomeRegion, home.Endpoints, localaws.AccessKey, localaws.SecretKey)
		if _, err := localaws.NewDynamoDB(viaStandIn).DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(s.cfg.Table)}); err != nil {
			fmt.Fprintf(os.Stderr, "replicate: cleanup: DeleteTable %s: %v\n", s.cfg.Table, err)
		}
	}
	_ = s.stack.Close()
	_ = s.svc.Close()
}

// throttleCounter counts the KMS answers that are ThrottlingException, per region and operation
// (the stand-in's own counters include throttled calls; this separates them).
type throttleCounter struct {
	mu sync.Mutex
	n  map[string]map[string]int64
}

func newThrottleCounter() *throttleCounter { return &throttleCounter{n: map[string]map[string]int64{}} }

func (t *throttleCounter) wrap(region string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &sniffWriter{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusBadRequest && bytes.Contains(rec.head, []byte("ThrottlingException")) {
			op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
			t.mu.Lock()
			if t.n[region] == nil {
				t.n[region] = map[string]int64{}
			}
			t.n[region][op]++
			t.mu.Unlock()
		}
	})
}

func (t *throttleCounter) snapshot() map[string]map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]map[string]int64{}
	for r, m := range t.n {
		out[r] = map[string]int64{}
		for op, v := range m {
			out[r][op] = v
		}
	}
	return out
}

func (t *throttleCounter) reset() {
	t.mu.Lock()
	t.n = map[string]map[string]int64{}
	t.mu.Unlock()
}

// sniffWriter records the status and the first bytes of an error answer.
type sniffWriter struct {
	http.ResponseWriter
	status int
	head   []byte
}

func (w *sniffWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *sniffWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status >= 400 && len(w.head) < 256 {
		w.head = append(w.head, p[:min(len(p), 256-len(w.head))]...)
	}
	return w.ResponseWriter.Write(p)
}

// envdrBinary is --envdr as an absolute path, which must exist.
func envdrBinary(path string) (string, error) {
	bin, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("--envdr: %w (make build)", err)
	}
	return bin, nil
}

// writeDaemonConfig validates dcfg and writes it into a new temporary directory (prefix names
// it) for the daemons to load. It returns the file, the config as the daemons load it (the
// defaults filled in) and the directory's removal.
func writeDaemonConfig(dcfg *config.Config, prefix string) (cfgPath string, applied config.Config, cleanup func(), err error) {
	if err := dcfg.Validate(); err != nil {
		return "", config.Config{}, nil, fmt.Errorf("daemon config: %w", err)
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", config.Config{}, nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	cfgPath = filepath.Join(dir, "envdr.yaml")
	if err := localaws.WriteConfig(cfgPath, dcfg); err != nil {
		cleanup()
		return "", config.Config{}, nil, err
	}
	applied = *dcfg
	applied.Regions = append([]config.Region(nil), dcfg.Regions...)
	applied.WithDefaults()
	return cfgPath, applied, cleanup, nil
}

// benchTopology is the bench's own clients (sealing, enqueueing, the checks) on the daemons'
// config with a high kms_rate: the limiter under test is the daemons'.
func benchTopology(ctx context.Context, applied config.Config, opts regions.Options) (*regions.Topology, error) {
	bcfg := applied
	bcfg.Regions = append([]config.Region(nil), applied.Regions...)
	for i := range bcfg.Regions {
		bcfg.Regions[i].KMSRate = 1e6
	}
	return regions.New(ctx, &bcfg, opts)
}

func replicateBench(ctx context.Context, o replicateOptions) (*ReplicateResult, error) {
	if o.N < 1 {
		return nil, errors.New("--n must be at least 1")
	}
	if o.Procs < 1 {
		return nil, errors.New("--procs must be at least 1")
	}
	if o.Mode != config.ModeMRK && o.Mode != config.ModeIndependent {
		return nil, fmt.Errorf("--mode %q: use mrk or independent", o.Mode)
	}
	kmsRate, err := o.daemonKMSRate()
	if err != nil {
		return nil, err
	}
	bin, err := envdrBinary(o.Bin)
	if err != nil {
		return nil, err
	}
	s, err := newStandIn(ctx)
	if err != nil {
		return nil, err
	}
	defer s.close()

	// The daemons' config: this stand-in, the chosen mode, wrap and verification, and kms_rate
	// as asked (0: left out, so the config default applies when the daemon loads it).
	dcfg := *s.cfg
	dcfg.Regions = append([]config.Region(nil), s.cfg.Regions...)
	for i := range dcfg.Regions {
		r := &dcfg.Regions[i]
		if o.Mode == config.ModeIndependent {
			r.Key, r.Mode = s.keys[r.Name].Independent, config.ModeIndependent
		}
		r.KMSRate = kmsRate
	}
	if o.Concurrency > 0 {
		dcfg.Worker.Concurrency = o.Concurrency
	}
	if o.MRKWrap != "" {
		dcfg.MRKWrap = o.MRKWrap
	}
	if o.Verify != "" {
		dcfg.Policy.Verify = o.Verify
	}
	cfgPath, applied, cleanup, err := writeDaemonConfig(&dcfg, "envdr-bench-")
	if err != nil {
		return nil, err
	}
	defer cleanup()

	res := &ReplicateResult{
		N: o.N, ThrottleRPS: o.Throttle, KMSRate: applied.Regions[0].KMSRate, KMSRateUnset: kmsRate == 0,
		Procs: o.Procs, Concurrency: applied.Worker.Concurrency, Mode: o.Mode, MRKWrap: applied.MRKWrap, Verify: applied.Policy.Verify,
	}

	// Seal and enqueue (not timed as part of the rate).
	topo, err := benchTopology(ctx, applied, regions.Options{})
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	ids, err := sealAndEnqueue(ctx, topo, dcfg.QueueURL, o.N)
	if err != nil {
		return nil, err
	}
	res.SealS = time.Since(t0).Seconds()
	fmt.Fprintf(os.Stderr, "replicate: sealed and enqueued %d envelopes in %.1fs\n", o.N, res.SealS)

	s.svc.ResetCounters()
	s.stack.ResetCalls()
	s.throttle.reset()
	if o.Throttle > 0 {
		for _, r := range localaws.DefaultRegions {
			s.svc.SetRateLimit(r, o.Throttle)
		}
	}
	logs := o.logPaths()
	runErr := runDaemons(ctx, bin, cfgPath, logs, o.Timeout, o.CPUProfile, res)
	res.CPUPerEnvMs = (res.Daemon.UserS + res.Daemon.SysS) / float64(o.N) * 1000

	// Counters first: the checks below call KMS too.
	res.Calls = s.svc.Counters()
	res.StorageCalls = s.stack.Calls()
	res.Throttled = s.throttle.snapshot()
	for _, r := range localaws.DefaultRegions {
		s.svc.SetRateLimit(r, 0)
	}
	summarizeCalls(res)

	lr, err := parseDaemonLogs(logs...)
	if err != nil {
		res.Problems = append(res.Problems, "daemon log: "+err.Error())
	}
	res.Outcomes = lr.Outcomes
	if o.Procs > 1 {
		res.ProcAcked = lr.ProcAcked
	}
	if lr.Acked > 0 && lr.Last.After(lr.First) {
		res.ActiveS = lr.Last.Sub(lr.First).Seconds()
		res.EventsPerS = float64(lr.Acked) / res.ActiveS
		res.EventsPerSMid = lr.midRate()
	}
	if res.MaxRegionPerEnvelope > 0 && o.Throttle > 0 {
		res.QuotaBoundRate = o.Throttle / res.MaxRegionPerEnvelope
		res.Fraction = res.EventsPerS / res.QuotaBoundRate
	}
	if runErr != nil {
		res.Problems = append(res.Problems, runErr.Error())
	}

	if err := checkResults(ctx, topo, &applied, ids, nil, res); err != nil {
		res.Problems = append(res.Problems, "checks: "+err.Error())
	}
	if len(res.Problems) > 0 {
		return res, fmt.Errorf("replicate: %s", strings.Join(res.Problems, "; "))
	}
	return res, nil
}

// runDaemons runs one `envdr run --drain` per log path at once, all on the one queue, each
// logging to its path, and records their rusage in res: each in Daemons (more than one only),
// together in Daemon. The error names every daemon that failed.
func runDaemons(ctx context.Context, bin, cfgPath string, logs []string, timeout time.Duration, cpuProfile string, res *ReplicateResult) error {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ms := make([]Measurement, len(logs))
	errs := make([]error, len(logs))
	var wg sync.WaitGroup
	for k, path := range logs {
		logf, err := os.Create(path)
		if err != nil {
			return err
		}
		args := []string{"--config", cfgPath, "run", "--drain", "--wait-time", "1s", "--admin-addr", "127.0.0.1:0"}
		if cpuProfile != "" && k == 0 {
			args = append(args, "--cpu-profile", cpuProfile) // the first daemon's
		}
		cmd := exec.CommandContext(dctx, bin, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 45 * time.Second
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			runErr := cmd.Run()
			ms[k] = Measurement{Label: fmt.Sprintf("envdr-run-%d", k+1), WallS: time.Since(start).Seconds(), Command: strings.Join(cmd.Args, " ")}
			fillUsage(&ms[k], cmd.ProcessState)
			_ = logf.Close()
			if runErr != nil || ms[k].Exit != 0 {
				errs[k] = fmt.Errorf("daemon %d: %v (exit %d; log %s)", k+1, runErr, ms[k].Exit, path)
			}
		}()
	}
	wg.Wait()
	res.Daemon = Measurement{Label: "envdr-run", Command: ms[0].Command}
	for _, m := range ms {
		res.Daemon.UserS += m.UserS
		res.Daemon.SysS += m.SysS
		res.Daemon.WallS = max(res.Daemon.WallS, m.WallS)
		res.Daemon.MaxRSSKiB = max(res.Daemon.MaxRSSKiB, m.MaxRSSKiB)
		if res.Daemon.Exit == 0 {
			res.Daemon.Exit = m.Exit
		}
	}
	if len(ms) > 1 {
		res.Daemons = ms
	}
	return errors.Join(errs...)
}

// sealAndEnqueue seals n small envelopes in the home region (GenerateDataKey) and puts their
// events on the queue in batches of 10. It returns ID -> commitment.
func sealAndEnqueue(ctx context.Context, topo *regions.Topology, queueURL string, n int) (map[string][]byte, error) {
	home, err := topo.HomeRegion()
	if err != nil {
		return nil, err
	}
	hdrs, err := sealOnly(ctx, topo, n, "bench")
	if err != nil {
		return nil, err
	}
	bodies := make([]string, n)
	ids := make(map[string][]byte, n)
	for i, hdr := range hdrs {
		ev, err := envelope.NewEvent(hdr, time.Now(), "")
		if err != nil {
			return nil, err
		}
		body, err := envelope.EncodeEvent(ev)
		if err != nil {
			return nil, err
		}
		bodies[i] = string(body)
		ids[hdr.RecordID()] = hdr.Commitment
	}

	var batch atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for w := 0; w < 8; w++ {
		g.Go(func() error {
			for {
				lo := int(batch.Add(1)-1) * 10
				if lo >= n {
					return nil
				}
				hi := min(lo+10, n)
				in := &sqs.SendMessageBatchInput{QueueUrl: aws.String(queueURL)}
				for i := lo; i < hi; i++ {
					in.Entries = append(in.Entries, sqstypes.SendMessageBatchRequestEntry{
						Id: aws.String(fmt.Sprintf("m%d", i-lo)), MessageBody: aws.String(bodies[i])})
				}
				out, err := home.SQS().SendMessageBatch(gctx, in)
				if err != nil {
					return fmt.Errorf("SendMessageBatch: %w", err)
				}
				if len(out.Failed) > 0 {
					return fmt.Errorf("SendMessageBatch: %d entries failed: %s", len(out.Failed), aws.ToString(out.Failed[0].Message))
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return ids, nil
}

// summarizeCalls derives successful calls per envelope by operation and by region, and the
// share of all calls that were throttled. DescribeKey (the daemons' start-up check) is left out
// of the per-region figures.
func summarizeCalls(res *ReplicateResult) {
	res.PerEnvelope = map[string]float64{}
	res.PerRegionPerEnvelope = map[string]float64{}
	n := float64(res.N)
	for region, ops := range res.Calls {
		var regionCalls int64
		for op, c := range ops {
			if op == "Throttled" {
				continue
			}
			ok := c - res.Throttled[region][op]
			res.PerEnvelope[op] += float64(ok) / n
			if op != "DescribeKey" {
				regionCalls += ok
			}
		}
		res.PerRegionPerEnvelope[region] = float64(regionCalls) / n
		res.MaxRegionPerEnvelope = max(res.MaxRegionPerEnvelope, float64(regionCalls)/n)
	}
	res.StoragePerEnvelope = map[string]float64{}
	for _, ops := range res.StorageCalls {
		for op, c := range ops {
			res.StoragePerEnvelope[op] += float64(c) / n
		}
	}
	res.KMSCalls, res.ThrottledCalls = 0, 0
	for region, ops := range res.Calls {
		for op, c := range ops {
			if op != "Throttled" {
				res.KMSCalls += c
			}
		}
		for _, c := range res.Throttled[region] {
			res.ThrottledCalls += c
		}
	}
	if res.KMSCalls > 0 {
		res.ThrottledFraction = float64(res.ThrottledCalls) / float64(res.KMSCalls)
	}
}

type logReport struct {
	First, Last time.Time
	Acked       int         // distinct envelopes acknowledged, in all the logs together
	acks        []time.Time // the first acknowledgement of each
	ProcAcked   []int       // distinct envelopes acknowledged, per log
	Outcomes    map[string]int
}

// parseDaemonLogs reads the daemons' JSON logs (one per process, all on the same queue): one
// line per event outcome with its ts and duration (seconds). First is the earliest start of an
// event's work, Last the latest ack, in any of them.
func parseDaemonLogs(paths ...string) (logReport, error) {
	lr := logReport{Outcomes: map[string]int{}}
	seen := map[string]bool{}
	var errs []error
	for _, p := range paths {
		n, err := lr.parse(p, seen)
		lr.ProcAcked = append(lr.ProcAcked, n)
		errs = append(errs, err)
	}
	return lr, errors.Join(errs...)
}

// midRate is the acknowledgements per second between the 5th and the 95th percentile of their
// times; 0 with fewer than 20.
func (lr *logReport) midRate() float64 {
	n := len(lr.acks)
	if n < 20 {
		return 0
	}
	t := append([]time.Time(nil), lr.acks...)
	sort.Slice(t, func(i, j int) bool { return t[i].Before(t[j]) })
	lo, hi := n*5/100, n*95/100
	if d := t[hi].Sub(t[lo]).Seconds(); d > 0 {
		return float64(hi-lo) / d
	}
	return 0
}

// parse adds one log to lr; seen holds the envelopes acknowledged in the logs read so far. It
// returns the distinct envelopes this log acknowledged.
func (lr *logReport) parse(path string, seen map[string]bool) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	mine := map[string]bool{}
	for sc.Scan() {
		var l struct {
			TS       string  `json:"ts"`
			Msg      string  `json:"msg"`
			Level    string  `json:"level"`
			ID       string  `json:"id"`
			Duration float64 `json:"duration"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			lr.Outcomes["(not JSON)"]++
			continue
		}
		ts, err := parseLogTime(l.TS)
		if err != nil {
			continue
		}
		if l.ID == "" {
			if l.Level != "info" {
				lr.Outcomes[l.Level+": "+l.Msg]++
			}
			continue
		}
		lr.Outcomes[l.Msg]++
		begin := ts.Add(-time.Duration(l.Duration * float64(time.Second)))
		if lr.First.IsZero() || begin.Before(lr.First) {
			lr.First = begin
		}
		if l.Msg == "event replicated" {
			mine[l.ID] = true
			if !seen[l.ID] {
				seen[l.ID] = true
				lr.Acked++
				lr.acks = append(lr.acks, ts)
			}
			if ts.After(lr.Last) {
				lr.Last = ts
			}
		}
	}
	return len(mine), sc.Err()
}

func parseLogTime(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02T15:04:05.000Z0700", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("bad ts %q", s)
}

// checkResults checks that the queue and the DLQ are empty and that every sealed envelope's
// record is verified in every region (wrapped, unless verify is all), then re-checks each region's wrap independently: Decrypt
// through that region's KMS alone and compare the key commitment. Records skip reports (seeded
// before the run, not sealed by it; skip may be nil) are passed over; any other record is a
// problem.
func checkResults(ctx context.Context, topo *regions.Topology, cfg *config.Config, ids map[string][]byte, skip func(*envelope.Record) bool, res *ReplicateResult) error {
	home, err := topo.HomeRegion()
	if err != nil {
		return err
	}
	if res.QueueLeft, err = replicate.QueueDepth(ctx, home.SQS(), cfg.QueueURL); err != nil {
		return err
	}
	if res.DLQ, err = replicate.QueueDepth(ctx, home.SQS(), cfg.DLQURL); err != nil {
		return err
	}
	store := replicate.NewStore(cfg.Table, home.Name, home.DynamoDB(), cfg.RegionNames())
	var recs []*envelope.Record
	if err := store.Scan(ctx, 0, 1, func(r *envelope.Record) error {
		if skip == nil || !skip(r) {
			recs = append(recs, r)
		}
		return nil
	}); err != nil {
		return err
	}
	res.Records = len(recs)
	// With verify: sample or none the daemons leave most wraps unverified on purpose; the bench's
	// own Decrypt in each region below is the check then.
	verifyAll, need := cfg.Policy.Verify == config.VerifyAll, "verified"
	if !verifyAll {
		need = "wrapped"
	}
	good := map[string]bool{}
	var (
		mu       sync.Mutex
		problems []string
	)
	note := func(format string, a ...any) {
		mu.Lock()
		if len(problems) < 5 {
			problems = append(problems, fmt.Sprintf(format, a...))
		}
		mu.Unlock()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, rec := range recs {
		want, ok := ids[rec.ID]
		if !ok {
			note("record %s was not sealed by this run", rec.ID)
			continue
		}
		if !bytes.Equal(want, rec.Commitment) {
			note("record %s: commitment differs from the sealed header's", rec.ID)
			continue
		}
		verified := true
		for _, name := range topo.Names() {
			if w := rec.Regions[name]; !w.Verified() && (verifyAll || !w.HasWrap()) {
				verified = false
				note("record %s: region %s not %s (last error %q)", rec.ID, name, need, errString(w))
			}
		}
		if !verified {
			continue
		}
		res.RecordsVerified++
		g.Go(func() error {
			all := true
			for _, name := range topo.Names() {
				r, _ := topo.Region(name)
				w := rec.Regions[name]
				dek, err := r.Unwrap(gctx, w.Wrapped, w.KeyARN, rec.Context)
				if err == nil {
					err = envelope.CheckCommitment(dek, rec.Commitment)
					envelope.Wipe(dek)
				}
				if err != nil {
					all = false
					note("record %s: region %s alone cannot open it: %v", rec.ID, name, err)
					continue
				}
				mu.Lock()
				res.RegionUnwrapsOK++
				mu.Unlock()
			}
			if all {
				mu.Lock()
				good[rec.ID] = true
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	res.FailedEnvelopes = len(ids) - len(good)
	if res.FailedEnvelopes > 0 || res.DLQ > 0 || res.QueueLeft > 0 {
		sort.Strings(problems)
		return fmt.Errorf("%d of %d envelopes failed, DLQ %d, queue %d: %s",
			res.FailedEnvelopes, len(ids), res.DLQ, res.QueueLeft, strings.Join(problems, "; "))
	}
	return nil
}

func errString(w *envelope.RegionWrap) string {
	if w == nil {
		return "no wrap"
	}
	return w.LastError
}
