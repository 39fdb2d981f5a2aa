package replicate

import "time"

// SetScrubClock sets a scrubber's clock (tests run a pass ahead of the verifications).
func SetScrubClock(s *Scrubber, now func() time.Time) { s.now = now }

// ScrubMetricsOf is a scrubber's metrics.
func ScrubMetricsOf(s *Scrubber) *ScrubMetrics { return s.m }
