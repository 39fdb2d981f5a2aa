package recovery

import (
	"context"
	"math/rand/v2"

	"github.com/envdr/envdr/replicate"
)

// ProbeRecords is probeRecords with a seeded random source (tests).
func ProbeRecords(ctx context.Context, store *replicate.Store, seed uint64) (int64, error) {
	return probeRecords(ctx, store, rand.New(rand.NewPCG(seed, 1)))
}
