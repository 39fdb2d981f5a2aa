package envelope_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
)

// Known-answer vectors: testdata/vectors/*.txt, regenerated with `go generate ./envelope`
// (which runs this test with -update). Each file is a few "key: value" lines, a blank line and
// the envelope in base64:
//
//	expect: success | auth failure | truncated | trailing data | context mismatch |
//	        commitment mismatch | unknown version | bad header
//	decode: ok | error          whether the header alone parses
//	dek: hex                    the DEK the unwrapper hands back (test-only keys)
//	open-context: {json}        optional OpenOptions.Context
//	payload-size, payload-sha256: the plaintext that was sealed
//	output-size: bytes Open must release (authentic chunks before the failure)

var update = flag.Bool("update", false, "regenerate testdata/vectors")

const vectorDir = "testdata/vectors"

type vector struct {
	name        string
	expect      string
	comment     string
	decodeOK    bool
	dek         []byte
	openContext map[string]string
	payloadSize int
	outputSize  int
	file        []byte
}

var expectErr = map[string]error{
	"success":             nil,
	"auth failure":        envelope.ErrAuth,
	"truncated":           envelope.ErrTruncated,
	"trailing data":       envelope.ErrTrailingData,
	"context mismatch":    envelope.ErrContextMismatch,
	"commitment mismatch": envelope.ErrCommitmentMismatch,
	"unknown version":     envelope.ErrUnknownVersion,
	"bad header":          envelope.ErrBadHeader,
}

func (v vector) marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "expect: %s\n", v.expect)
	fmt.Fprintf(&b, "comment: %s\n", v.comment)
	if v.decodeOK {
		b.WriteString("decode: ok\n")
	} else {
		b.WriteString("decode: error\n")
	}
	fmt.Fprintf(&b, "dek: %x\n", v.dek)
	if v.openContext != nil {
		j, _ := json.Marshal(v.openContext)
		fmt.Fprintf(&b, "open-context: %s\n", j)
	}
	sum := sha256.Sum256(payload(v.payloadSize))
	fmt.Fprintf(&b, "payload-size: %d\npayload-sha256: %x\noutput-size: %d\n\n", v.payloadSize, sum, v.outputSize)
	enc := base64.StdEncoding.EncodeToString(v.file)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\n")
	return b.Bytes()
}

func parseVector(t *testing.T, name string, data []byte) vector {
	t.Helper()
	v := vector{name: name}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var body strings.Builder
	inBody := false
	var sum string
	for sc.Scan() {
		line := sc.Text()
		if inBody {
			body.WriteString(line)
			continue
		}
		if line == "" {
			inBody = true
			continue
		}
		k, val, ok := strings.Cut(line, ": ")
		require.True(t, ok, "bad line %q", line)
		var err error
		switch k {
		case "expect":
			v.expect = val
			_, known := expectErr[val]
			require.True(t, known, "unknown expect %q", val)
		case "comment":
			v.comment = val
		case "decode":
			v.decodeOK = val == "ok"
		case "dek":
			v.dek, err = hex.DecodeString(val)
		case "open-context":
			err = json.Unmarshal([]byte(val), &v.openContext)
		case "payload-size":
			v.payloadSize, err = strconv.Atoi(val)
		case "payload-sha256":
			sum = val
		case "output-size":
			v.outputSize, err = strconv.Atoi(val)
		default:
			t.Fatalf("unknown key %q", k)
		}
		require.NoError(t, err, "line %q", line)
	}
	require.NoError(t, sc.Err())
	got := sha256.Sum256(payload(v.payloadSize))
	require.Equal(t, sum, hex.EncodeToString(got[:]), "payload-sha256 does not match the test stream")
	var err error
	v.file, err = base64.StdEncoding.DecodeString(body.String())
	require.NoError(t, err)
	return v
}

