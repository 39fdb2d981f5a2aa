package deploycheck

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
				Record      string            `json:"record,omitempty"`
				Alert       string            `json:"alert,omitempty"`
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
			if r.Record != "" {
				require.Empty(t, r.Alert)
				require.Regexp(t, `^envdr:[a-z0-9_]+:[a-z0-9_]+$`, r.Record, "recording rules are named level:metric:operations")
				out["record "+r.Record] = r.Expr
				continue
			}
			require.NotEmpty(t, r.Alert)
			require.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], r.Alert)
			require.NotEmpty(t, r.Annotations["summary"], r.Alert)
			out["alert "+r.Alert] = r.Expr
			out["runbook "+r.Alert] = r.Annotations["runbook_url"]
		}
	}
	b, err = os.ReadFile(filepath.Join(repo, "deploy/monitoring/grafana-dashboard.json"))
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	require.NotEmpty(t, dash.Panels)
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
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
	m := replicate.NewRegionMetrics("us-east-1")
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
	require.Contains(t, string(raw), `envdr_queue_messages{daemon_region="us-east-1",queue="dlq",state="visible"} 3`)
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

// external are the series alerts may name that are not envdr's: Prometheus's own per-target
// up, and DynamoDB's ReplicationLatency as YACE exports it (docs/RUNBOOK.md#envdrreplicationlag).
var external = map[string]bool{"up": true, "aws_dynamodb_replication_latency_average": true}

// perRegion are the labels that make an alert per region: the daemon's own region, the region
// a wrap is for, the sealing region, the lost region of a drill, or the CloudWatch metric's.
var perRegion = []string{"daemon_region", "region", "source_region", "lost_region"}

// Every alert and panel expression parses with the PromQL parser, and every metric it selects
// exists on the daemon's /metrics (or among the drill's pushed metrics, or is a recording rule
// of the same file). Every alert keeps a region label and links its docs/RUNBOOK.md section.
func TestPromQLExpressions(t *testing.T) {
	exprs := expressions(t)
	names := daemonMetricNames(t)
	for k := range exprs {
		if r, ok := strings.CutPrefix(k, "record "); ok {
			names[r] = true
		}
	}
	runbook, err := os.ReadFile(filepath.Join(repo, "docs/RUNBOOK.md"))
	require.NoError(t, err)
	anchors := markdownAnchors(string(runbook))
	p := parser.NewParser(parser.Options{})
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	alerts := 0
	for _, k := range keys {
		if name, ok := strings.CutPrefix(k, "runbook "); ok {
			base, anchor, found := strings.Cut(exprs[k], "#")
			require.True(t, found, "%s: runbook_url %q names no section", name, exprs[k])
			require.Equal(t, "https://github.com/envdr/envdr/blob/main/docs/RUNBOOK.md", base, name)
			require.Equal(t, strings.ToLower(name), anchor, "%s: its runbook section is the alert's name", name)
			require.True(t, anchors[anchor], "%s: docs/RUNBOOK.md has no section #%s", name, anchor)
			continue
		}
		expr, err := p.ParseExpr(exprs[k])
		require.NoError(t, err, "%s: %s", k, exprs[k])
		var selected []string
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				selected = append(selected, vs.Name)
			}
			return nil
		})
		if k != "record envdr:protection_slo_objective:ratio" { // a constant: the SLO's objective
			require.NotEmpty(t, selected, "%s selects no metric", k)
		}
		for _, n := range selected {
			if external[n] && strings.HasPrefix(k, "alert ") {
				continue
			}
			require.True(t, strings.HasPrefix(n, "envdr_") || strings.HasPrefix(n, "envdr:"), "%s: %s is not an envdr metric", k, n)
			require.True(t, names[n], "%s: %s is not on the daemon's /metrics nor a recording rule", k, n)
		}
		if strings.HasPrefix(k, "alert ") {
			alerts++
			require.Equal(t, parser.ValueTypeVector, expr.Type(), "%s must be an instant vector", k)
			// Fleet-wide by design: every daemon gone (absent) and one target down (by job and
			// instance, the job naming the region).
			// Through a recording rule, the label is in that rule's expression.
			text := exprs[k]
			for _, n := range selected {
				text += "\n" + exprs["record "+n]
			}
			if k != "alert EnvdrFleetAbsent" && k != "alert EnvdrDaemonDown" && k != "alert EnvdrDrillNeverRun" {
				require.True(t, slices.ContainsFunc(perRegion, func(l string) bool { return strings.Contains(text, l) }),
					"%s keeps no region label: %s", k, exprs[k])
			}
		}
	}
	require.GreaterOrEqual(t, alerts, 17)
	// A broken expression is caught: the check is not vacuous.
	_, err = p.ParseExpr(`sum by (region) (rate(envdr_kms_calls_total[5m])`)
	require.Error(t, err)
}

