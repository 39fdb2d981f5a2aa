package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Fault is one service's gray failure in one region. The zero Fault injects nothing.
type Fault struct {
	// Latency is added before each request is served; Jitter widens it uniformly to
	// [Latency-Jitter, Latency+Jitter] (never below 0).
	Latency, Jitter time.Duration
	// ErrorRate is the fraction (0..1) of requests answered with a retryable server error
	// (HTTP 500 or 503, in the service's own error shape) instead of being served.
	ErrorRate float64
	// Blackhole: the request is read but never answered, until the client gives up, the
	// endpoint goes down or the stand-in stops, or the fault is cleared (then it is served).
	Blackhole bool
}

// ErrBadFault is returned for a fault that cannot be applied.
var ErrBadFault = errors.New("localaws: bad fault")

// IsZero reports whether f injects nothing.
func (f Fault) IsZero() bool { return f == Fault{} }

// Validate checks the fault's ranges.
func (f Fault) Validate() error {
	switch {
	case f.Latency < 0 || f.Jitter < 0:
		return fmt.Errorf("%w: latency and jitter must be >= 0", ErrBadFault)
	case f.ErrorRate < 0 || f.ErrorRate > 1:
		return fmt.Errorf("%w: error rate %v: want 0..1 (or 0%%..100%%)", ErrBadFault, f.ErrorRate)
	case f.Jitter > 0 && f.Latency == 0:
		return fmt.Errorf("%w: jitter without latency", ErrBadFault)
	}
	return nil
}

// String renders the fault as the CLI takes it: "latency 200ms±50ms, error-rate 30%, blackhole".
func (f Fault) String() string {
	var parts []string
	if f.Blackhole {
		parts = append(parts, "blackhole")
	}
	if f.Latency > 0 {
		s := "latency " + f.Latency.String()
		if f.Jitter > 0 {
			s += "±" + f.Jitter.String()
		}
		parts = append(parts, s)
	}
	if f.ErrorRate > 0 {
		parts = append(parts, "error-rate "+strconv.FormatFloat(f.ErrorRate*100, 'f', -1, 64)+"%")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// faultJSON is Fault on the wire: durations as Go duration strings.
type faultJSON struct {
	Latency   string  `json:"latency,omitempty"`
	Jitter    string  `json:"jitter,omitempty"`
	ErrorRate float64 `json:"error_rate,omitempty"`
	Blackhole bool    `json:"blackhole,omitempty"`
}

// MarshalJSON implements json.Marshaler.
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{ErrorRate: f.ErrorRate, Blackhole: f.Blackhole}
	if f.Latency > 0 {
		j.Latency = f.Latency.String()
	}
	if f.Jitter > 0 {
		j.Jitter = f.Jitter.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON implements json.Unmarshaler.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := Fault{ErrorRate: j.ErrorRate, Blackhole: j.Blackhole}
	var err error
	if j.Latency != "" {
		if out.Latency, err = time.ParseDuration(j.Latency); err != nil {
			return err
		}
	}
	if j.Jitter != "" {
		if out.Jitter, err = time.ParseDuration(j.Jitter); err != nil {
			return err
		}
	}
	*f = out
	return nil
}

// ParseLatency parses "D" or "D±J" (also "D+-J", for shells and keyboards without ±), with Go
// durations: "1s", "200ms±50ms", "200ms+-50ms".
func ParseLatency(s string) (latency, jitter time.Duration, err error) {
	d, j, found := strings.Cut(s, "±")
	if !found {
		d, j, found = strings.Cut(s, "+-")
	}
	if latency, err = time.ParseDuration(strings.TrimSpace(d)); err != nil || latency < 0 {
		return 0, 0, fmt.Errorf("%w: latency %q: want a duration such as 1s, 200ms±50ms or 200ms+-50ms", ErrBadFault, s)
	}
	if found {
		if jitter, err = time.ParseDuration(strings.TrimSpace(j)); err != nil || jitter < 0 {
			return 0, 0, fmt.Errorf("%w: latency %q: the jitter after ± must be a duration >= 0", ErrBadFault, s)
		}
	}
	return latency, jitter, nil
}

// ParseErrorRate parses a fraction ("0.3") or a percentage ("30%") into 0..1.
func ParseErrorRate(s string) (float64, error) {
	t := strings.TrimSpace(s)
	pct := strings.HasSuffix(t, "%")
	v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(t, "%")), 64)
	if err == nil && pct {
		v /= 100
	}
	if err != nil || v < 0 || v > 1 {
		return 0, fmt.Errorf("%w: error rate %q: want a fraction 0..1 (0.3) or a percentage (30%%)", ErrBadFault, s)
	}
	return v, nil
}
