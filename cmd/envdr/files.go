package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/replicate"
)

// openInput opens IN, or stdin for "-".
func openInput(path string) (io.ReadCloser, error) {
	if path == "-" {
		growPipe(os.Stdin)
		return io.NopCloser(os.Stdin), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// output writes OUT through a temporary file in the same directory, put in place only on
// success, so a failure never leaves a partial output file. "-" is stdout. The file is written
// through durableFile: writeback starts while the rest is still being encrypted, and commit
// fsyncs the file, then the directory.
type output struct {
	w     io.Writer
	f     *os.File
	d     *durableFile
	pipe  *pipeOut
	count *countingWriter
	path  string
	force bool
	// special is OUT opened as it is: a device or FIFO, closed by commit and abort.
	special *os.File
}

// outputRules say what an output may never do without --force (docs/OUTPUT.md).
type outputRules struct {
	// force lifts every refusal below (an existing OUT is replaced, IN may be replaced by
	// its own result: the input is read in full before the rename).
	force bool
	// in is the IN argument: OUT may not be the same file, under any name or link.
	in string
	// binary: the output is binary whatever it holds (seal); otherwise (open) its first bytes
	// decide whether it may go to a terminal.
	binary bool
	// cmd names the command in a refusal's "(see envdr X --help)".
	cmd string
}

// stdoutIsTerminal says whether stdout is a terminal; a variable so tests can pretend.
var stdoutIsTerminal = func() bool { return term.IsTerminal(int(os.Stdout.Fd())) }

// checkOutput refuses, before anything is read or any KMS call is made, an OUT that would
// destroy data: an existing file, or IN itself. These are usage errors (exit 2): the command
// line says to do something envdr will not do without --force.
func checkOutput(path string, r outputRules) error {
	if path == "-" || r.force {
		return nil
	}
	lst, err := os.Lstat(path)
	if err != nil {
		return nil // nothing there (or nothing we may look at: creating will say why)
	}
	st, err := os.Stat(path)
	if err == nil && r.in != "" && r.in != "-" {
		if ist, err := os.Stat(r.in); err == nil && os.SameFile(st, ist) {
			return usageError("output %s is the input %s (the same file): refusing to write over it; choose another OUT, or --force (see %s --help)", path, r.in, r.cmd)
		}
	}
	switch {
	case err == nil && st.IsDir():
		return usageError("output %s is a directory; name a file (see %s --help)", path, r.cmd)
	case err == nil && special(st):
		return nil // a device or pipe (/dev/null, a FIFO): written to as it is, nothing is replaced
	case lst.Mode()&fs.ModeSymlink != 0 && err != nil:
		return usageError("output %s is a dangling symbolic link: refusing to replace it; remove it, choose another OUT, or --force (see %s --help)", path, r.cmd)
	}
	return usageError("output %s exists: refusing to overwrite it; remove it, choose another OUT, or --force (see %s --help)", path, r.cmd)
}

// special reports a file that is neither regular nor a directory: a device, a FIFO, a socket.
func special(st fs.FileInfo) bool { return !st.Mode().IsRegular() && !st.IsDir() }

func createOutput(path string, r outputRules) (*output, error) {
	if err := checkOutput(path, r); err != nil {
		return nil, err
	}
	if path == "-" {
		var w io.Writer = os.Stdout
		if !r.force && stdoutIsTerminal() {
			if r.binary {
				return nil, usageError("refusing to write a binary envelope to the terminal: redirect stdout, name an OUT file, or --force (see %s --help)", r.cmd)
			}
			w = &terminalGuard{w: os.Stdout, cmd: r.cmd}
		}
		growPipe(os.Stdout)
		if po := newPipeOut(os.Stdout); po != nil && w == os.Stdout {
			return &output{w: po, pipe: po}, nil
		}
		c := &countingWriter{w: w}
		return &output{w: c, count: c}, nil
	}
	if st, err := os.Stat(path); err == nil && special(st) {
		// /dev/null or a FIFO: no temporary file (renaming one over a device would replace it).
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		c := &countingWriter{w: f}
		return &output{w: c, count: c, special: f}, nil
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".envdr-tmp-*")
	if err != nil {
		// The temporary file's name means nothing to the user: name OUT and its directory.
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot create %s (in directory %s): %w", path, dir, err)
	}
	d := newDurableFile(f)
	return &output{w: d, f: f, d: d, path: path, force: r.force}, nil
}

// bytes is how many bytes were written to the output.
func (o *output) bytes() int64 {
	switch {
	case o.d != nil:
		return o.d.off
	case o.pipe != nil:
		return o.pipe.put
	case o.count != nil:
		return o.count.n
	}
	return 0
}

// userError rewrites an error that names the temporary file to name OUT instead.
func (o *output) userError(err error) error {
	if err == nil || o.f == nil {
		return err
	}
	tmp := o.f.Name()
	if !strings.Contains(err.Error(), tmp) {
		return err
	}
	return &renamedError{msg: strings.ReplaceAll(err.Error(), tmp, o.path), err: err}
}

// renamedError is an error whose message was rewritten; errors.Is/As still see the original.
type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }

// preallocate reserves size bytes of the output file (no-op for stdout).
func (o *output) preallocate(size int64) {
	if o.d != nil {
		o.d.preallocate(size)
	}
}

// preallocateAfterFirst reserves n bytes beyond the output's first Write (seal's header).
func (o *output) preallocateAfterFirst(n int64) {
	if o.d != nil {
		o.d.preallocateAfterFirst(n)
	}
}

// commit syncs the temporary file and puts it in place. Without --force it is linked in, which
// fails if OUT appeared meanwhile, so a file created after checkOutput is not overwritten
// either; with --force (or where hard links are not supported) it is renamed over OUT.
func (o *output) commit() error {
	if o.special != nil {
		return o.special.Close()
	}
	if o.f == nil {
		return nil
	}
	if err := o.f.Sync(); err != nil {
		o.abort()
		return o.userError(err)
	}
	if err := o.f.Close(); err != nil {
		o.abort()
		return o.userError(err)
	}
	if err := o.place(); err != nil {
		_ = os.Remove(o.f.Name())
		return err
	}
	// The rename is durable only once the directory entry is: fsync the parent directory.
	return syncDir(filepath.Dir(o.path))
}

func (o *output) place() error {
	tmp := o.f.Name()
	if !o.force {
		err := os.Link(tmp, o.path)
		switch {
		case err == nil:
			return os.Remove(tmp)
		case errors.Is(err, fs.ErrExist):
			return usageError("output %s appeared while envdr was writing it: refusing to overwrite it; the result was discarded", o.path)
		}
		// No hard links here (some network and FAT filesystems): rename, having looked once more.
		if _, err := os.Lstat(o.path); err == nil {
			return usageError("output %s appeared while envdr was writing it: refusing to overwrite it; the result was discarded", o.path)
		}
	}
	if err := os.Rename(tmp, o.path); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) {
			err = le.Err
		}
		return fmt.Errorf("cannot put %s in place: %w", o.path, err)
	}
	return nil
}

