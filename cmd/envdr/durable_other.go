//go:build !linux

package main

import "os"

// Elsewhere (macOS, Windows) there is no sync_file_range, fallocate(KEEP_SIZE) or F_SETPIPE_SZ:
// the output is written plainly and the final fsync before the rename does all of the
// durability (durable_linux.go has the overlap of writing and writeback).

// preallocate does nothing here: the filesystem allocates as it writes.
func (d *durableFile) preallocate(int64) {}

// writeback leaves everything to the final fsync.
func (d *durableFile) writeback() { d.noRange = true }

// growPipe leaves the pipe's buffer as the system sized it.
func growPipe(*os.File) {}
