// Package loadavg reads the machine's load averages, which benchmarks print beside every figure
// (on a shared machine, a rate means little without the load it was measured under).
package loadavg

import (
	"os"
	"strings"
)

// String returns the 1, 5 and 15 minute load averages as /proc/loadavg gives them
// ("0.53 1.66 2.18"), or "?" where there is no /proc/loadavg.
func String() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
