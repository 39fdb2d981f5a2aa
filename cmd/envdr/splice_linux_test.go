package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
)

// slowRead drains r in small reads with pauses, so vmspliced pages sit in the pipe while the
// writer goes on.
func slowRead(r io.Reader) ([]byte, error) {
	var out bytes.Buffer
	buf := make([]byte, 3000)
	for i := 0; ; i++ {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// TestPipeOutVmsplice: seal and open in parallel into a real pipe through pipeOut (vmsplice):
// the reader gets exactly the envelope and the plaintext, although every segment buffer is
// reused (and open's wiped) as soon as pipeOut says the reader has read it.
func TestPipeOutVmsplice(t *testing.T) {
	dek := make([]byte, envelope.DEKSize)
	_, _ = rand.Read(dek)
	defer envelope.Wipe(dek)
	pt := make([]byte, 5<<20+333)
	_, _ = rand.Read(pt)
	ec, err := envelope.NewContext("splice", nil)
	require.NoError(t, err)
	hdr := &envelope.Header{ID: "splice", ChunkSize: 4096, Context: ec, KeyARN: "arn:aws:kms:us-east-1:111122223333:key/x", WrappedDEK: []byte("w")}

	pipe := func(write func(po *pipeOut) error) []byte {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		po := newPipeOut(w)
		require.NotNil(t, po, "vmsplice path available on a pipe")
		got := make(chan []byte, 1)
		go func() {
			b, err := slowRead(r)
			if err != nil {
				t.Error(err)
			}
			got <- b
		}()
		require.NoError(t, write(po))
		require.NoError(t, w.Close())
		b := <-got
		require.NoError(t, r.Close())
		return b
	}

	sealed := pipe(func(po *pipeOut) error {
		sw, err := envelope.NewWriterJobs(po, dek, hdr, 3)
		if err != nil {
			return err
		}
		if _, err := sw.ReadFrom(bytes.NewReader(pt)); err != nil {
			return err
		}
		return sw.Close()
	})
	sr, err := envelope.NewReader(bytes.NewReader(sealed), dek)
	require.NoError(t, err)
	back, err := io.ReadAll(sr)
	require.NoError(t, err)
	require.True(t, bytes.Equal(pt, back), "sealed through vmsplice, opened sequentially")

	opened := pipe(func(po *pipeOut) error {
		or, err := envelope.NewReaderJobs(bytes.NewReader(sealed), dek, 3)
		if err != nil {
			return err
		}
		_, err = or.WriteTo(po)
		return err
	})
	require.True(t, bytes.Equal(pt, opened), "opened through vmsplice")

	// A regular file is not a pipe: plain writes.
	f, err := os.CreateTemp(t.TempDir(), "x")
	require.NoError(t, err)
	defer f.Close()
	require.Nil(t, newPipeOut(f))
}

// A reader that goes away: the writer gets EPIPE instead of waiting for ever.
func TestPipeOutReaderGone(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer w.Close()
	po := newPipeOut(w)
	require.NotNil(t, po)
	buf := make([]byte, 1000)
	end, err := po.WriteHeld(buf)
	require.NoError(t, err)
	ok, err := po.Consumed(end, false)
	require.NoError(t, err)
	require.False(t, ok, "nothing read yet")
	require.NoError(t, r.Close())
	_, err = po.Consumed(end, true)
	require.Error(t, err)
}
