package localaws

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Backends are the shared emulators every region's proxies forward to, and the admin endpoint of
// the `envdr local serve` that started them. `envdr local serve` writes them to
// local/backends.json; package localtest reads that file.
type Backends struct {
	SQS      string `json:"sqs"`
	DynamoDB string `json:"dynamodb"`
	// S3 is fauxqs' S3 (the same server as SQS); empty in files written before S3: then SQS.
	S3    string `json:"s3,omitempty"`
	Admin string `json:"admin,omitempty"`
	// PID is the serve process.
	PID int `json:"pid,omitempty"`
	// File is where FindBackends read these from; the serve's envdr.yaml is next to it.
	File string `json:"-"`
}

// BackendsFile is where `envdr local serve` records its backends, relative to the repository.
const BackendsFile = "local/backends.json"

// EnvBackends names a backends file explicitly (overrides the search upwards from the cwd).
const EnvBackends = "ENVDR_LOCAL_BACKENDS"

// WriteBackends writes b atomically to path.
func WriteBackends(path string, b Backends) error {
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'))
}

// FindBackends locates and reads the backends file ($ENVDR_LOCAL_BACKENDS, else local/backends.json
// in the working directory or any parent) and checks that both backends answer.
func FindBackends() (Backends, error) {
	path := os.Getenv(EnvBackends)
	if path == "" {
		dir, err := os.Getwd()
		if err != nil {
			return Backends{}, err
		}
		for {
			p := filepath.Join(dir, BackendsFile)
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return Backends{}, fmt.Errorf("no %s in the working directory or its parents", BackendsFile)
			}
			dir = parent
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Backends{}, err
	}
	var b Backends
	if err := json.Unmarshal(data, &b); err != nil {
		return Backends{}, fmt.Errorf("%s: %w", path, err)
	}
	b.File = path
	for _, u := range []string{b.SQS, b.DynamoDB} {
		if err := dialable(u); err != nil {
			return Backends{}, fmt.Errorf("%s names %s, which does not answer: %w", path, u, err)
		}
	}
	return b, nil
}

func dialable(rawURL string) error {
	host := strings.TrimPrefix(strings.TrimPrefix(rawURL, "http://"), "https://")
	c, err := net.DialTimeout("tcp", host, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// Tools locates the backends installed by scripts/localaws-install.sh.
type Tools struct {
	Dir         string // .tools/localaws
	Node        string
	FauxqsMain  string
	DynamoDBJar string
	// DynamoDBLauncher is the directory of the compiled launcher class that pins DynamoDB Local
	// to 127.0.0.1; "" when the installer found no JDK (DynamoDB Local then binds all interfaces).
	DynamoDBLauncher string
}

// LoadTools reads dir/paths.json written by the installer.
func LoadTools(dir string) (Tools, error) {
	data, err := os.ReadFile(filepath.Join(dir, "paths.json"))
	if err != nil {
		return Tools{}, fmt.Errorf("local stand-in tools not installed in %s (run make local-up or scripts/localaws-install.sh): %w", dir, err)
	}
	var p struct {
		Node, Fauxqs string
		DynamoDBJar  string `json:"dynamodb_jar"`
		Launcher     string `json:"dynamodb_launcher"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return Tools{}, fmt.Errorf("%s/paths.json: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Tools{}, err
	}
	t := Tools{
		Dir:         abs,
		Node:        filepath.Join(abs, p.Node),
		FauxqsMain:  filepath.Join(abs, p.Fauxqs),
		DynamoDBJar: filepath.Join(abs, p.DynamoDBJar),
	}
	files := []string{t.Node, t.FauxqsMain, t.DynamoDBJar}
	if p.Launcher != "" {
		t.DynamoDBLauncher = filepath.Join(abs, p.Launcher)
		files = append(files, filepath.Join(t.DynamoDBLauncher, "LoopbackDynamoDB.class"))
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return Tools{}, fmt.Errorf("local stand-in tools incomplete (re-run scripts/localaws-install.sh): %w", err)
		}
	}
	return t, nil
}

// Process is a backend child process in its own process group.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the exit error, after Done.
func (p *Process) Err() error { return p.err }

// Stop terminates the process group (SIGTERM, then SIGKILL after grace) and waits.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// startProcess starts a child that dies with us: its own process group (so Stop reaches
// anything it spawns) and SIGKILL when our thread exits (Pdeathsig), in case we are killed.
func startProcess(name string, log io.Writer, dir string, env []string, argv ...string) (*Process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// childEnv is the environment for backends: ours without AWS settings that could change their
// behaviour (a CA bundle, endpoints, profiles).
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "NODE_OPTIONS=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// StartFauxqs starts fauxqs on 127.0.0.1:port, in memory (its persistence mode breaks
// ChangeMessageVisibility).
func StartFauxqs(t Tools, port int, log io.Writer) (*Process, error) {
	return startProcess("fauxqs", log, t.Dir,
		childEnv("FAUXQS_PORT="+strconv.Itoa(port), "FAUXQS_LOGGER=false", "NODE_NO_WARNINGS=1"),
		t.Node, t.FauxqsMain)
}

// StartDynamoDB starts DynamoDB Local on 127.0.0.1:port with its databases in dbPath: one per
// (access key, region), so every region has its own replica (GlobalTables replicates between
// them). DynamoDB Local's -inMemory mode requires -sharedDb (one store for every region), so
// an in-memory stand-in puts dbPath on a RAM disk (MemoryDBDir) instead.
func StartDynamoDB(t Tools, port int, dbPath string, log io.Writer) (*Process, error) {
	jarDir := filepath.Dir(t.DynamoDBJar)
	args := []string{
		"java", "-Xms64m", "-XX:+UseSerialGC",
		"-Djava.library.path=" + filepath.Join(jarDir, "DynamoDBLocal_lib"),
	}
	if t.DynamoDBLauncher != "" {
		cp := []string{t.DynamoDBJar, filepath.Join(jarDir, "DynamoDBLocal_lib", "*"), t.DynamoDBLauncher}
		args = append(args, "-cp", strings.Join(cp, string(os.PathListSeparator)), "LoopbackDynamoDB")
	} else {
		args = append(args, "-jar", t.DynamoDBJar)
	}
	args = append(args, "-port", strconv.Itoa(port), "-disableTelemetry", "-dbPath", dbPath)
	return startProcess("dynamodb-local", log, jarDir, childEnv(), args...)
}

// MemoryDBDir makes a fresh directory for DynamoDB Local's databases that lives in memory where
// the machine has a RAM disk (/dev/shm), else in the temp directory. The caller removes it.
func MemoryDBDir() (string, error) {
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	return os.MkdirTemp(base, "envdr-dynamodb-")
}

// WaitHTTP polls url until it answers any HTTP response, the process exits or ctx ends.
func WaitHTTP(ctx context.Context, url string, p *Process) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := c.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer on %s: %w", p.Name, url, ctx.Err())
		case <-p.Done():
			return fmt.Errorf("%s exited before answering on %s: %v", p.Name, url, p.Err())
		case <-tick.C:
		}
	}
}

func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return nil
}
