package replicate_test

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/recovery"
)

// metricFamilies scrapes url and returns the families' names with the series names they expose
// (a histogram h exposes h_bucket, h_sum and h_count).
func metricFamilies(t *testing.T, url string) (names map[string]bool, text string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	// common v0.66+ panics on a zero TextParser: the name validation scheme must be chosen.
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(raw)))
	require.NoError(t, err)
	names = map[string]bool{}
	for n, f := range fams {
		names[n] = true
		if f.GetType().String() == "HISTOGRAM" {
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
		}
	}
	return names, string(raw)
}

// Every envdr_* metric named by an alert or a dashboard panel in deploy/monitoring exists on the
// /metrics of a running daemon (the drill's, on what a drill pushes). test/deploycheck parses
// the same expressions with the PromQL parser.
func TestMonitoringNamesExistOnDaemonMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	d := b.daemonAfterOneEvent(t)
	names, text := metricFamilies(t, "http://"+d.AdminAddr()+"/metrics")

	drill := map[string]bool{}
	fams, err := recovery.DrillGatherer(&recovery.DrillReport{Passed: true}).Gather()
	require.NoError(t, err)
	for _, f := range fams {
		drill[f.GetName()] = true
	}

	var used []string
	seen := map[string]bool{}
	for _, f := range []string{"../deploy/monitoring/prometheusrule.yaml", "../deploy/monitoring/grafana-dashboard.json"} {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, n := range regexp.MustCompile(`\benvdr_[a-z0-9_]+`).FindAllString(string(b), -1) {
			if !seen[n] {
				seen[n] = true
				used = append(used, n)
			}
		}
	}
	sort.Strings(used)
	require.Greater(t, len(used), 15)
	for _, n := range used {
		if strings.HasPrefix(n, "envdr_drill_") {
			require.True(t, drill[n], "%s is not among the drill's pushed metrics", n)
			continue
		}
		require.True(t, names[n], "%s is named in deploy/monitoring but not on the daemon's /metrics", n)
	}

	// The new metrics carry real values: the build, the KMS latency of the calls just made, and
	// both queues' depth read from SQS. Every series names the daemon's own region
	// (daemon_region), so one Prometheus over several regions tells their fleets apart.
	region := d.Region()
	require.Regexp(t, `envdr_build_info\{commit="[^"]+",daemon_region="`+region+`",goversion="go[^"]+",version="[^"]+"\} 1`, text)
	require.Regexp(t, `envdr_kms_call_seconds_count\{daemon_region="`+region+`",op="ReEncrypt",region="eu-west-1"\} [1-9]`, text)
	require.Contains(t, text, `envdr_kms_throttles_total{daemon_region="`+region+`",op="Decrypt",region="ap-southeast-2"} 0`)
	require.Contains(t, text, `envdr_queue_messages{daemon_region="`+region+`",queue="dlq",state="visible"} 0`)
	require.Contains(t, text, `envdr_queue_scrape_error{daemon_region="`+region+`",queue="events"} 0`)
	require.Regexp(t, `envdr_oldest_message_age_seconds\{daemon_region="`+region+`"\} `, text)
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "envdr_") {
			require.Contains(t, line, `daemon_region="`+region+`"`, "every envdr series is per region")
		}
	}
}
