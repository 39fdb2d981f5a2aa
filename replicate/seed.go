package replicate

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/regions"
)

// seedChunk is how many records MintAndLoad mints before it loads them into every store, and
// seedParallel how many chunks it works on at once.
const (
	seedChunk    = 250
	seedParallel = 16
)

// MintAndLoad fills a fresh table with n real records fast, for benchmarks: each is minted in
// home with one GenerateDataKey under home's multi-Region key (its data key wiped at once, its
// context {"app": app} with the envelope ID), and every region of stores gets that ciphertext
// as its wrap under the region's replica ARN, which opens there because a multi-Region key's
// ciphertext opens under each of its replicas. The records are written with Load, straight
// into each store's table (one store per region, each on that region's own replica), so
// neither envdr run nor global-table replication is involved. Every wrap is made and none is
// verified (verified_at unset): what a verifier, a drill or the scrubber finds to do. Load's
// warning holds: only for a table nobody else writes these records to.
func MintAndLoad(ctx context.Context, home *regions.Region, stores map[string]*Store, n int, app string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(seedParallel)
	for done := 0; done < n; done += seedChunk {
		k := min(seedChunk, n-done)
		g.Go(func() error {
			recs := make([]*envelope.Record, 0, k)
			for range k {
				rec, err := mintWrapped(gctx, home, stores, app)
				if err != nil {
					return err
				}
				recs = append(recs, rec)
			}
			for _, s := range stores {
				if err := s.Load(gctx, recs); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// mintWrapped mints one record for MintAndLoad, with a wrap for each region of stores.
func mintWrapped(ctx context.Context, home *regions.Region, stores map[string]*Store, app string) (*envelope.Record, error) {
	id, err := envelope.NewID()
	if err != nil {
		return nil, err
	}
	ec, err := envelope.NewContext(id, map[string]string{"app": app})
	if err != nil {
		return nil, err
	}
	dek, wrapped, arn, err := home.GenerateDataKeyRaw(ctx, ec.Map())
	if err != nil {
		return nil, err
	}
	com, err := envelope.Commitment(dek)
	envelope.Wipe(dek)
	if err != nil {
		return nil, err
	}
	if !regions.IsMultiRegionKeyARN(arn) {
		return nil, fmt.Errorf("region %s: key %s: record %s: minting for every region needs a multi-Region key", home.Name, arn, id)
	}
	now := time.Now().UTC()
	rec := &envelope.Record{ID: id, Context: ec, Commitment: com, SourceRegion: home.Name, SourceKeyARN: arn,
		CreatedAt: now, Regions: map[string]*envelope.RegionWrap{}}
	for name := range stores {
		k, err := regions.ReplicaARN(arn, name)
		if err != nil {
			return nil, fmt.Errorf("region %s: record %s: %w", name, id, err)
		}
		rec.Regions[name] = &envelope.RegionWrap{KeyARN: k, Wrapped: wrapped, WrappedAt: now}
	}
	return rec, nil
}
