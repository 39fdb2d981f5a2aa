package envelope

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"sync"
	"time"
)

// CacheOptions bounds how long and how much one cached DEK may be used, like the AWS
// Encryption SDK's caching CMM thresholds.
type CacheOptions struct {
	// MaxAge is how long a DEK may be handed out after KMS made it. Required.
	MaxAge time.Duration
	// MaxMessages is how many envelopes one DEK may seal; 0 means 1<<32.
	MaxMessages uint64
	// MaxBytes bounds the plaintext bytes sealed under one DEK; 0 means 1<<62. Each envelope
	// reserves its size when it starts (known when the source is a *bytes.Reader,
	// *bytes.Buffer, *strings.Reader or a regular file), so concurrent seals cannot overshoot
	// it; an envelope of unknown size reserves all that is left, so no other envelope starts on
	// that DEK until it ends, and it alone can cross MaxBytes (by its own excess). An envelope
	// larger than MaxBytes gets a fresh DEK to itself.
	MaxBytes uint64
	// MaxEntries bounds the number of distinct contexts cached; 0 means 1024. The oldest entry
	// is evicted first.
	MaxEntries int
	// Now is the clock; nil means time.Now. Tests inject one.
	Now func() time.Time
	// SweepEvery is how often expired and used-up entries are wiped and dropped while the cache
	// holds any; 0 means min(MaxAge, 1 minute). So an idle DEK leaves the heap at most
	// MaxAge + SweepEvery after KMS made it, without waiting for the next seal of its context.
	SweepEvery time.Duration
}

// CacheStats counts cache use.
type CacheStats struct {
	Hits, Misses uint64
}

// CachingKeyGenerator reuses DEKs across envelopes that share a user context, to cut KMS calls
// when sealing many small objects. Off unless a caller wraps its generator in one.
//
// A KMS wrap is bound to the context it was made with, and one wrap cannot be bound to the
// IDs of envelopes that do not exist yet. So a cached DEK is generated for the user context
// plus envdr:id = a fresh cache-entry ID ("dk-…"); that is the record ID under which the
// replicator keeps its wraps, and every envelope sealed with it names that ID in its context
// (Header.RecordID) while keeping its own envelope ID in Header.ID, which the header hash binds
// into every chunk. Each envelope still has its own salt, hence its own chunk key.
// See docs/FORMAT.md, "Caching".
type CachingKeyGenerator struct {
	gen  KeyGenerator
	opts CacheOptions

	mu      sync.Mutex
	entries map[string]*cacheEntry
	stats   CacheStats
	sweeper *time.Timer // pending sweep, while entries exist
	closed  bool
}

type cacheEntry struct {
	dk       DataKey
	ec       Context
	created  time.Time
	messages uint64
	bytes    uint64 // plaintext sealed by finished envelopes
	reserved uint64 // reserved by envelopes in flight
}

var _ KeyGenerator = (*CachingKeyGenerator)(nil)

// NewCachingKeyGenerator wraps gen with a DEK cache.
func NewCachingKeyGenerator(gen KeyGenerator, opts CacheOptions) (*CachingKeyGenerator, error) {
	if opts.MaxAge <= 0 {
		return nil, errors.New("envelope: cache MaxAge must be positive")
	}
	if opts.MaxMessages == 0 {
		opts.MaxMessages = 1 << 32
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = 1 << 62
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 1024
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SweepEvery <= 0 {
		opts.SweepEvery = min(opts.MaxAge, time.Minute)
	}
	return &CachingKeyGenerator{gen: gen, opts: opts, entries: map[string]*cacheEntry{}}, nil
}

// GenerateDataKey passes straight through, uncached: a caller asking for a DEK bound to an
// exact context gets exactly that. Seal uses the cache.
func (c *CachingKeyGenerator) GenerateDataKey(ctx context.Context, ec Context) (*DataKey, error) {
	return c.gen.GenerateDataKey(ctx, ec)
}

// Stats returns the hit and miss counts.
func (c *CachingKeyGenerator) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Purge drops and wipes every cached DEK.
func (c *CachingKeyGenerator) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		Wipe(e.dk.Plaintext)
		delete(c.entries, k)
	}
}

// Close purges the cache and stops its sweeper; later seals still work, uncached entries are
// made again. Without Close the sweeper stops by itself once the cache is empty.
func (c *CachingKeyGenerator) Close() {
	c.Purge()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.sweeper != nil {
		c.sweeper.Stop()
		c.sweeper = nil
	}
}

// scheduleSweepLocked arms the sweeper if entries exist and none is pending.
func (c *CachingKeyGenerator) scheduleSweepLocked() {
	if c.sweeper != nil || c.closed || len(c.entries) == 0 {
		return
	}
	c.sweeper = time.AfterFunc(c.opts.SweepEvery, c.sweep)
}

