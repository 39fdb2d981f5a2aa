package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
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

// output writes OUT through a temporary file in the same directory, renamed into place only on
// success, so a failure never leaves a partial output file. "-" is stdout. The file is written
// through durableFile: writeback starts while the rest is still being encrypted, and commit
// fsyncs the file, then the directory.
type output struct {
	w    io.Writer
	f    *os.File
	d    *durableFile
	path string
}

func createOutput(path string) (*output, error) {
	if path == "-" {
		growPipe(os.Stdout)
		if po := newPipeOut(os.Stdout); po != nil {
			return &output{w: po}, nil
		}
		return &output{w: os.Stdout}, nil
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".envdr-tmp-*")
	if err != nil {
		return nil, err
	}
	d := newDurableFile(f)
	return &output{w: d, f: f, d: d, path: path}, nil
}

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

// commit syncs and renames the temporary file into place.
func (o *output) commit() error {
	if o.f == nil {
		return nil
	}
	if err := o.f.Sync(); err != nil {
		o.abort()
		return err
	}
	if err := o.f.Close(); err != nil {
		o.abort()
		return err
	}
	if err := os.Rename(o.f.Name(), o.path); err != nil {
		_ = os.Remove(o.f.Name())
		return err
	}
	// The rename is durable only once the directory entry is: fsync the parent directory.
	return syncDir(filepath.Dir(o.path))
}

// syncDir fsyncs a directory, so a rename into it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// abort removes the temporary file; safe after commit.
func (o *output) abort() {
	if o.f == nil {
		return
	}
	_ = o.f.Close()
	_ = os.Remove(o.f.Name())
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
