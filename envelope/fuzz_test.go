package envelope_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
)

// Fuzz targets, seeded from the known-answer vectors. `make fuzz-short` runs each for a few
// seconds in `make test`; `make fuzz FUZZTIME=10m` for long runs. Without -fuzz they run the
// seeds as ordinary tests.

func vectorFiles(f *testing.F) [][]byte {
	files, err := filepath.Glob(filepath.Join(vectorDir, "*.txt"))
	require.NoError(f, err)
	require.NotEmpty(f, files)
	var out [][]byte
	for _, name := range files {
		data, err := os.ReadFile(name)
		require.NoError(f, err)
		out = append(out, parseVectorFile(f, data))
	}
	return out
}

// parseVectorFile extracts the envelope bytes of a vector file (the part after the blank line).
func parseVectorFile(f *testing.F, data []byte) []byte {
	_, body, ok := bytes.Cut(data, []byte("\n\n"))
	require.True(f, ok)
	b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(body), "\n", ""))
	require.NoError(f, err)
	return b
}

func FuzzHeader(f *testing.F) {
	for _, v := range vectorFiles(f) {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := envelope.ParseHeader(data)
		h2, err2 := envelope.ReadHeader(bytes.NewReader(data))
		if err != nil {
			var fe *envelope.FormatError
			require.ErrorAs(t, err, &fe, "untyped error %v", err)
			require.ErrorIs(t, err, envelope.ErrBadHeader)
			require.ErrorIs(t, err2, envelope.ErrBadHeader, "ReadHeader disagrees")
			require.NotEmpty(t, err.Error())
			return
		}
		require.NoError(t, err2)
		require.Equal(t, h, h2)
		b, err := h.MarshalBinary()
		require.NoError(t, err, "a parsed header must marshal")
		require.Equal(t, data[:n], b, "parse then marshal must give identical bytes")
	})
}

func FuzzOpen(f *testing.F) {
	for _, v := range vectorFiles(f) {
		f.Add(v)
	}
	dek := testDEK(1) // the DEK of most vectors, so mutations reach the chunk code
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		hdr, err := envelope.Open(context.Background(), &out, bytes.NewReader(data), staticUnwrapper{dek}, envelope.OpenOptions{})
		// Every vector's plaintext is a prefix of one stream; no forgery can produce anything else.
		require.True(t, isStreamPrefix(out.Bytes()), "released bytes that are not authentic plaintext")
		if err == nil {
			return
		}
		known := []error{envelope.ErrBadHeader, envelope.ErrAuth, envelope.ErrTruncated, envelope.ErrTrailingData, envelope.ErrCommitmentMismatch}
		ok := false
		for _, k := range known {
			ok = ok || errors.Is(err, k)
		}
		require.True(t, ok, "unexpected error class: %v", err)
		if hdr != nil {
			require.Zero(t, out.Len()%hdr.ChunkSize, "a partial chunk was released")
		}
		// The io.Reader path releases the same bytes.
		r, err := envelope.NewReader(bytes.NewReader(data), dek)
		if err != nil {
			require.Zero(t, out.Len())
			return
		}
		got, rerr := io.ReadAll(r)
		requireBytes(t, out.Bytes(), got)
		// So does the parallel path, with the same error.
		pr, err := envelope.NewReaderJobsHooks(bytes.NewReader(data), dek, 2, envelope.ParallelHooks{SegChunks: 1})
		require.NoError(t, err)
		var pout bytes.Buffer
		_, perr := pr.WriteTo(&pout)
		requireBytes(t, got, pout.Bytes())
		require.Equal(t, fmt.Sprint(rerr), fmt.Sprint(perr))
	})
}

func FuzzRecord(f *testing.F) {
	b, err := envelope.EncodeRecord(sampleRecord(f))
	require.NoError(f, err)
	f.Add(b)
	f.Add([]byte(`{"format":1}`))
	f.Add([]byte(`{"format":1,"id":"a","version":0,"context":{"envdr:id":"a"},"commitment":"","source_region":"x","source_key_arn":"k","created_at":"2026-01-01T00:00:00Z","regions":{}}`))
	f.Add(bytes.Replace(b, []byte(`"app"`), []byte(`"\u0061pp"`), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := envelope.DecodeRecord(data)
		if err != nil {
			var re *envelope.RecordError
			require.ErrorAs(t, err, &re, "untyped error %v", err)
			require.ErrorIs(t, err, envelope.ErrBadRecord)
			return
		}
		enc, err := envelope.EncodeRecord(r)
		require.NoError(t, err, "a decoded record must encode")
		back, err := envelope.DecodeRecord(enc)
		require.NoError(t, err, "canonical form must decode")
		require.Equal(t, r, back)
		again, err := envelope.EncodeRecord(back)
		require.NoError(t, err)
		require.Equal(t, enc, again, "encode(decode(canonical)) is the identity")
		// Merging a record with itself changes nothing.
		m := r.Clone()
		require.NoError(t, m.Merge(r))
		require.Equal(t, r, m)
	})
}

func FuzzEvent(f *testing.F) {
	b, err := envelope.EncodeEvent(sampleEvent(f))
	require.NoError(f, err)
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":2}`))
	f.Add(bytes.Replace(b, []byte(`"version":1,`), []byte(`"version":1,"version":1,`), 1))
	reasons := map[string]bool{
		envelope.ReasonBadJSON: true, envelope.ReasonOversize: true, envelope.ReasonUnknownVersion: true,
		envelope.ReasonMissingField: true, envelope.ReasonUnknownField: true, envelope.ReasonDuplicateField: true,
		envelope.ReasonBadField: true, envelope.ReasonBadBase64: true, envelope.ReasonBadContext: true,
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := envelope.DecodeEvent(data)
		if err != nil {
			var ee *envelope.EventError
			require.ErrorAs(t, err, &ee, "untyped error %v", err)
			require.True(t, reasons[ee.Reason()], "unknown reason %q", ee.Reason())
			require.ErrorIs(t, err, envelope.ErrBadEvent)
			return
		}
		enc, err := envelope.EncodeEvent(e)
		require.NoError(t, err, "a decoded event must encode")
		back, err := envelope.DecodeEvent(enc)
		require.NoError(t, err, "canonical form must decode")
		require.Equal(t, e, back)
		again, err := envelope.EncodeEvent(back)
		require.NoError(t, err)
		require.Equal(t, enc, again, "encode(decode(canonical)) is the identity")
		require.Equal(t, e.ID, e.Context.ID())
	})
}