// generateVectors builds every vector deterministically from fixed DEKs, salts and payloads.
func generateVectors(t testing.TB) []vector {
	dek := testDEK(1)
	const cs = 64
	enc := cs + envelope.TagSize

	type spec struct {
		id     string
		user   map[string]string
		chunk  int
		size   int
		shared string // record ID for a shared-key header
	}
	build := func(s spec) ([]byte, *envelope.Header) {
		id := s.id
		ctxID := id
		if s.shared != "" {
			ctxID = s.shared
		}
		hdr := &envelope.Header{
			ID: id, SharedKey: s.shared != "", ChunkSize: s.chunk, Salt: testSalt(id),
			HomeRegion: testRegion, KeyARN: testARN, WrappedDEK: []byte("test wrap of " + ctxID),
			Context: mustContext(t, ctxID, s.user),
		}
		return sealWith(t, dek, hdr, payload(s.size)), hdr
	}
	ok := func(name, comment string, s spec) vector {
		f, _ := build(s)
		return vector{name: name, expect: "success", comment: comment, decodeOK: true, dek: dek,
			payloadSize: s.size, outputSize: s.size, file: f}
	}
	var vs []vector
	vs = append(vs,
		ok("success_empty", "empty payload: one final chunk holding only a tag", spec{id: "vec-empty", chunk: cs}),
		ok("success_short", "one short final chunk", spec{id: "vec-short", chunk: cs, size: 10}),
		ok("success_one_full", "one full chunk, which is the final one", spec{id: "vec-one-full", chunk: cs, size: cs}),
		ok("success_multi", "three full chunks and a short final one", spec{id: "vec-multi", chunk: cs, size: 3*cs + 8}),
		ok("success_multi_exact", "four full chunks, the last one final", spec{id: "vec-multi-exact", chunk: cs, size: 4 * cs}),
		ok("success_chunk_1k", "1 KiB chunks", spec{id: "vec-1k", chunk: 1024, size: 3000}),
		ok("success_shared_key", "shared-key header: envdr:id names the cache entry, not the envelope",
			spec{id: "vec-shared", chunk: cs, size: 100, shared: "dk-0123456789abcdef"}),
	)
	userCtx := map[string]string{"app": "billing", "tenant": "t-42", "zone": "façade ✓"}
	v := ok("success_context", "user context; open checks it", spec{id: "vec-ctx", user: userCtx, chunk: cs, size: 150})
	v.openContext = userCtx
	vs = append(vs, v)

	base, _ := build(spec{id: "vec-base", chunk: cs, size: 3*cs + 8})
	h, chunks, hdr := splitEnvelope(t, base)
	hl := len(h)
	// The expectation follows from the vector's name prefix.
	prefixes := []struct{ prefix, expect string }{
		{"tag_failure", "auth failure"}, {"truncated", "truncated"}, {"reordered", "auth failure"},
		{"duplicated", "auth failure"}, {"dropped", "auth failure"}, {"appended_after_short", "auth failure"},
		{"unknown_version", "unknown version"}, {"bad_header", "bad header"},
	}
	fail := func(name, comment string, file []byte, out int, decodeOK bool) vector {
		expect := ""
		for _, p := range prefixes {
			if strings.HasPrefix(name, p.prefix) {
				expect = p.expect
			}
		}
		require.NotEmpty(t, expect, name)
		return vector{name: name, expect: expect, comment: comment, decodeOK: decodeOK, dek: dek,
			payloadSize: 3*cs + 8, outputSize: out, file: file}
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	vs = append(vs,
		fail("tag_failure_body", "bit flipped in chunk 1's ciphertext", flip(base, hl+enc+3), cs, true),
		fail("tag_failure_tag", "bit flipped in the final chunk's tag", flip(base, len(base)-1), 3*cs, true),
		fail("tag_failure_salt", "bit flipped in the header's salt (header hash and chunk key change)", flip(base, 20), 0, true),
		fail("truncated_boundary", "input ends after two full chunks", base[:hl+2*enc], cs, true),
		fail("truncated_in_tag", "input ends 5 bytes into chunk 2", base[:hl+2*enc+5], 2*cs, true),
		fail("truncated_no_chunks", "header only", base[:hl], 0, true),
		fail("truncated_header", "input ends inside the header", base[:hl-3], 0, false),
		fail("reordered", "chunks 0 and 1 swapped", join(h, chunks[1], chunks[0], chunks[2], chunks[3]), 0, true),
		fail("duplicated", "chunk 0 repeated", join(h, chunks[0], chunks[0], chunks[1], chunks[2], chunks[3]), cs, true),
		fail("dropped", "chunk 1 removed", join(h, chunks[0], chunks[2], chunks[3]), cs, true),
	)
	exact, _ := build(spec{id: "vec-exact", chunk: cs, size: 2 * cs})
	eh, echunks, _ := splitEnvelope(t, exact)
	vs = append(vs,
		vector{name: "appended_bytes", expect: "trailing data", comment: "7 bytes after a full final chunk",
			decodeOK: true, dek: dek, payloadSize: 2 * cs, outputSize: cs, file: join(exact, []byte("garbage"))},
		vector{name: "appended_chunk", expect: "trailing data", comment: "the final chunk repeated",
			decodeOK: true, dek: dek, payloadSize: 2 * cs, outputSize: cs, file: join(eh, echunks[0], echunks[1], echunks[1])},
		fail("appended_after_short", "bytes after a short final chunk: the reader cannot find the boundary, tag fails",
			join(base, []byte{0}), 3*cs, true),
	)
	v = ok("wrong_context", "open expects tenant t-43, the envelope says t-42", spec{id: "vec-ctx", user: userCtx, chunk: cs, size: 150})
	v.expect, v.outputSize = "context mismatch", 0
	v.openContext = map[string]string{"app": "billing", "tenant": "t-43", "zone": "façade ✓"}
	vs = append(vs, v)
	v = ok("commitment_mismatch", "the unwrapper returns another DEK", spec{id: "vec-multi", chunk: cs, size: 3*cs + 8})
	v.expect, v.outputSize, v.dek = "commitment mismatch", 0, testDEK(2)
	vs = append(vs, v)

	// Header-level failures.
	raw := rawFrom(hdr)
	mod := func(f func(r *rawHeader)) []byte {
		r := raw
		r.ctxKeys = append([]string(nil), raw.ctxKeys...)
		r.ctxVals = append([]string(nil), raw.ctxVals...)
		f(&r)
		return join(r.encode(), chunks[0], chunks[1], chunks[2], chunks[3])
	}
	require.Equal(t, h, raw.encode(), "raw encoder must match MarshalBinary")
	edited := bytes.Clone(base)
	edited[len(h)-2] = 'X' // last byte of the context value "vec-base" -> "vec-baXe"; ID no longer matches
	vs = append(vs,
		fail("unknown_version", "version byte 2", mod(func(r *rawHeader) { r.version = 2 }), 0, false),
		fail("bad_header_magic", "magic altered", flip(base, 1), 0, false),
		fail("bad_header_flags", "unknown flag bit", mod(func(r *rawHeader) { r.flags = 0x80 }), 0, false),
		fail("bad_header_chunk_size", "chunk size below the minimum", mod(func(r *rawHeader) { r.chunkSize = 16 }), 0, false),
		fail("bad_header_trailing", "a byte after the context inside header_len", mod(func(r *rawHeader) { r.extra = []byte{0} }), 0, false),
		fail("bad_header_len", "header_len beyond the maximum", mod(func(r *rawHeader) { r.lenDelta = 1 << 20 }), 0, false),
		fail("bad_header_unsorted_context", "context keys out of order", mod(func(r *rawHeader) {
			r.ctxKeys = []string{"envdr:id", "a"}
			r.ctxVals = []string{"vec-base", "1"}
		}), 0, false),
		fail("bad_header_reserved_key", "a reserved key other than envdr:id", mod(func(r *rawHeader) {
			r.ctxKeys = []string{"envdr:id", "envdr:x"}
			r.ctxVals = []string{"vec-base", "1"}
		}), 0, false),
		fail("bad_header_id_mismatch", "envdr:id differs from the envelope ID", edited, 0, false),
		fail("bad_header_no_id", "context without envdr:id", mod(func(r *rawHeader) {
			r.ctxKeys, r.ctxVals = []string{"a"}, []string{"1"}
		}), 0, false),
		fail("bad_header_wrapped_len", "wrapped DEK length prefix runs past header_len", patchWrappedLen(base, hdr, 6000), 0, false),
		fail("bad_header_wrapped_max", "wrapped DEK length prefix above the maximum", patchWrappedLen(base, hdr, 7000), 0, false),
	)
	// A valid header whose context was edited consistently with the ID is still bound by the
	// header hash: every chunk fails.
	vs = append(vs, fail("tag_failure_header_edit", "home region edited (us-east-1 -> us-east-2)",
		mod(func(r *rawHeader) { r.region = "us-east-2" }), 0, true))
	return vs
}

func TestVectors(t *testing.T) {
	if *update {
		require.NoError(t, os.MkdirAll(vectorDir, 0o755))
		old, _ := filepath.Glob(filepath.Join(vectorDir, "*.txt"))
		for _, f := range old {
			require.NoError(t, os.Remove(f))
		}
		for _, v := range generateVectors(t) {
			require.NoError(t, os.WriteFile(filepath.Join(vectorDir, v.name+".txt"), v.marshal(), 0o644))
		}
	}
	files, err := filepath.Glob(filepath.Join(vectorDir, "*.txt"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no vectors; run go generate ./envelope")
	seen := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		v := parseVector(t, name, data)
		seen[v.expect] = true
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runVector(t, v)
		})
	}
	for e := range expectErr {
		require.True(t, seen[e], "no vector expects %q", e)
	}
}

