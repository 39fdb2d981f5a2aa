package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"go.yaml.in/yaml/v3"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/localaws/localtest"
)

// TestMain lets testscript run the envdr binary in-process as the "envdr" command.
func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		// The test binary re-executed as envdr itself (subprocess tests: signals, stderr).
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(testscript.RunMain(m, map[string]func() int{
		"envdr": func() int { return run(os.Args[1:]) },
	}))
}

// TestScripts runs testdata/script/*.txtar against one isolated three-region stand-in.
// ENVDR_CONFIG points every script at it.
func TestScripts(t *testing.T) {
	env := localtest.New(t)
	cfgPath := filepath.Join(t.TempDir(), "envdr.yaml")
	b, err := yaml.Marshal(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			e.Setenv("ENVDR_CONFIG", cfgPath)
			// The stand-in's profiles: a script picks a role with `env AWS_PROFILE=envdr-...`;
			// without one, the config's admin credentials are used.
			e.Setenv("AWS_SHARED_CREDENTIALS_FILE", env.CredentialsPath)
			e.Setenv("AWS_CONFIG_FILE", filepath.Join(e.WorkDir, "no-aws-config"))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"tamper":   cmdTamper,
			"exitcode": cmdExitCode,
			"hardlink": cmdHardlink,
			"jsonhas":  cmdJSONHas,
		},
	})
}

// cmdExitCode runs envdr and checks its exit status: exitcode N envdr ARGS...
func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N envdr ARGS...")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	path, err := exec.LookPath(args[1])
	if err != nil {
		// testscript puts its commands on the script's PATH, not the test's.
		path = filepath.Join(filepath.Dir(ts.MkAbs("x")), args[1])
		for _, dir := range filepath.SplitList(ts.Getenv("PATH")) {
			if p := filepath.Join(dir, args[1]); fileExists(p) {
				path = p
				break
			}
		}
	}
	cmd := exec.Command(path, args[2:]...)
	cmd.Dir = ts.MkAbs(".")
	// ENVDR_LOCAL_ADMIN of the caller's shell must not send local commands to another stand-in.
	cmd.Env = append(os.Environ(), "ENVDR_CONFIG="+ts.Getenv("ENVDR_CONFIG"), "PATH="+ts.Getenv("PATH"), "ENVDR_LOCAL_ADMIN=",
		"ENVDR_OUTPUT="+ts.Getenv("ENVDR_OUTPUT"), "ENVDR_LOG_FORMAT="+ts.Getenv("ENVDR_LOG_FORMAT"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	got := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("run %s: %v", args[1], err)
	}
	ts.Logf("exit %d, stderr: %s", got, stderr.String())
	if got != want {
		ts.Fatalf("exit status %d, want %d", got, want)
	}
	if want != 0 && !bytes.HasPrefix(stderr.Bytes(), []byte("envdr: error: ")) {
		ts.Fatalf("stderr does not start with %q: %q", "envdr: error: ", stderr.String())
	}
}

// cmdHardlink makes NEW a hard link to OLD: hardlink OLD NEW.
func cmdHardlink(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: hardlink OLD NEW")
	}
	ts.Check(os.Link(ts.MkAbs(args[0]), ts.MkAbs(args[1])))
}

// cmdJSONHas parses the last command's stdout as one JSON object and checks each KEY is a
// member (a.b for nested members), or with KEY=VALUE that its value prints as VALUE:
// jsonhas KEY[=VALUE]...
func cmdJSONHas(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: jsonhas KEY[=VALUE]...")
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(ts.ReadFile("stdout")), &doc); err != nil {
		ts.Fatalf("stdout is not one JSON object: %v", err)
	}
	for _, a := range args {
		key, want, hasWant := strings.Cut(a, "=")
		var v any = doc
		for _, part := range strings.Split(key, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				ts.Fatalf("%s: %v is not an object", key, v)
			}
			if v, ok = m[part]; !ok {
				ts.Fatalf("JSON has no member %s", key)
			}
		}
		if got := fmt.Sprint(v); hasWant && got != want {
			ts.Fatalf("JSON member %s is %s, want %s", key, got, want)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// cmdTamper writes a corrupted copy of an envelope: tamper KIND IN OUT [OTHER]. Kinds:
// header-flip, body-flip, tag-flip, truncate-header, truncate-body, truncate-final, append,
// swap-chunks, dup-chunk, drop-chunk, edit-context, swap-wrap (takes OTHER's wrapped DEK).
func cmdTamper(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 {
		ts.Fatalf("usage: tamper KIND IN OUT [OTHER]")
	}
	kind, in, out := args[0], ts.MkAbs(args[1]), ts.MkAbs(args[2])
	b, err := os.ReadFile(in)
	ts.Check(err)
	hdr, n, err := envelope.ParseHeader(b)
	ts.Check(err)
	body := b[n:]
	enc := hdr.ChunkSize + envelope.TagSize
	var chunks [][]byte
	for off := 0; off < len(body); off += enc {
		chunks = append(chunks, append([]byte(nil), body[off:min(off+enc, len(body))]...))
	}
	if len(chunks) < 3 {
		ts.Fatalf("tamper needs an envelope of at least 3 chunks (seal with --chunk-size 64)")
	}
	join := func(h []byte, cs [][]byte) []byte {
		res := append([]byte(nil), h...)
		for _, c := range cs {
			res = append(res, c...)
		}
		return res
	}
	res := append([]byte(nil), b...)
	switch kind {
	case "header-flip":
		res[n/2] ^= 0x01
	case "body-flip":
		res[n+3] ^= 0x80
	case "tag-flip":
		res[n+enc-1] ^= 0x01
	case "truncate-header":
		res = res[:n-5]
	case "truncate-body":
		res = res[:n+enc+10]
	case "truncate-final":
		res = join(b[:n], chunks[:len(chunks)-1])
	case "append":
		res = append(res, []byte("appended")...)
	case "swap-chunks":
		chunks[0], chunks[1] = chunks[1], chunks[0]
		res = join(b[:n], chunks)
	case "dup-chunk":
		res = join(b[:n], append([][]byte{chunks[0]}, chunks...))
	case "drop-chunk":
		res = join(b[:n], append([][]byte{chunks[0]}, chunks[2:]...))
	case "edit-context":
		user := hdr.Context.User()
		user["app"] = user["app"] + "-edited"
		c, err := envelope.NewContext(hdr.Context.ID(), user)
		ts.Check(err)
		h2 := *hdr
		h2.Context = c
		hb, err := h2.MarshalBinary()
		ts.Check(err)
		res = join(hb, chunks)
	case "swap-wrap":
		if len(args) != 4 {
			ts.Fatalf("swap-wrap needs OTHER")
		}
		ob, err := os.ReadFile(ts.MkAbs(args[3]))
		ts.Check(err)
		other, _, err := envelope.ParseHeader(ob)
		ts.Check(err)
		h2 := *hdr
		h2.WrappedDEK = other.WrappedDEK
		hb, err := h2.MarshalBinary()
		ts.Check(err)
		res = join(hb, chunks)
	default:
		ts.Fatalf("unknown tamper kind %q", kind)
	}
	ts.Check(os.WriteFile(out, res, 0o644))
}
