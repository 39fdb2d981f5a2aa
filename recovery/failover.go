package recovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// ErrPrimaryRegionUnavailable: the multi-Region key's current primary Region does not answer.
// KMS makes UpdatePrimaryRegion a call in the current primary's Region (and needs both keys
// Enabled), so a primary cannot be moved away from a lost Region: the replicas keep encrypting
// and decrypting on their own, and only the key's management (rotation, new replicas) waits.
var ErrPrimaryRegionUnavailable = errors.New("the multi-Region key's primary Region does not answer")

// PromoteResult is what Promote did.
type PromoteResult struct {
	Key         string  `json:"key"`
	From        string  `json:"from"`
	To          string  `json:"to"`
	Changed     bool    `json:"changed"`
	WaitSeconds float64 `json:"wait_seconds"`
}

// Promote makes region's replica the primary of the configured multi-Region key
// (UpdatePrimaryRegion, called in the current primary's Region) and waits until region's key
// reports itself primary. https://docs.aws.amazon.com/kms/latest/developerguide/multi-region-update.html
func Promote(ctx context.Context, cfg *config.Config, region string, opts regions.Options) (*PromoteResult, error) {
	rc, ok := cfg.Region(region)
	if !ok {
		return nil, fmt.Errorf("region %s: %w (configured: %v)", region, regions.ErrNotConfigured, cfg.RegionNames())
	}
	if rc.Mode != config.ModeMRK {
		return nil, fmt.Errorf("region %s: mode is %s: only a multi-Region key has a primary to move", region, rc.Mode)
	}
	topo, err := regions.New(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	target, err := topo.Region(region)
	if err != nil {
		return nil, err
	}
	md, err := describe(ctx, target, rc.Key)
	if err != nil {
		return nil, err
	}
	if !aws.ToBool(md.MultiRegion) {
		return nil, fmt.Errorf("region %s: key %s is not a multi-Region key", region, aws.ToString(md.Arn))
	}
	primaryARN, primaryRegion := primaryOf(md)
	res := &PromoteResult{Key: primaryARN, From: primaryRegion, To: region}
	if primaryRegion == region {
		return res, nil
	}
	src, err := topo.Region(primaryRegion)
	if err != nil {
		return nil, fmt.Errorf("the primary %s is in %s, which is not configured: add it to regions (with its endpoints) to move the primary from there: %w", primaryARN, primaryRegion, err)
	}
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	_, err = src.KMS().UpdatePrimaryRegion(cctx, &kms.UpdatePrimaryRegionInput{KeyId: aws.String(primaryARN), PrimaryRegion: aws.String(region)})
	cancel()
	if err != nil {
		if regions.IsConnError(err) || errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("region %s: UpdatePrimaryRegion of %s: %w: KMS moves a primary only through its current Region. "+
				"The replicas in the other regions keep sealing, replicating and opening on their own; rotation and new replicas wait until %s answers (then run this again): %v",
				primaryRegion, primaryARN, ErrPrimaryRegionUnavailable, primaryRegion, err)
		}
		return nil, fmt.Errorf("region %s: UpdatePrimaryRegion of %s to %s: %w", primaryRegion, primaryARN, region, err)
	}
	res.Changed = true
	// The update settles asynchronously (both keys Updating for a moment).
	for {
		md, err := describe(ctx, target, rc.Key)
		if err == nil {
			if _, pr := primaryOf(md); pr == region && md.KeyState == kmstypes.KeyStateEnabled {
				break
			}
		}
		if time.Since(start) > 2*time.Minute {
			return nil, fmt.Errorf("region %s: still not the primary of %s two minutes after UpdatePrimaryRegion", region, primaryARN)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	res.WaitSeconds = time.Since(start).Seconds()
	return res, nil
}

func describe(ctx context.Context, r *regions.Region, key string) (*kmstypes.KeyMetadata, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := r.KMS().DescribeKey(cctx, &kms.DescribeKeyInput{KeyId: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("region %s: DescribeKey %s: %w", r.Name, key, err)
	}
	return out.KeyMetadata, nil
}
