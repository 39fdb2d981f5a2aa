package faults

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/internal/localaws"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/localtest"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// suite is one test's stand-in, the config its envdr processes use, in-process clients for
// checking (never for the work under test), and every byte those processes printed.
type suite struct {
	t       *testing.T
	env     *localtest.Env
	cfg     *config.Config
	cfgPath string
	topo    *regions.Topology // the admin: queues and tables (no key use)
	// producer seals and operator decrypts in-process, as those roles: the keys carry the
	// rendered key policies, which let the admin manage keys but not use them.
	producer, operator *regions.Topology
	dir                string
	secrets            *secrets

	mu      sync.Mutex
	outputs []*capture // stdout and stderr of every envdr process
	daemons []*daemon
	acks    map[string]int // envelope ID -> "event replicated" lines seen, all daemons
}

// newSuite gives a test its own stand-in. modes maps region -> config.ModeIndependent for the
// regions that should use their independent key; the rest use the multi-Region key.
func newSuite(t *testing.T, modes map[string]string) *suite {
	t.Helper()
	return newSuiteWith(t, modes, nil)
}

// newSuiteWith is newSuite with tweak applied to the config before it is validated and written
// (a replication policy of the test's own, say).
func newSuiteWith(t *testing.T, modes map[string]string, tweak func(*config.Config)) *suite {
	t.Helper()
	env := localtest.New(t)
	cfg := *env.Config
	cfg.Regions = append([]config.Region(nil), env.Config.Regions...)
	for i, r := range cfg.Regions {
		if modes[r.Name] == config.ModeIndependent {
			cfg.Regions[i].Mode = config.ModeIndependent
			cfg.Regions[i].Key = env.Keys[r.Name].Independent
		}
	}
	// A short visibility timeout: a message held by a killed daemon comes back in seconds.
	cfg.Worker.Visibility = 4 * time.Second
	cfg.Worker.Grace = 15 * time.Second
	if tweak != nil {
		tweak(&cfg)
	}
	require.NoError(t, cfg.Validate())
	// The roles carry the policies `envdr policy render` generates for this config (its keys),
	// as they would be deployed.
	require.NoError(t, localaws.LoadRenderedPolicies(env.IAM, &cfg))
	dir := t.TempDir()
	path := filepath.Join(dir, "envdr.yaml")
	require.NoError(t, localaws.WriteConfig(path, &cfg))
	topo, err := regions.New(context.Background(), &cfg, regions.Options{})
	require.NoError(t, err)
	producer, err := regions.New(context.Background(), env.ConfigAs(&cfg, iam.RoleProducer), regions.Options{})
	require.NoError(t, err)
	operator, err := regions.New(context.Background(), env.ConfigAs(&cfg, iam.RoleOperator), regions.Options{})
	require.NoError(t, err)
	s := &suite{t: t, env: env, cfg: &cfg, cfgPath: path, topo: topo, producer: producer, operator: operator,
		dir: dir, secrets: newSecrets(), acks: map[string]int{}}
	t.Cleanup(s.finish)
	return s
}

// finish stops leftover daemons and runs the secret-hygiene check over all captured output.
func (s *suite) finish() {
	s.mu.Lock()
	ds := append([]*daemon(nil), s.daemons...)
	outs := append([]*capture(nil), s.outputs...)
	s.mu.Unlock()
	for _, d := range ds {
		d.kill()
	}
	var total int
	for _, c := range outs {
		if c.exempt {
			continue
		}
		b := c.bytes()
		total += len(b)
		if i := s.secrets.find(b); i >= 0 {
			s.t.Errorf("secret hygiene: a DEK or plaintext sample appears in the output of %s at byte %d", c.name, i)
		}
	}
	s.t.Logf("secret hygiene: %d secrets (DEKs, plaintext samples) checked against %d bytes of output from %d streams: none found",
		s.secrets.count(), total, len(outs))
	if s.t.Failed() {
		for _, c := range outs {
			if strings.HasPrefix(c.name, "daemon") && !c.exempt {
				s.t.Logf("--- tail of %s:\n%s", c.name, tail(c.bytes(), 10))
			}
		}
	}
}

func tail(b []byte, lines int) string {
	parts := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// streams returns every captured stream so far.
func (s *suite) streams() []*capture {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*capture(nil), s.outputs...)
}

