package filesize

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRemaining(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(p, make([]byte, 100), 0o600))
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	require.EqualValues(t, 100, Remaining(f))
	_, err = f.Seek(30, io.SeekStart)
	require.NoError(t, err)
	require.EqualValues(t, 70, Remaining(f), "from the current offset")
	_, err = f.Seek(200, io.SeekStart)
	require.NoError(t, err)
	require.EqualValues(t, -1, Remaining(f), "past the end")

	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	require.EqualValues(t, -1, Remaining(r), "a pipe")

	require.NoError(t, f.Close())
	require.EqualValues(t, -1, Remaining(f), "a closed file")
}
