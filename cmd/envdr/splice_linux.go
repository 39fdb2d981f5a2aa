package main

import (
	"errors"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pipeOut is stdout when it is a pipe. The parallel envelope path hands it whole segments
// (envelope.HoldingWriter), which it vmsplices into the pipe: the pipe refers to the segment's
// pages instead of copying them, which on a two-core machine is a good part of what a pipe
// costs. A vmspliced buffer must stay intact until the reader has read it, so Consumed tells the
// envelope code when it may reuse or wipe one: bytes still in the pipe (FIONREAD) against bytes
// put in (FIONREAD, TIOCINQ in x/sys). Anything else another writer puts in the same pipe only makes that conservative.
//
// Everything else (the header, the final chunk, the sequential path) goes through write(2).
type pipeOut struct {
	f   *os.File
	fd  int
	put int64 // bytes we put into the pipe, by write or vmsplice
}

// newPipeOut returns a pipeOut for f when f is a pipe on which vmsplice and FIONREAD work, else
// nil.
func newPipeOut(f *os.File) *pipeOut {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		return nil
	}
	fd := int(f.Fd())
	if _, err := unix.IoctlGetInt(fd, unix.TIOCINQ); err != nil {
		return nil
	}
	return &pipeOut{f: f, fd: fd}
}

func (p *pipeOut) Write(b []byte) (int, error) {
	n, err := p.f.Write(b)
	p.put += int64(n)
	return n, err
}

// WriteHeld vmsplices b into the pipe, waiting for room as write(2) would.
func (p *pipeOut) WriteHeld(b []byte) (int64, error) {
	for len(b) > 0 {
		iov := []unix.Iovec{{Base: &b[0]}}
		iov[0].SetLen(len(b))
		n, err := unix.Vmsplice(p.fd, iov, 0)
		if n > 0 {
			p.put += int64(n)
			b = b[n:]
		}
		switch {
		case err == nil || errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN): // a non-blocking pipe: wait until it has room
			fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
				return p.put, err
			}
		case errors.Is(err, unix.EPIPE):
			// No reader: write(2) on stdout makes a Go program exit with SIGPIPE, like any
			// command in a pipeline; keep it so.
			_, err := p.f.Write(b[:min(len(b), 1)])
			return p.put, err
		default:
			return p.put, &os.PathError{Op: "vmsplice", Path: p.f.Name(), Err: err}
		}
	}
	return p.put, nil
}

// Consumed reports whether the reader has read every byte before end. Without a reader left
// (the pipe reports an error), they never will be: syscall.EPIPE.
func (p *pipeOut) Consumed(end int64, wait bool) (bool, error) {
	for {
		// FIONREAD worked when the pipe was probed; should it fail now, keep the bytes intact
		// and ask again, until the reader is gone.
		if q, err := unix.IoctlGetInt(p.fd, unix.TIOCINQ); err == nil && p.put-int64(q) >= end {
			return true, nil
		}
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(fds, 0); err == nil && fds[0].Revents&unix.POLLERR != 0 {
			return false, syscall.EPIPE
		}
		if !wait {
			return false, nil
		}
		time.Sleep(50 * time.Microsecond)
	}
}
