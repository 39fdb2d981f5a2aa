package envelope_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
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

	// Byte limit: an envelope that crosses MaxBytes finishes; the next one gets a new DEK.
	sealCached(t, c, user, 20_000)
	require.EqualValues(t, 4, kms.Generated.Load())
	sealCached(t, c, user, 10)
	require.EqualValues(t, 5, kms.Generated.Load())

	st := c.Stats()
	require.EqualValues(t, 5, st.Misses)
	require.EqualValues(t, 3, st.Hits)

	// Direct GenerateDataKey passes through uncached, bound to exactly the given context.
	ec := mustContext(t, "direct", user)
	dk, err := c.GenerateDataKey(context.Background(), ec)
	require.NoError(t, err)
	_, err = kms.Unwrap(context.Background(), dk.Wrapped, testARN, ec)
	require.NoError(t, err)

	c.Purge()
	sealCached(t, c, user, 10)
	require.EqualValues(t, 7, kms.Generated.Load())

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