// markdownAnchors returns the GitHub anchors of a Markdown file's headings.
func markdownAnchors(md string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(md, "\n") {
		h := strings.TrimLeft(line, "#")
		if h == line || !strings.HasPrefix(h, " ") {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(h)) {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		out[b.String()] = true
	}
	return out
}

// scripts/promtool-test.sh feeds promtool the PrometheusRule's spec cut out with awk (no yq on
// the machine): that cut must be exactly the spec YAML parses to.
func TestPromtoolRulesExtraction(t *testing.T) {
	cmd := exec.Command("awk", `f { sub(/^  /, ""); print } /^spec:$/ { f = 1 }`, filepath.Join(repo, "deploy/monitoring/prometheusrule.yaml"))
	cut, err := cmd.Output()
	require.NoError(t, err)
	var plain, want map[string]any
	require.NoError(t, yaml.Unmarshal(cut, &plain))
	b, err := os.ReadFile(filepath.Join(repo, "deploy/monitoring/prometheusrule.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &want))
	require.Equal(t, want["spec"], plain)
	require.Len(t, plain["groups"], 6)
	// The ECS Terraform module loads the same rules into Amazon Managed Service for Prometheus.
	tf, err := os.ReadFile(filepath.Join(repo, "terraform/modules/ecs-ops/files/prometheusrule.yaml"))
	require.NoError(t, err)
	require.Equal(t, string(b), string(tf), "cp deploy/monitoring/prometheusrule.yaml terraform/modules/ecs-ops/files/")
	script, err := os.ReadFile(filepath.Join(repo, "scripts/promtool-test.sh"))
	require.NoError(t, err)
	require.Contains(t, string(script), cmd.Args[1], "the script cuts the spec as this test does")
}

// The dashboard can be narrowed to regions and namespaces: both variables exist, and every
// panel's query uses them (the drill's pushed series have no daemon or namespace: they follow
// the region variable through lost_region).
func TestDashboardVariables(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repo, "deploy/monitoring/grafana-dashboard.json"))
	require.NoError(t, err)
	var dash struct {
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
				IncludeAll bool   `json:"includeAll"`
				AllValue   string `json:"allValue"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	vars := map[string]string{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = v.Definition
		if v.Type == "query" {
			require.True(t, v.IncludeAll, v.Name)
			require.Equal(t, ".*", v.AllValue, "%s: All matches series without the label too", v.Name)
		}
	}
	require.Contains(t, vars["region"], "daemon_region")
	require.Contains(t, vars["namespace"], "namespace")
	protection := false
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			require.Contains(t, tg.Expr, `=~"$region"`, p.Title)
			if !strings.Contains(tg.Expr, "envdr_drill_") {
				require.Contains(t, tg.Expr, `daemon_region=~"$region"`, p.Title)
				require.Contains(t, tg.Expr, `namespace=~"$namespace"`, p.Title)
			}
			if strings.Contains(tg.Expr, "histogram_quantile(0.9999, sum by (source_region, le) (rate(envdr_protection_seconds_bucket") {
				protection = true
			}
		}
	}
	require.True(t, protection, "a panel shows the protection time's p99.99")
}
