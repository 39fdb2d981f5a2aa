package main

import (
	"io"
	"os"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/filesize"
)

// durableFile writes an output file that is fsynced before it is renamed into place (commit),
// at the speed of the disk rather than after it: it starts the kernel's writeback of every
// window as soon as the window is written (sync_file_range WRITE), and waits for the window
// before the previous one, so encryption and the disk overlap and little is left for the final
// fsync. Without this, the page cache absorbs the whole file and fsync then writes all of it
// while the CPU idles (what `dd conv=fsync` does). The final fsync of the file and of its
// directory stay: sync_file_range neither flushes metadata nor the disk's cache.
//
// It also preallocates the file (fallocate, keeping the size) when the output size is known, so
// the filesystem lays it out in one extent instead of block by block as writeback allocates.
type durableFile struct {
	f          *os.File
	fd         int
	off        int64 // bytes written
	started    int64 // writeback started for [0, started)
	waited     int64 // writeback waited for [0, waited)
	afterFirst int64 // > 0: preallocate this many bytes beyond the first Write, at the first Write
	first      bool
	noRange    bool // sync_file_range unsupported here: leave it all to fsync
}

// writebackWindow is how much is written before its writeback starts; two windows may be in
// flight, so the dirty data of one output stays below ~3 windows.
const writebackWindow = 8 << 20

func newDurableFile(f *os.File) *durableFile {
	return &durableFile{f: f, fd: int(f.Fd()), first: true}
}

// preallocateAfterFirst preallocates n bytes beyond the first Write once it is done: seal's first
// Write is the header, whose length depends on the KMS wrap.
func (d *durableFile) preallocateAfterFirst(n int64) { d.afterFirst = n }

func (d *durableFile) Write(p []byte) (int, error) {
	n, err := d.f.Write(p)
	d.off += int64(n)
	if d.first {
		d.first = false
		if d.afterFirst > 0 {
			d.preallocate(d.afterFirst)
		}
	}
	if err == nil && !d.noRange && d.off-d.started >= writebackWindow {
		d.writeback()
	}
	return n, err
}

// ReadFrom hides os.File's ReadFrom (copy_file_range/splice), which would bypass Write.
func (d *durableFile) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{d}, r)
}

// inputSize is the bytes left to read in f when it is a regular file, else -1.
func inputSize(in io.Reader) int64 {
	f, ok := in.(*os.File)
	if !ok {
		return -1
	}
	return filesize.Remaining(f)
}

// sealedPayloadSize is the bytes seal writes after the header for n bytes of plaintext: every
// chunk carries a tag, and an empty payload still has one (empty) chunk.
func sealedPayloadSize(n int64, chunkSize int) int64 {
	if chunkSize == 0 {
		chunkSize = envelope.DefaultChunkSize
	}
	chunks := max(1, (n+int64(chunkSize)-1)/int64(chunkSize))
	return n + chunks*envelope.TagSize
}

// openedSize is the plaintext size of an envelope of total bytes (header included), from its
// header, or 0 when unknown (total < 0, or bytes that cannot be a whole envelope: open will fail).
func openedSize(hdr *envelope.Header, total int64) int64 {
	raw, err := hdr.MarshalBinary()
	if err != nil || total < 0 {
		return 0
	}
	rest := total - int64(len(raw))
	enc := int64(hdr.ChunkSize + envelope.TagSize)
	if rest < envelope.TagSize {
		return 0
	}
	return max(0, rest-((rest+enc-1)/enc)*envelope.TagSize)
}
