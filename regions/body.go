package regions

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// maxOwnedBody bounds the request bodies ownBodies copies. Every call the daemon makes sends a
// small JSON document (a DynamoDB batch write, the largest, stays under 16 MiB); a larger or
// unknown-length body passes through as the SDK made it.
const maxOwnedBody = 16 << 20

// ownBodies hands the HTTP transport a copy of each request body, one the SDK cannot close
// under it.
//
// The SDK (smithy-go's ClientHandler) closes a request's body as soon as the HTTP client returns
// the response headers. Go's transport writes the request in a goroutine of its own, which
// after the body's last byte reads it once more to check that it has ended; on a busy machine
// that goroutine can run after the response is already in, and the closed body answers that read
// with io.EOF (smithy-go's safe reader, through WriteTo). The transport takes that for a failed
// write and closes the connection, under the response body the SDK is reading: "use of closed
// network connection", which the SDK retries. For ReceiveMessage the retry loses the first
// answer's messages, already made invisible by SQS, until their visibility timeout; a retried
// conditional write fails its condition. See docs/LOCAL.md, "The cut SQS response".
//
// With a body of its own, in memory, the transport's extra read finds the end (no error) and the
// connection stays whole. GetBody also lets the transport retry a request that failed on a
// reused connection before a byte of it was written, which is always safe.
type ownBodies struct{ next aws.HTTPClient }

func (c ownBodies) Do(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength <= 0 || req.ContentLength > maxOwnedBody {
		return c.next.Do(req)
	}
	b := make([]byte, req.ContentLength)
	_, err := io.ReadFull(req.Body, b)
	// Do owns the body, as a transport does: closed on every path (the SDK's own Close after
	// this returns is then a no-op).
	_ = req.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the request body (%d bytes): %w", req.ContentLength, err)
	}
	own := req.WithContext(req.Context()) // a shallow copy: the SDK's request keeps its body
	own.Body = io.NopCloser(bytes.NewReader(b))
	own.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return c.next.Do(own)
}
