package regions_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// lateWriteConn lets a request's last bytes reach the server, then holds the transport's write
// goroutine until the caller is reading the response body (its second Read on the connection:
// the first brought the response headers): the write goroutine finishes only after the SDK has
// handed the response on, as on a busy machine whose write goroutine is scheduled late. A write
// made before any response (headers flushed ahead of the body) is held at most 100 ms.
type lateWriteConn struct {
	net.Conn
	mu       sync.Mutex
	reads    int
	released chan struct{}
	once     sync.Once
}

func (c *lateWriteConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	select {
	case <-c.released:
	case <-time.After(100 * time.Millisecond):
	}
	return n, err
}

func (c *lateWriteConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.reads++
	if c.reads == 2 {
		c.once.Do(func() { close(c.released) })
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// A ReceiveMessage whose answer arrives before the transport has finished writing the request
// must be delivered whole. The SDK closes the request body as soon as the response headers are
// in; the transport's write goroutine, finishing the request after that, read the closed body
// (io.EOF from its WriteTo) and closed the connection under the response being read: the SDK
// got "use of closed network connection" and, that error being retryable, received again. The
// messages of the first answer, already made invisible by SQS, were never seen: each waited out
// its visibility timeout (docs/LOCAL.md, "The cut SQS response").
func TestReceiveAnsweredBeforeTheWriteEndsIsNotLost(t *testing.T) {
	t.Parallel()
	var receives atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := receives.Add(1)
		body := fmt.Sprintf("event-%d", n)
		sum := md5.Sum([]byte(body))
		out, _ := json.Marshal(map[string]any{"Messages": []map[string]string{{
			"MessageId": fmt.Sprintf("m-%d", n), "ReceiptHandle": fmt.Sprintf("rh-%d", n),
			"Body": body, "MD5OfBody": hex.EncodeToString(sum[:]),
		}}})
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
		if n > 1 {
			_, _ = w.Write(out)
			return
		}
		// The first answer: headers and the first bytes now, the rest a little later, so that
		// the caller is reading the body when the write goroutine finishes.
		_, _ = w.Write(out[:10])
		w.(http.Flusher).Flush()
		select {
		case <-time.After(500 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(out[10:])
	}))
	defer srv.Close()

	hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		dial := tr.DialContext
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &lateWriteConn{Conn: c, released: make(chan struct{})}, nil
		}
	})
	cfg := &config.Config{HomeRegion: "us-east-1", Table: "t", Local: &config.Local{AccessKey: "a", SecretKey: "b"},
		Regions: []config.Region{{Name: "us-east-1", Key: mrkUS, Endpoints: config.Endpoints{SQS: srv.URL}}}}
	cfg.WithDefaults()
	require.NoError(t, cfg.Validate())
	topo, err := regions.New(context.Background(), cfg, regions.Options{HTTPClient: hc})
	require.NoError(t, err)
	home, err := topo.HomeRegion()
	require.NoError(t, err)

	out, err := home.SQS().ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(srv.URL + "/000000000000/q"), MaxNumberOfMessages: 10})
	require.NoError(t, err)
	require.Len(t, out.Messages, 1)
	require.Equal(t, "event-1", aws.ToString(out.Messages[0].Body), "the first answer's message is delivered")
	require.EqualValues(t, 1, receives.Load(), "one receive: a second one leaves the first answer's messages invisible and unseen")
}
