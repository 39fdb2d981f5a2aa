package replicate

import "time"

// SetScrubClock sets a scrubber's clock (tests run a pass ahead of the verifications).
func SetScrubClock(s *Scrubber, now func() time.Time) { s.now = now }

// ScrubMetricsOf is a scrubber's metrics.
func ScrubMetricsOf(s *Scrubber) *ScrubMetrics { return s.m }

// SetScrubPage sets how many records a scrubber reads per scan page (tests make segments span
// several pages, so the next page is read while one is checked).
func SetScrubPage(s *Scrubber, n int32) { s.pages = n }
