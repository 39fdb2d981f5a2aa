package envelope_test

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/envelope/envelopetest"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newTestCache returns a fake KMS from seed and a caching key generator over it with opts, closed
// when the test ends.
func newTestCache(t *testing.T, seed string, opts envelope.CacheOptions) (*envelopetest.FakeKMS, *envelope.CachingKeyGenerator) {
	t.Helper()
	kms := envelopetest.NewFakeKMS(testRegion, testARN, seed, nil)
	c, err := envelope.NewCachingKeyGenerator(kms, opts)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return kms, c
}

func sealCached(t *testing.T, gen envelope.KeyGenerator, user map[string]string, n int) ([]byte, *envelope.Header) {
	t.Helper()
	var buf bytes.Buffer
	hdr, err := envelope.Seal(context.Background(), &buf, bytes.NewReader(payload(n)), gen, envelope.SealOptions{Context: user})
	require.NoError(t, err)
	return buf.Bytes(), hdr
}

func TestCachingKeyGenerator(t *testing.T) {
	t.Parallel()
	kms := envelopetest.NewFakeKMS(testRegion, testARN, "cache", nil)
	clock := &fakeClock{now: t0}
	c, err := envelope.NewCachingKeyGenerator(kms, envelope.CacheOptions{
		MaxAge: time.Minute, MaxMessages: 3, MaxBytes: 10_000, Now: clock.Now,
	})
	require.NoError(t, err)
	user := map[string]string{"app": "billing"}

	f1, h1 := sealCached(t, c, user, 100)
	f2, h2 := sealCached(t, c, user, 100)
	require.EqualValues(t, 1, kms.Generated.Load(), "second envelope reuses the DEK")
	require.True(t, h1.SharedKey)
	require.NotEqual(t, h1.ID, h2.ID, "each envelope keeps its own ID")
	require.NotEqual(t, h1.Salt, h2.Salt, "and its own salt, hence chunk key")
	require.Equal(t, h1.RecordID(), h2.RecordID(), "one record holds the shared DEK's wraps")
	require.Regexp(t, `^dk-[0-9a-f]{32}$`, h1.RecordID())
	require.Equal(t, h1.WrappedDEK, h2.WrappedDEK)
	require.Equal(t, h1.Commitment, h2.Commitment)

	// Both open with the plain unwrapper: the wrap is bound to the entry's context, which is the
	// header's context.
	for _, f := range [][]byte{f1, f2} {
		var out bytes.Buffer
		_, err := envelope.Open(context.Background(), &out, bytes.NewReader(f), kms, envelope.OpenOptions{Context: user})
		require.NoError(t, err)
		requireBytes(t, payload(100), out.Bytes())
	}
	// Event and record are per DEK.
	ev, err := envelope.NewEvent(h2, t0, "")
	require.NoError(t, err)
	require.Equal(t, h1.RecordID(), ev.ID)

	// Message limit: the third use is allowed, the fourth needs a new DEK.
	sealCached(t, c, user, 10)
	require.EqualValues(t, 1, kms.Generated.Load())
	_, h4 := sealCached(t, c, user, 10)
	require.EqualValues(t, 2, kms.Generated.Load())
	require.NotEqual(t, h1.RecordID(), h4.RecordID())

	// Another user context never shares a DEK.
	_, h5 := sealCached(t, c, map[string]string{"app": "payroll"}, 10)
	require.EqualValues(t, 3, kms.Generated.Load())
	require.NotEqual(t, h4.RecordID(), h5.RecordID())

	// Age limit.
	clock.Add(time.Minute)
	sealCached(t, c, user, 10)
	require.EqualValues(t, 4, kms.Generated.Load())

	// Byte limit: the size is reserved when a seal starts, so an envelope that would cross
	// MaxBytes does not start on the cached DEK: it gets a fresh one (to itself, being larger
	// than MaxBytes), and the next envelope another. A size that fits still reuses the DEK.
	sealCached(t, c, user, 9_990)
	require.EqualValues(t, 4, kms.Generated.Load(), "10 + 9,990 bytes fit in 10,000")
	sealCached(t, c, user, 20_000)
	require.EqualValues(t, 5, kms.Generated.Load())
	sealCached(t, c, user, 10)
	require.EqualValues(t, 6, kms.Generated.Load())

	st := c.Stats()
	require.EqualValues(t, 6, st.Misses)
	require.EqualValues(t, 3, st.Hits)

	// Direct GenerateDataKey passes through uncached, bound to exactly the given context.
	ec := mustContext(t, "direct", user)
	dk, err := c.GenerateDataKey(context.Background(), ec)
	require.NoError(t, err)
	_, err = kms.Unwrap(context.Background(), dk.Wrapped, testARN, ec)
	require.NoError(t, err)

	c.Purge()
	sealCached(t, c, user, 10)
	require.EqualValues(t, 8, kms.Generated.Load())

	_, err = envelope.NewCachingKeyGenerator(kms, envelope.CacheOptions{})
	require.Error(t, err, "MaxAge is required")
}

