package replicate

import (
	"hash/fnv"
	"slices"
	"sort"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
)

// AckRule is the replication policy as the daemon acknowledges by it (config policy: required
// regions, quorum, verification sampling): which regions must hold a (verified) wrap before an
// event is acknowledged. It lives here, with the ack; package policy is about IAM and key
// policies.
type AckRule struct {
	// Required regions must each be satisfied (unless Quorum is set and met).
	Required []string
	// Quorum > 0 also accepts any Quorum of Regions being satisfied.
	Quorum int
	// Regions is every configured region.
	Regions []string
	// SamplePercent of events are verified (100: all, 0: none).
	SamplePercent float64
}

// AckRuleFromConfig reads the policy section of the config.
func AckRuleFromConfig(c *config.Config) AckRule {
	pct, _ := c.Policy.SamplePercent() // validated at load
	return AckRule{Required: c.Policy.Required, Quorum: c.Policy.Quorum, Regions: c.RegionNames(), SamplePercent: pct}
}

// Sampled reports whether the envelope with this ID is verified under the policy. The choice is
// a stable hash of the ID, so every worker and every redelivery agrees.
func (p AckRule) Sampled(id string) bool {
	switch {
	case p.SamplePercent >= 100:
		return true
	case p.SamplePercent <= 0:
		return false
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return float64(h.Sum64()%10000) < p.SamplePercent*100
}

// Counts reports whether region's state can change the verdict: a required region, or, with a
// quorum, any configured region.
func (p AckRule) Counts(region string) bool {
	return p.Quorum > 0 || slices.Contains(p.Required, region)
}

// Met reports whether rec satisfies the policy: a region is satisfied when it holds a wrap and,
// if the envelope is sampled for verification, that wrap is verified. missing lists the required
// regions (or, for a quorum, all regions) not yet satisfied, sorted.
func (p AckRule) Met(rec *envelope.Record) (ok bool, missing []string) {
	verify := p.Sampled(rec.ID)
	sat := func(region string) bool {
		w := rec.Regions[region]
		if verify {
			return w.Verified()
		}
		return w.HasWrap()
	}
	allRequired := true
	for _, r := range p.Required {
		if !sat(r) {
			allRequired = false
			missing = append(missing, r)
		}
	}
	if allRequired && (len(p.Required) > 0 || p.Quorum == 0) {
		return true, nil
	}
	if p.Quorum > 0 {
		n := 0
		missing = missing[:0]
		for _, r := range p.Regions {
			if sat(r) {
				n++
			} else {
				missing = append(missing, r)
			}
		}
		if n >= p.Quorum {
			return true, nil
		}
	}
	sort.Strings(missing)
	return false, missing
}