// capture records one output stream and hands each complete line to onLine.
type capture struct {
	name string
	// exempt: the stream is meant to carry plaintext (open to stdout) and its content is
	// checked by the test itself, so the hygiene scan skips it.
	exempt bool
	mu     sync.Mutex
	buf    bytes.Buffer
	part   []byte
	onLine func(line []byte)
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	c.part = append(c.part, p...)
	var lines [][]byte
	for {
		i := bytes.IndexByte(c.part, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, bytes.Clone(c.part[:i]))
		c.part = c.part[i+1:]
	}
	c.mu.Unlock()
	if c.onLine != nil {
		for _, l := range lines {
			c.onLine(l)
		}
	}
	return len(p), nil
}

func (c *capture) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

func (s *suite) newCapture(name string, onLine func([]byte)) *capture {
	c := &capture{name: name, onLine: onLine}
	s.mu.Lock()
	s.outputs = append(s.outputs, c)
	s.mu.Unlock()
	return c
}

// cliResult is one finished envdr CLI process.
type cliResult struct {
	code           int
	stdout, stderr []byte
	outCap         *capture
}

// cli runs `envdr --config <suite config> args...` to completion.
func (s *suite) cli(stdin io.Reader, args ...string) cliResult {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := "envdr " + strings.Join(args, " ")
	cmd := exec.CommandContext(ctx, envdrBin, append([]string{"--config", s.cfgPath}, args...)...)
	out, errb := s.newCapture(name+" (stdout)", nil), s.newCapture(name+" (stderr)", nil)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, out, errb
	cmd.Env = s.roleEnv(cliRole(args))
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		require.Truef(s.t, ok, "%s: %v", name, err)
		code = ee.ExitCode()
	}
	return cliResult{code: code, stdout: out.bytes(), stderr: errb.bytes(), outCap: out}
}

// cleanEnv keeps ENVDR_* overrides of the developer's shell away from the processes.
// cliRole is the stand-in role each command runs as, as it would be deployed: seal as the
// producer, rewrap as its own role, the reading commands as the operator; `local` talks to the
// admin endpoint only.
func cliRole(args []string) string {
	for _, a := range args {
		switch a {
		case "seal":
			return "envdr-producer"
		case "rewrap":
			return "envdr-rewrap"
		case "open", "verify", "drill", "status", "doctor", "inspect":
			return "envdr-operator"
		case "run":
			return "envdr-daemon"
		case "local":
			return ""
		}
	}
	return ""
}

// roleEnv is cleanEnv with the stand-in's credentials file and the role's profile ("" keeps
// the config's admin credentials).
func (s *suite) roleEnv(role string) []string {
	env := cleanEnv()
	if role == "" {
		return env
	}
	return append(env, "AWS_SHARED_CREDENTIALS_FILE="+s.env.CredentialsPath, "AWS_PROFILE="+role)
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ENVDR_") {
			env = append(env, kv)
		}
	}
	return env
}

// daemon is one `envdr run` process.
type daemon struct {
	s      *suite
	name   string
	cmd    *exec.Cmd
	done   chan struct{}
	exit   int
	admin  chan string // receives the admin address once, from the start-up log line
	mu     sync.Mutex
	addr   string
	acked  int
	events int // event outcome lines of any kind
}

// logLine is the part of the daemon's JSON log lines the tests read.
type logLine struct {
	Level   string          `json:"level"`
	Msg     string          `json:"msg"`
	ID      string          `json:"id"`
	Outcome string          `json:"outcome"`
	Reason  string          `json:"reason"`
	Admin   string          `json:"admin"`
	Regions json.RawMessage `json:"regions"` // a list at start-up, a map per event
	Error   string          `json:"error"`
}

// startDaemon starts `envdr run` on an ephemeral admin port, with extra arguments (e.g.
// --region R); it does not wait for it to be up.
func (s *suite) startDaemon(name string, extra ...string) *daemon {
	s.t.Helper()
	d := &daemon{s: s, name: name, done: make(chan struct{}), admin: make(chan string, 1)}
	onErr := func(b []byte) {
		var l logLine
		if json.Unmarshal(b, &l) != nil {
			return
		}
		switch {
		case l.Msg == "envdr run started":
			d.mu.Lock()
			d.addr = l.Admin
			d.mu.Unlock()
			d.admin <- l.Admin
		case l.Outcome != "":
			d.mu.Lock()
			d.events++
			if l.Outcome == "acked" {
				d.acked++
			}
			d.mu.Unlock()
			if l.Outcome == "acked" {
				s.mu.Lock()
				s.acks[l.ID]++
				s.mu.Unlock()
			}
		}
	}
	out, errb := s.newCapture(name+" (stdout)", nil), s.newCapture(name+" (stderr)", onErr)
	d.cmd = exec.Command(envdrBin, append([]string{"--config", s.cfgPath, "run", "--admin-addr", "127.0.0.1:0",
		"--wait-time", "1s", "--retry-base", "1s", "--log-level", "debug"}, extra...)...)
	d.cmd.Stdout, d.cmd.Stderr = out, errb
	d.cmd.Env = s.roleEnv("envdr-daemon")
	require.NoError(s.t, d.cmd.Start())
	go func() {
		err := d.cmd.Wait()
		d.exit = 0
		if ee, ok := err.(*exec.ExitError); ok {
			d.exit = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				d.exit = -int(ws.Signal())
			}
		}
		close(d.done)
	}()
	s.mu.Lock()
	s.daemons = append(s.daemons, d)
	s.mu.Unlock()
	return d
}

