package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/envdr/envdr/envelope"
)

// TestDurableFile: writes through durableFile (writeback started window by window,
// preallocation after the first write) land intact, and the preallocation is exact: no block is
// left allocated beyond the end of the file.
func TestDurableFile(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "out"))
	require.NoError(t, err)
	defer f.Close()
	d := newDurableFile(f)
	data := make([]byte, 3*writebackWindow+12345)
	_, _ = rand.Read(data)
	header := data[:777]
	d.preallocateAfterFirst(int64(len(data) - len(header)))
	_, err = d.Write(header)
	require.NoError(t, err)
	for rest := data[len(header):]; len(rest) > 0; {
		n := min(len(rest), 600<<10)
		_, err := d.Write(rest[:n])
		require.NoError(t, err)
		rest = rest[n:]
	}
	require.NoError(t, f.Sync())
	got, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))
	require.EqualValues(t, len(data), d.off)
	require.False(t, d.noRange, "sync_file_range works here")
	require.Greater(t, d.started, int64(len(data)-writebackWindow), "writeback started for all but the last window")
	require.Positive(t, d.waited, "and waited for the older ones")
	var st unix.Stat_t
	require.NoError(t, unix.Stat(f.Name(), &st))
	// Blocks of 512 bytes; allow one filesystem block of slack for the partial last block and
	// an extent-tree block.
	require.LessOrEqual(t, st.Blocks*512, int64(len(data))+2*int64(st.Blksize), "preallocated beyond the end")
}

// The output sizes used for preallocation match what seal and open write.
func TestPreallocationSizes(t *testing.T) {
	dek := make([]byte, envelope.DEKSize)
	ec, err := envelope.NewContext("sizes", nil)
	require.NoError(t, err)
	for _, cs := range []int{0, 1000} {
		for _, n := range []int{0, 1, 999, 1000, 1001, 65536, 65537, 200000} {
			var buf bytes.Buffer
			w, err := envelope.NewWriter(&buf, dek, &envelope.Header{ID: "sizes", Context: ec, ChunkSize: cs})
			require.NoError(t, err)
			_, err = w.Write(make([]byte, n))
			require.NoError(t, err)
			require.NoError(t, w.Close())
			raw, err := w.Header().MarshalBinary()
			require.NoError(t, err)
			require.EqualValues(t, buf.Len()-len(raw), sealedPayloadSize(int64(n), cs), "seal cs=%d n=%d", cs, n)
			require.EqualValues(t, n, openedSize(w.Header(), int64(buf.Len())), "open cs=%d n=%d", cs, n)
		}
	}
	require.Zero(t, openedSize(&envelope.Header{ChunkSize: 100}, -1))
}
