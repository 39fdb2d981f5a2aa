//go:build infra

package infra

import (
	"errors"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// checkECSMonitoring (issue 23): the ECS module alarms on the queue's age, the DLQ, DynamoDB's
// ReplicationLatency towards each replica and no running task (missing data breaching: every
// daemon gone), and loads the same alert rules as the Helm chart, SLO burn-rate alerts included,
// into the Prometheus workspace the ADOT sidecar writes to, with the right to write there only.
func checkECSMonitoring(p *Plan) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	type alarm struct{ ns, metric, stat, op, missing string }
	want := map[string]alarm{
		"queue_age":        {"AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum", "GreaterThanThreshold", "notBreaching"},
		"dlq":              {"AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", "GreaterThanThreshold", "notBreaching"},
		"no_running_tasks": {"ECS/ContainerInsights", "RunningTaskCount", "Maximum", "LessThanThreshold", "breaching"},
	}
	latency := map[string]bool{}
	for _, a := range p.All("aws_cloudwatch_metric_alarm") {
		v := a.Values
		if len(v["alarm_actions"].([]any)) == 0 {
			bad("alarm %s notifies nobody", a.Address)
		}
		if !strings.Contains(str(v["alarm_description"]), "docs/RUNBOOK.md#") {
			bad("alarm %s: its description names no runbook section", a.Address)
		}
		dims, _ := v["dimensions"].(map[string]any)
		if a.Name == "replication_latency" {
			if str(v["namespace"]) != "AWS/DynamoDB" || str(v["metric_name"]) != "ReplicationLatency" || str(dims["TableName"]) != "envdr-records" {
				bad("alarm %s: want AWS/DynamoDB ReplicationLatency of envdr-records", a.Address)
			}
			latency[str(dims["ReceivingRegion"])] = true
			continue
		}
		w, ok := want[a.Name]
		if !ok {
			continue
		}
		delete(want, a.Name)
		if str(v["namespace"]) != w.ns || str(v["metric_name"]) != w.metric || str(v["statistic"]) != w.stat ||
			str(v["comparison_operator"]) != w.op || str(v["treat_missing_data"]) != w.missing {
			bad("alarm %s: %v %v %v %v %v, want %+v", a.Address, v["namespace"], v["metric_name"], v["statistic"], v["comparison_operator"], v["treat_missing_data"], w)
		}
	}
	for n := range want {
		bad("no %s alarm", n)
	}
	if len(latency) != 2 || !latency["eu-west-1"] || !latency["ap-southeast-2"] {
		bad("ReplicationLatency alarms towards %v, want eu-west-1 and ap-southeast-2", latency)
	}

	ns := p.All("aws_prometheus_rule_group_namespace")
	if len(ns) != 1 {
		bad("want one Prometheus rule group namespace, got %d", len(ns))
	} else {
		var rules struct {
			Groups []struct {
				Name  string
				Rules []struct{ Alert, Record, Expr string }
			}
		}
		if err := yaml.Unmarshal([]byte(str(ns[0].Values["data"])), &rules); err != nil {
			bad("rule group namespace: %v", err)
		}
		alerts := map[string]string{}
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				alerts[r.Alert+r.Record] = r.Expr
			}
		}
		for _, a := range []string{"EnvdrFleetAbsent", "EnvdrRegionDaemonsAbsent", "EnvdrProtectionSLOBurnFast", "EnvdrProtectionSLOBurnSlow", "EnvdrDLQNotEmpty"} {
			if alerts[a] == "" {
				bad("the workspace's rules lack %s", a)
			}
		}
		if alerts["envdr:protection_slo_objective:ratio"] != "vector(0.9999)" {
			bad("SLO objective rule %q, want vector(0.9999)", alerts["envdr:protection_slo_objective:ratio"])
		}
	}
	pols := p.All("aws_iam_role_policy")
	found := false
	for _, pol := range pols {
		if pol.Name != "remote_write" {
			continue
		}
		found = true
		doc := str(pol.Values["policy"])
		if str(pol.Values["role"]) != "envdr-daemon" || !strings.Contains(doc, `"aps:RemoteWrite"`) || strings.Contains(doc, `"aps:*"`) ||
			!strings.Contains(doc, "workspace/ws-0123abcd-4567-89ef-0123-456789abcdef") {
			bad("remote-write grant %s on %v: %s", pol.Address, pol.Values["role"], doc)
		}
	}
	if !found {
		bad("no remote-write grant for the ADOT sidecar")
	}
	return errors.Join(errs...)
}