// abort removes the temporary file; safe after commit.
func (o *output) abort() {
	if o.special != nil {
		_ = o.special.Close()
	}
	if o.f == nil {
		return
	}
	_ = o.f.Close()
	_ = os.Remove(o.f.Name())
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// terminalGuard refuses to start writing binary plaintext to a terminal (as age does): the first
// write is sniffed and, unless it is text, nothing is written and open fails. Text is let through.
type terminalGuard struct {
	w       io.Writer
	cmd     string
	checked bool
}

func (t *terminalGuard) Write(p []byte) (int, error) {
	if !t.checked && len(p) > 0 {
		t.checked = true
		if !strings.HasPrefix(http.DetectContentType(p), "text/") {
			return 0, usageError("refusing to write binary plaintext to the terminal: redirect stdout, name an OUT file, or --force (see %s --help)", t.cmd)
		}
	}
	return t.w.Write(p)
}

// parseContextFlags turns repeated k=v flags into a map; a bad pair is a usage error.
func parseContextFlags(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usageError("--context %q: want key=value", p)
		}
		if _, dup := m[k]; dup {
			return nil, usageError("--context key %q given twice", k)
		}
		m[k] = v
	}
	return m, nil
}

// readHeaderKeep reads an envelope's header from r and returns it with a reader that yields the
// whole stream again from its first byte (the header bytes read are replayed).
func readHeaderKeep(r io.Reader) (*envelope.Header, io.Reader, error) {
	var buf bytes.Buffer
	hdr, err := envelope.ReadHeader(io.TeeReader(r, &buf))
	if err != nil {
		return nil, nil, err
	}
	return hdr, io.MultiReader(&buf, r), nil
}

// addJobsFlag adds --jobs to seal and open: how many cores encrypt or authenticate chunks.
func addJobsFlag(cmd *cobra.Command, p *int) {
	cmd.Flags().IntVar(p, "jobs", runtime.GOMAXPROCS(0),
		fmt.Sprintf("chunks are sealed or authenticated on this many cores (1..%d; default GOMAXPROCS; buffers about 2N+1 MiB with the default chunk size); output order and release rules do not change", envelope.MaxJobs))
}

func checkJobsFlag(jobs int) error {
	if jobs < 1 || jobs > envelope.MaxJobs {
		return usageError("--jobs %d: want 1..%d", jobs, envelope.MaxJobs)
	}
	return nil
}

// replicationPolicy is the config's replication policy.
func replicationPolicy(cfg *config.Config) replicate.AckRule {
	return replicate.AckRuleFromConfig(cfg)
}

// addTrustAnyKeyFlag adds --trust-any-key to an unwrapping command (open, verify, drill,
// rewrap): it turns off the strict key check, and says so loudly on stderr when set.
func addTrustAnyKeyFlag(cmd *cobra.Command, p *bool) {
	cmd.Flags().BoolVar(p, "trust-any-key", false,
		"DANGEROUS: unwrap under whatever key the envelope header or record names (even none: KMS discovery), not only the configured and trusted_keys keys")
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if *p {
			fmt.Fprintf(c.ErrOrStderr(), "envdr: WARNING: --trust-any-key: unwrapping under ANY key the unauthenticated header or record names, "+
				"not only the configured keys; whoever controls such a key chooses the data key and so the plaintext. "+
				"List the key in trusted_keys instead.\n")
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

// checkReportPaths refuses, before a drill, game day or verify starts, a --report PATH whose PATH.md,
// PATH.html or PATH.json already exists, unless --force: a report is evidence, and yesterday's
// is not to be replaced by accident.
func checkReportPaths(path string, force bool, cmd string, jsonOnly bool) error {
	if path == "" || force {
		return nil
	}
	md, html, js := recovery.ReportPaths(path)
	paths := []string{md, html, js}
	if jsonOnly { // verify's reports are PATH.json alone
		paths = []string{js}
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return usageError("report file %s exists: refusing to overwrite it; choose another --report PATH, or --force (see %s --help)", p, cmd)
		}
	}
	return nil
}
