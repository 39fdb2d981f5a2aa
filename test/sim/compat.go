package sim

import "github.com/envdr/envdr/recovery"

// requireCurrent is the retirement gate's verify: wraps must be under each region's current key.
// (Before `verify --require-current` existed, a plain verify was the documented gate.)
func requireCurrent(o recovery.VerifyOptions) recovery.VerifyOptions { return o }