// sweep wipes and drops the entries no new envelope can use (expired, or out of messages or
// bytes); envelopes in flight hold their own copy of the DEK.
func (c *CachingKeyGenerator) sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweeper = nil
	now := c.opts.Now()
	for k, e := range c.entries {
		if !e.usable(now, c.opts, 0) {
			Wipe(e.dk.Plaintext)
			delete(c.entries, k)
		}
	}
	c.scheduleSweepLocked()
}

// sharedKeyGenerator is how Seal recognises a generator whose DEKs may seal several envelopes.
type sharedKeyGenerator interface {
	sharedDataKey(ctx context.Context, user map[string]string, size int64) (*DataKey, Context, func(int64), error)
}

// cacheKey is an injective encoding of the user pairs (length-prefixed, sorted).
func cacheKey(user map[string]string) string {
	keys := make([]string, 0, len(user))
	for k := range user {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		for _, s := range []string{k, user[k]} {
			n := len(s)
			b.Write([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
			b.WriteString(s)
		}
	}
	return b.String()
}

// usable reports whether a new envelope of size bytes (-1: unknown) may start with e's DEK.
func (e *cacheEntry) usable(now time.Time, o CacheOptions, size int64) bool {
	if now.Sub(e.created) >= o.MaxAge || e.messages >= o.MaxMessages {
		return false
	}
	used := e.bytes + e.reserved
	if used >= o.MaxBytes {
		return false
	}
	return size < 0 || uint64(size) <= o.MaxBytes-used
}

// reservation is what an envelope of size bytes (-1: unknown) reserves on e: its size, or all
// that is left when the size is unknown.
func (e *cacheEntry) reservation(o CacheOptions, size int64) uint64 {
	if size >= 0 {
		return uint64(size)
	}
	if used := e.bytes + e.reserved; used < o.MaxBytes {
		return o.MaxBytes - used
	}
	return 0
}

// sharedDataKey returns a copy of a cached DEK for user's context (generating one on a miss),
// the context its wrap is bound to, and a function to call once with the plaintext bytes sealed
// (it releases the envelope's reservation of size bytes, -1 for unknown).
func (c *CachingKeyGenerator) sharedDataKey(ctx context.Context, user map[string]string, size int64) (*DataKey, Context, func(int64), error) {
	key := cacheKey(user)
	now := c.opts.Now()
	c.mu.Lock()
	if e, ok := c.entries[key]; ok {
		if e.usable(now, c.opts, size) {
			e.messages++
			c.stats.Hits++
			res := e.reservation(c.opts, size)
			e.reserved += res
			dk, ec := copyDataKey(&e.dk), e.ec
			c.mu.Unlock()
			return dk, ec, c.accounter(e, res), nil
		}
		// Used up, expired, or too full for this envelope: replaced by a fresh entry. Envelopes
		// in flight on it hold their own copy of the DEK.
		Wipe(e.dk.Plaintext)
		delete(c.entries, key)
	}
	c.stats.Misses++
	c.mu.Unlock()

	// Generate outside the lock: KMS is slow and other contexts must not wait for it.
	id, err := NewID()
	if err != nil {
		return nil, Context{}, nil, err
	}
	ec, err := NewContext("dk-"+id, user)
	if err != nil {
		return nil, Context{}, nil, err
	}
	dk, err := c.gen.GenerateDataKey(ctx, ec)
	if err != nil {
		return nil, Context{}, nil, err
	}
	if err := checkDataKey(dk); err != nil {
		Wipe(dk.Plaintext)
		return nil, Context{}, nil, err
	}
	e := &cacheEntry{dk: *copyDataKey(dk), ec: ec, created: now, messages: 1}
	res := e.reservation(c.opts, size)
	e.reserved = res
	c.mu.Lock()
	if old, ok := c.entries[key]; ok {
		Wipe(old.dk.Plaintext) // a concurrent miss got there first; the newer entry wins
	}
	c.entries[key] = e
	c.evictLocked()
	c.scheduleSweepLocked()
	c.mu.Unlock()
	return dk, ec, c.accounter(e, res), nil
}

// accounter returns the function that ends an envelope's use of e: it releases the reservation
// and counts the bytes actually sealed.
func (c *CachingKeyGenerator) accounter(e *cacheEntry, reserved uint64) func(int64) {
	var once sync.Once
	return func(n int64) {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			e.reserved -= reserved
			if n > 0 {
				e.bytes += uint64(n)
			}
		})
	}
}

func (c *CachingKeyGenerator) evictLocked() {
	for len(c.entries) > c.opts.MaxEntries {
		var oldestKey string
		var oldest *cacheEntry
		for k, e := range c.entries {
			if oldest == nil || e.created.Before(oldest.created) {
				oldestKey, oldest = k, e
			}
		}
		Wipe(oldest.dk.Plaintext)
		delete(c.entries, oldestKey)
	}
}

func copyDataKey(dk *DataKey) *DataKey {
	return &DataKey{
		Plaintext: bytes.Clone(dk.Plaintext),
		Wrapped:   bytes.Clone(dk.Wrapped),
		KeyARN:    dk.KeyARN,
		Region:    dk.Region,
	}
}