func TestCachingKeyGeneratorConcurrent(t *testing.T) {
	t.Parallel()
	kms := envelopetest.NewFakeKMS(testRegion, testARN, "cache-concurrent", nil)
	c, err := envelope.NewCachingKeyGenerator(kms, envelope.CacheOptions{MaxAge: time.Hour, MaxMessages: 10, MaxEntries: 2})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				user := map[string]string{"tenant": string(rune('a' + (i+j)%3))}
				var buf bytes.Buffer
				_, err := envelope.Seal(context.Background(), &buf, bytes.NewReader(payload(50)), c, envelope.SealOptions{Context: user})
				if err != nil {
					t.Error(err)
					return
				}
				var out bytes.Buffer
				if _, err := envelope.Open(context.Background(), &out, &buf, kms, envelope.OpenOptions{Context: user}); err != nil {
					t.Error(err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	st := c.Stats()
	require.EqualValues(t, 160, st.Hits+st.Misses)
	require.Less(t, kms.Generated.Load(), int64(160), "the cache saved KMS calls")
}

// barrierWriter blocks its first Write until n writers have made theirs (or a timeout), so that
// n seals are surely in flight at once.
type barrierWriter struct {
	buf   bytes.Buffer
	wg    *sync.WaitGroup
	first bool
}

func (b *barrierWriter) Write(p []byte) (int, error) {
	if !b.first {
		b.first = true
		b.wg.Done()
		done := make(chan struct{})
		go func() { b.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	}
	return b.buf.Write(p)
}

// sealConcurrently starts n seals through gen together, each of the plaintext src returns into
// its own barrierWriter (so that all n are in flight at once), and returns their headers (nil
// where a seal failed, which fails the test).
func sealConcurrently(t *testing.T, gen envelope.KeyGenerator, n int, user map[string]string, src func() io.Reader) []*envelope.Header {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(n)
	hdrs := make([]*envelope.Header, n)
	var done sync.WaitGroup
	for i := 0; i < n; i++ {
		done.Add(1)
		go func(i int) {
			defer done.Done()
			h, err := envelope.Seal(context.Background(), &barrierWriter{wg: &wg}, src(), gen, envelope.SealOptions{Context: user})
			if err != nil {
				t.Error(err)
				return
			}
			hdrs[i] = h
		}(i)
	}
	done.Wait()
	return hdrs
}

// Concurrent seals cannot overshoot MaxBytes: each reserves its size when it starts. Before issue
// 13 bytes were counted only when a seal finished, so eight 300-byte seals started together all
// took one DEK with MaxBytes 1000 (2400 bytes under one DEK).
func TestCacheReservesBytesAtStart(t *testing.T) {
	t.Parallel()
	_, c := newTestCache(t, "cache-reserve", envelope.CacheOptions{MaxAge: time.Hour, MaxBytes: 1000})
	const n, size = 8, 300
	hdrs := sealConcurrently(t, c, n, map[string]string{"app": "x"}, func() io.Reader { return bytes.NewReader(payload(size)) })
	perDEK := map[string]int{}
	for _, h := range hdrs {
		require.NotNil(t, h)
		perDEK[h.RecordID()] += size
	}
	for id, b := range perDEK {
		require.LessOrEqual(t, b, 1000, "DEK %s sealed %d bytes, MaxBytes is 1000", id, b)
	}
	// At least three DEKs (three envelopes of 300 bytes fit under 1000); more when concurrent
	// misses each make one, which the cache allows by design (the newer entry wins).
	require.GreaterOrEqual(t, len(perDEK), 3, "eight 300-byte envelopes need at least three DEKs under MaxBytes 1000")
}

// An envelope of unknown size (a stream) reserves all that is left, so a concurrent envelope
// does not start on the same DEK.
func TestCacheUnknownSizeReservesTheRest(t *testing.T) {
	t.Parallel()
	_, c := newTestCache(t, "cache-stream", envelope.CacheOptions{MaxAge: time.Hour, MaxBytes: 1000})
	hdrs := sealConcurrently(t, c, 2, map[string]string{"app": "s"}, func() io.Reader {
		return iotest.HalfReader(bytes.NewReader(payload(10)))
	})
	ids := make([]string, len(hdrs))
	for i, h := range hdrs {
		require.NotNil(t, h)
		ids[i] = h.RecordID()
	}
	require.NotEqual(t, ids[0], ids[1])
	// Afterwards only the 10 bytes sealed count: the next envelope reuses a DEK.
	_, h := sealCached(t, c, map[string]string{"app": "s"}, 10)
	require.Contains(t, ids, h.RecordID())
}
