package deploycheck

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/replicate"
)

const repo = "../.."

type ruleFile struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// expressions returns every alert expression (by alert name) and every dashboard target (by
// panel title) in deploy/monitoring.
func expressions(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "deploy/monitoring/prometheusrule.yaml"))
	require.NoError(t, err)
	var rf ruleFile
	require.NoError(t, yaml.UnmarshalStrict(b, &rf))
	require.Equal(t, "monitoring.coreos.com/v1", rf.APIVersion)
	require.Equal(t, "PrometheusRule", rf.Kind)
	out := map[string]string{}
	for _, g := range rf.Spec.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert)
			require.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], r.Alert)
			require.NotEmpty(t, r.Annotations["summary"], r.Alert)
			out["alert "+r.Alert] = r.Expr
		}
	}
	b, err = os.ReadFile(filepath.Join(repo, "deploy/monitoring/grafana-dashboard.json"))
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	require.NotEmpty(t, dash.Panels)
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for i, tg := range p.Targets {
			out["panel "+p.Title+" #"+string(rune('A'+i))] = tg.Expr
		}
	}
	return out
}

// fakeQueues answers GetQueueAttributes with 3 messages visible in the DLQ and none elsewhere.
type fakeQueues struct{}

func (fakeQueues) GetQueueAttributes(_ context.Context, in *sqs.GetQueueAttributesInput, _ ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	n := "0"
	if *in.QueueUrl == "dlq-url" {
		n = "3"
	}
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{"ApproximateNumberOfMessages": n,
		"ApproximateNumberOfMessagesNotVisible": "0", "ApproximateNumberOfMessagesDelayed": "0"}}, nil
}

// daemonMetricNames serves the daemon's metrics registry through its admin server (the same
// /metrics handler envdr run serves), scrapes it, and returns every series name on it.
func daemonMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	m := replicate.NewMetrics()
	m.InitRegions([]string{"us-east-1", "eu-west-1"})
	m.WatchQueues(fakeQueues{}, "events-url", "dlq-url")
	m.KMSCall("us-east-1", "Decrypt", 0, nil)
	srv, err := replicate.StartAdmin("127.0.0.1:0", m, replicate.NewReadiness(nil))
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close(t.Context()) })
	resp, err := http.Get("http://" + srv.Addr() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(raw), `envdr_queue_messages{queue="dlq",state="visible"} 3`)
	names := map[string]bool{}
	tp := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := tp.TextToMetricFamilies(strings.NewReader(string(raw)))
	require.NoError(t, err)
	add := func(name, typ string) {
		names[name] = true
		if typ == "HISTOGRAM" {
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		}
	}
	for n, f := range fams {
		add(n, f.GetType().String())
	}
	drill, err := recovery.DrillGatherer(&recovery.DrillReport{Passed: true}).Gather()
	require.NoError(t, err)
	for _, f := range drill {
		add(f.GetName(), f.GetType().String())
	}
	return names
}

// Every alert and panel expression parses with the PromQL parser, and every metric it selects
// exists on the daemon's /metrics (or among the drill's pushed metrics).
func TestPromQLExpressions(t *testing.T) {
	exprs := expressions(t)
	names := daemonMetricNames(t)
	p := parser.NewParser(parser.Options{})
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	alerts := 0
	for _, k := range keys {
		expr, err := p.ParseExpr(exprs[k])
		require.NoError(t, err, "%s: %s", k, exprs[k])
		var selected []string
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				selected = append(selected, vs.Name)
			}
			return nil
		})
		require.NotEmpty(t, selected, "%s selects no metric", k)
		for _, n := range selected {
			require.True(t, strings.HasPrefix(n, "envdr_"), "%s: %s is not an envdr metric", k, n)
			require.True(t, names[n], "%s: %s is not on the daemon's /metrics", k, n)
		}
		if strings.HasPrefix(k, "alert ") {
			alerts++
			require.Equal(t, parser.ValueTypeVector, expr.Type(), "%s must be an instant vector", k)
		}
	}
	require.GreaterOrEqual(t, alerts, 8)
	// A broken expression is caught: the check is not vacuous.
	_, err := p.ParseExpr(`sum by (region) (rate(envdr_kms_calls_total[5m])`)
	require.Error(t, err)
}
