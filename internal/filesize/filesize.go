// Package filesize tells how much of a file is left to read, for the callers that size buffers,
// reservations or preallocations ahead of a stream (the data-key cache, seal and open's output).
package filesize

import (
	"io"
	"os"
)

// Remaining is the bytes left to read in f from its current offset when f is a regular file,
// else -1 (a pipe, a terminal, a file it cannot stat or seek).
func Remaining(f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return -1
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil || off > fi.Size() {
		return -1
	}
	return fi.Size() - off
}