// TestVectorsDeterministic: the generator reproduces the committed files byte for byte, so
// the vectors are a function of the code and the fixed inputs, nothing else.
func TestVectorsDeterministic(t *testing.T) {
	t.Parallel()
	for _, v := range generateVectors(t) {
		disk, err := os.ReadFile(filepath.Join(vectorDir, v.name+".txt"))
		require.NoError(t, err, "missing vector; run go generate ./envelope")
		require.Equal(t, string(v.marshal()), string(disk), "vector %s is stale; run go generate ./envelope", v.name)
	}
}

func runVector(t *testing.T, v vector) {
	wantErr := expectErr[v.expect]
	t.Run("decode", func(t *testing.T) {
		h, n, err := envelope.ParseHeader(v.file)
		if v.decodeOK {
			require.NoError(t, err)
			require.Equal(t, envelope.FormatVersion, h.Version)
			require.Positive(t, n)
			return
		}
		require.Error(t, err)
		var fe *envelope.FormatError
		require.ErrorAs(t, err, &fe)
		require.ErrorIs(t, err, envelope.ErrBadHeader)
		if wantErr != envelope.ErrBadHeader {
			require.ErrorIs(t, err, wantErr)
		}
	})
	t.Run("verify", func(t *testing.T) {
		var out bytes.Buffer
		hdr, err := envelope.Open(context.Background(), &out, bytes.NewReader(v.file), staticUnwrapper{v.dek},
			envelope.OpenOptions{Context: v.openContext})
		if wantErr == nil {
			require.NoError(t, err)
			require.NotNil(t, hdr)
			requireBytes(t, payload(v.payloadSize), out.Bytes())
			return
		}
		require.ErrorIs(t, err, wantErr)
		require.Equal(t, v.outputSize, out.Len(), "released bytes")
		require.True(t, isStreamPrefix(out.Bytes()), "released bytes are not authentic plaintext")
		// The lower-level Reader agrees with Open (it does not compare contexts; callers do).
		// HalfReader hides bytes.Reader, so this takes the pull path while Open took the push
		// path (see Reader.WriteTo).
		r, err := envelope.NewReader(iotest.HalfReader(bytes.NewReader(v.file)), v.dek)
		if errors.Is(wantErr, envelope.ErrContextMismatch) {
			require.NoError(t, err)
			require.ErrorIs(t, r.Header().Context.Compare(v.openContext), envelope.ErrContextMismatch)
			return
		}
		var out2 bytes.Buffer
		if err == nil {
			_, err = r.WriteTo(&out2)
		}
		require.ErrorIs(t, err, wantErr)
		requireBytes(t, out.Bytes(), out2.Bytes())
	})
	t.Run("round-trip", func(t *testing.T) {
		h, n, err := envelope.ParseHeader(v.file)
		if err != nil {
			require.False(t, v.decodeOK)
			return
		}
		again, err := h.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, v.file[:n], again, "parse then marshal must give identical bytes")
		if wantErr == nil {
			// Same DEK, header and payload: sealing again reproduces the file exactly.
			require.Equal(t, v.file, sealWith(t, v.dek, h, payload(v.payloadSize)))
		}
	})
}

// patchWrappedLen rewrites the wrapped DEK's length prefix in place, leaving header_len alone.
func patchWrappedLen(file []byte, h *envelope.Header, n uint16) []byte {
	off := 82 + 1 + len(h.ID) + 1 + len(h.HomeRegion) + 2 + len(h.KeyARN)
	c := bytes.Clone(file)
	binary.BigEndian.PutUint16(c[off:], n)
	return c
}
