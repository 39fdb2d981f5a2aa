package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// preallocate reserves size bytes for the file now (best effort: filesystems without fallocate
// simply allocate as they write).
func (d *durableFile) preallocate(size int64) {
	if size <= 0 {
		return
	}
	_ = unix.Fallocate(d.fd, unix.FALLOC_FL_KEEP_SIZE, d.off, size)
}

// writeback starts writeback of what was written since the last call and waits for the window
// before the previous one, bounding dirty pages without stalling on the newest data.
func (d *durableFile) writeback() {
	if err := unix.SyncFileRange(d.fd, d.started, d.off-d.started, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		d.noRange = true // e.g. ENOSYS or a filesystem without it: fsync does all of it
		return
	}
	prev := d.started
	d.started = d.off
	if prev > d.waited {
		_ = unix.SyncFileRange(d.fd, d.waited, prev-d.waited,
			unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		d.waited = prev
	}
}

// growPipe raises a pipe's buffer to 1 MiB (the default /proc/sys/fs/pipe-max-size) when f is a
// pipe: the pipeline writes segments of about 512 KiB, and a 64 KiB pipe would wake the other
// side eight times per segment. Best effort; anything else is left alone.
func growPipe(f *os.File) {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		return
	}
	_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20)
}
