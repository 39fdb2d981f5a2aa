package sim

import "github.com/envdr/envdr/recovery"

// requireCurrent is the retirement gate's verify (`envdr verify --require-current`): a wrap must
// be under its region's current key.
func requireCurrent(o recovery.VerifyOptions) recovery.VerifyOptions {
	o.RequireCurrent = true
	return o
}
