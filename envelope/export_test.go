package envelope

import "io"

// NewWriterFixedSalt is NewWriter sealing with hdr.Salt instead of a fresh salt: deterministic
// output for known-answer vectors and path-equivalence tests. Test builds only.
func NewWriterFixedSalt(dst io.Writer, dek []byte, hdr *Header) (*Writer, error) {
	if hdr.Salt == nil {
		return NewWriter(dst, dek, hdr)
	}
	return newWriter(dst, dek, hdr, hdr.Salt)
}
