package envelope

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type staticGen struct{}

func (staticGen) GenerateDataKey(_ context.Context, ec Context) (*DataKey, error) {
	return &DataKey{Plaintext: bytes.Repeat([]byte{0xA5}, DEKSize), Wrapped: []byte("wrapped"),
		KeyARN: "arn:aws:kms:us-east-1:111122223333:key/k", Region: "us-east-1"}, nil
}

// Expired entries are swept on a timer: an idle DEK is wiped and dropped without waiting for the
// next seal of its context. Before issue 13 an idle entry (and its plaintext DEK) stayed in the
// heap until that context was sealed again, Purge, or eviction.
func TestCacheSweepsIdleEntries(t *testing.T) {
	t.Parallel()
	c, err := NewCachingKeyGenerator(staticGen{}, CacheOptions{MaxAge: 50 * time.Millisecond})
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = Seal(context.Background(), &buf, bytes.NewReader([]byte("x")), c, SealOptions{Context: map[string]string{"app": "idle"}})
	require.NoError(t, err)
	c.mu.Lock()
	require.Len(t, c.entries, 1)
	var held []byte
	for _, e := range c.entries {
		held = e.dk.Plaintext
	}
	c.mu.Unlock()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.entries) == 0
	}, 5*time.Second, 10*time.Millisecond, "the idle entry is swept")
	require.Equal(t, make([]byte, DEKSize), held, "and its DEK wiped")
}