// waitUp waits for the daemon's start-up line and returns its admin address.
func (d *daemon) waitUp() string {
	d.s.t.Helper()
	select {
	case a := <-d.admin:
		d.admin <- a
		return a
	case <-d.done:
		d.s.t.Fatalf("%s exited during start-up (status %d)", d.name, d.status())
	case <-time.After(30 * time.Second):
		d.s.t.Fatalf("%s did not start within 30s", d.name)
	}
	return ""
}

// handled is how many event outcome lines the daemon logged.
func (d *daemon) handled() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.events
}

// status is the exit status once the process has ended (negative: killed by that signal),
// or 1000 while it runs.
func (d *daemon) status() int {
	select {
	case <-d.done:
		return d.exit
	default:
		return 1000
	}
}

func (d *daemon) alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process (and its output) to end.
func (d *daemon) kill() {
	if d.alive() {
		_ = d.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-d.done
}

// term sends SIGTERM and returns the exit status (graceful stop must be 0).
func (d *daemon) term(within time.Duration) int {
	d.s.t.Helper()
	if !d.alive() {
		d.s.t.Fatalf("%s is not running (status %d)", d.name, d.status())
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return d.exit
	case <-time.After(within):
		d.kill()
		d.s.t.Fatalf("%s did not stop within %s of SIGTERM", d.name, within)
	}
	return -1
}

// metrics fetches the daemon's /metrics and returns the sum of the samples of name whose labels
// include all of want.
func (d *daemon) metric(name string, want map[string]string) (float64, error) {
	d.mu.Lock()
	addr := d.addr
	d.mu.Unlock()
	if addr == "" {
		return 0, fmt.Errorf("%s: admin endpoint not up yet", d.name)
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return sumMetric(resp.Body, name, want)
}

// sumMetric adds the Prometheus text-format samples of name that carry all labels in want.
func sumMetric(r io.Reader, name string, want map[string]string) (float64, error) {
	var sum float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		labels := ""
		if strings.HasPrefix(rest, "{") {
			end := strings.Index(rest, "}")
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		if !strings.HasPrefix(rest, " ") {
			continue // a longer metric name with the same prefix
		}
		ok := true
		for k, v := range want {
			if !strings.Contains(","+labels+",", ","+k+"=\""+v+"\",") {
				ok = false
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// acked returns how many distinct envelope IDs of ids have been acknowledged by any daemon.
func (s *suite) ackedOf(ids []string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, id := range ids {
		if s.acks[id] > 0 {
			n++
		}
	}
	return n
}

func (s *suite) ackCount(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acks[id]
}

// waitAcked waits until every id has been acknowledged at least once.
func (s *suite) waitAcked(ids []string, within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for s.ackedOf(ids) < len(ids) {
		if time.Now().After(deadline) {
			s.t.Fatalf("only %d of %d events acknowledged within %s", s.ackedOf(ids), len(ids), within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sqs is a client of the queue's region (home), for producing events and reading the DLQ.
func (s *suite) sqs() *sqs.Client {
	home, err := s.topo.HomeRegion()
	require.NoError(s.t, err)
	return home.SQS()
}

// depth is the queue's visible + in-flight + delayed messages.
func (s *suite) depth() int {
	s.t.Helper()
	n, err := replicate.QueueDepth(context.Background(), s.sqs(), s.cfg.QueueURL)
	require.NoError(s.t, err)
	return n
}

// waitDrained waits until the queue is empty on two reads in a row.
func (s *suite) waitDrained(within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	empty := 0
	for empty < 2 {
		if time.Now().After(deadline) {
			s.t.Fatalf("queue not drained within %s (depth %d)", within, s.depth())
		}
		if s.depth() == 0 {
			empty++
		} else {
			empty = 0
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// send puts bodies on the queue in batches of 10.
func (s *suite) send(bodies ...string) {
	s.t.Helper()
	q := s.sqs()
	for len(bodies) > 0 {
		n := min(10, len(bodies))
		var entries []sqstypes.SendMessageBatchRequestEntry
		for i, b := range bodies[:n] {
			entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(b)})
		}
		out, err := q.SendMessageBatch(context.Background(), &sqs.SendMessageBatchInput{QueueUrl: aws.String(s.cfg.QueueURL), Entries: entries})
		require.NoError(s.t, err)
		require.Empty(s.t, out.Failed)
		bodies = bodies[n:]
	}
}

// dlqMessage is one message read from the DLQ.
type dlqMessage struct {
	body, reason, err string
}

// drainDLQ receives (and deletes) everything in the DLQ.
func (s *suite) drainDLQ() []dlqMessage {
	s.t.Helper()
	q := s.sqs()
	var all []dlqMessage
	for empty := 0; empty < 2; {
		out, err := q.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(s.cfg.DLQURL), MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: 60,
			MessageAttributeNames: []string{"All"},
		})
		require.NoError(s.t, err)
		if len(out.Messages) == 0 {
			empty++
			continue
		}
		for _, m := range out.Messages {
			dm := dlqMessage{body: aws.ToString(m.Body)}
			if a, ok := m.MessageAttributes["reason"]; ok {
				dm.reason = aws.ToString(a.StringValue)
			}
			if a, ok := m.MessageAttributes["error"]; ok {
				dm.err = aws.ToString(a.StringValue)
			}
			all = append(all, dm)
			_, err := q.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: aws.String(s.cfg.DLQURL), ReceiptHandle: m.ReceiptHandle})
			require.NoError(s.t, err)
		}
	}
	return all
}

// sealed is one envelope made by the test, with what the checks need to know about it.
type sealed struct {
	id    string
	file  []byte
	plain []byte
	dek   []byte
	hdr   *envelope.Header
	body  string // its replication event
}

// recordingGen hands out the home region's data keys and keeps a copy of each (test only), so
// the hygiene check knows every DEK to look for.
type recordingGen struct {
	gen envelope.KeyGenerator
	got *[]byte
}

func (g recordingGen) GenerateDataKey(ctx context.Context, ec envelope.Context) (*envelope.DataKey, error) {
	dk, err := g.gen.GenerateDataKey(ctx, ec)
	if err == nil {
		*g.got = bytes.Clone(dk.Plaintext)
	}
	return dk, err
}

// sealN seals n random plaintexts in-process in the home region (the producers' side; the
// processes under test are the daemons) and registers their DEKs and plaintexts as secrets.
func (s *suite) sealN(n int, user map[string]string) []*sealed {
	s.t.Helper()
	home, err := s.producer.HomeRegion()
	require.NoError(s.t, err)
	out := make([]*sealed, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				pt := make([]byte, 64+randInt(192))
				_, _ = rand.Read(pt)
				var dek []byte
				var buf bytes.Buffer
				hdr, err := envelope.Seal(context.Background(), &buf, bytes.NewReader(pt), recordingGen{home, &dek},
					envelope.SealOptions{Context: user, HomeRegion: home.Name})
				if err != nil {
					errs <- err
					continue
				}
				ev, err := envelope.NewEvent(hdr, time.Now(), "")
				if err == nil {
					var body []byte
					if body, err = envelope.EncodeEvent(ev); err == nil {
						out[i] = &sealed{id: hdr.RecordID(), file: buf.Bytes(), plain: pt, dek: dek, hdr: hdr, body: string(body)}
						s.secrets.add(dek)
						s.secrets.addSample(pt)
					}
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(s.t, err)
	}
	return out
}

func ids(es []*sealed) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.id
	}
	return out
}

func bodies(es []*sealed) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.body
	}
	return out
}

// store is region's replica of the records table, read through that region's endpoint.
func (s *suite) store(region string) *replicate.Store {
	r, err := s.topo.Region(region)
	require.NoError(s.t, err)
	return replicate.NewStore(s.cfg.Table, region, r.DynamoDB(), s.cfg.RegionNames())
}

// recordProblem checks e's record end to end and returns "" or what is wrong: the record
// exists in every region's replica, validates, carries e's context and commitment, has a
// verified wrap for every region, and each region's wrap, decrypted by that region's KMS
// alone, is exactly e's DEK.
func (s *suite) recordProblem(e *sealed) (lost bool, problem string) {
	ctx := context.Background()
	for _, region := range s.cfg.RegionNames() {
		rec, err := s.store(region).Get(ctx, e.id)
		if err != nil {
			return true, fmt.Sprintf("region %s: %v", region, err)
		}
		if err := rec.Validate(); err != nil {
			return false, fmt.Sprintf("region %s: %v", region, err)
		}
		if !rec.Context.Equal(e.hdr.Context) || !bytes.Equal(rec.Commitment, e.hdr.Commitment) {
			return false, fmt.Sprintf("region %s: context or commitment differs from the envelope's", region)
		}
		w := rec.Regions[region]
		if !w.Verified() {
			return true, fmt.Sprintf("region %s: no verified wrap (%+v)", region, w)
		}
		r, err := s.operator.Region(region)
		if err != nil {
			return false, err.Error()
		}
		dek, err := r.DecryptRaw(ctx, w.Wrapped, w.KeyARN, rec.Context.Map())
		if err != nil {
			return false, fmt.Sprintf("region %s: the wrap does not decrypt: %v", region, err)
		}
		if !bytes.Equal(dek, e.dek) {
			return false, fmt.Sprintf("region %s: the wrap holds another key", region)
		}
		envelope.Wipe(dek)
	}
	return false, ""
}

// checkRecords runs recordProblem over all of es in parallel and returns lost and corrupted
// counts, failing the test with the first few problems.
func (s *suite) checkRecords(es []*sealed) (lost, corrupted int) {
	s.t.Helper()
	// Every region's replica is read: let what was written elsewhere arrive first.
	s.env.SettleIfUp()
	var mu sync.Mutex
	var problems []string
	next := make(chan *sealed)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range next {
				l, p := s.recordProblem(e)
				if p == "" {
					continue
				}
				mu.Lock()
				if l {
					lost++
				} else {
					corrupted++
				}
				if len(problems) < 5 {
					problems = append(problems, e.id+": "+p)
				}
				mu.Unlock()
			}
		}()
	}
	for _, e := range es {
		next <- e
	}
	close(next)
	wg.Wait()
	for _, p := range problems {
		s.t.Errorf("record %s", p)
	}
	return lost, corrupted
}

// openThroughEachRegion opens e with `envdr open --region R` for every region and checks the
// plaintext.
func (s *suite) openThroughEachRegion(e *sealed) {
	s.t.Helper()
	in := filepath.Join(s.dir, e.id+".envdr")
	require.NoError(s.t, os.WriteFile(in, e.file, 0o600))
	for _, region := range s.cfg.RegionNames() {
		out := filepath.Join(s.dir, e.id+"."+region+".out")
		res := s.cli(nil, "open", "--region", region, in, out)
		require.Equalf(s.t, 0, res.code, "open %s through %s: %s", e.id, region, res.stderr)
		got, err := os.ReadFile(out)
		require.NoError(s.t, err)
		require.Truef(s.t, bytes.Equal(e.plain, got), "open %s through %s: wrong plaintext", e.id, region)
		require.NoError(s.t, os.Remove(out))
	}
}

// validEventsIn returns the DLQ messages that are valid replication events of es: those must
// never be dead-lettered.
func validEventsIn(dlq []dlqMessage, es []*sealed) []dlqMessage {
	known := map[string]bool{}
	for _, e := range es {
		known[e.id] = true
	}
	var bad []dlqMessage
	for _, m := range dlq {
		if ev, err := envelope.DecodeEvent([]byte(m.body)); err == nil && known[ev.ID] {
			bad = append(bad, m)
		}
	}
	return bad
}

func randInt(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		panic(err)
	}
	return int(v.Int64())
}

// report writes a figures table to .bench/<name> at the module root (git-ignored) and logs it.
func report(t *testing.T, name, text string) {
	t.Helper()
	t.Log("\n" + text)
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return
		}
		dir = parent
	}
	bench := filepath.Join(dir, ".bench")
	require.NoError(t, os.MkdirAll(bench, 0o755))
	stamp := time.Now().UTC().Format(time.RFC3339)
	mode := "short"
	if long() {
		mode = "long"
	}
	require.NoError(t, os.WriteFile(filepath.Join(bench, name), []byte(fmt.Sprintf("# %s (%s form, %s)\n%s\n", name, mode, stamp, text)), 0o644))
}
