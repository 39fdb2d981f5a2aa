package recovery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws/admin"
	"github.com/envdr/envdr/policy"
)

// CheckDaemonPermissions is the doctor's check that the daemon role may make every call `envdr
// run` makes, evaluated by the local stand-in (POST /iam/simulate on its admin endpoint) with
// the keys' own policies.
const CheckDaemonPermissions = "daemon-permissions"

// DaemonRole is the role the stand-in's envdr-daemon profile signs as.
const DaemonRole = admin.RoleDaemon

// daemonCalls lists (region, action, resource, key policy) the daemon needs in one region: its
// key's cryptographic actions with envdr:id in the context and DescribeKey, its table replica's
// item actions, and on the region's (and the home) queue the consume, GetQueueAttributes and
// SendMessage actions (the re-send before redrive), SendMessage on the DLQ.
func daemonCalls(cfg *config.Config, rc config.Region, keyARN string, keyPolicy *string) []admin.SimulateRequest {
	account := arnAccount(rc.Key)
	ctx := map[string][]string{"kms:EncryptionContextKeys": {policy.ContextKey}, "kms:EncryptionContext:" + policy.ContextKey: {"doctor"}}
	var out []admin.SimulateRequest
	kmsActions := []string{"kms:Decrypt", "kms:Encrypt"}
	if rc.Mode == config.ModeMRK {
		kmsActions = append(kmsActions, "kms:ReEncryptFrom", "kms:ReEncryptTo")
	}
	if keyPolicy != nil { // a key that could not be read is the key checks' finding
		for _, a := range kmsActions {
			out = append(out, admin.SimulateRequest{Action: a, Resource: keyARN, Context: ctx, KeyPolicy: keyPolicy})
		}
		out = append(out, admin.SimulateRequest{Action: "kms:DescribeKey", Resource: keyARN, KeyPolicy: keyPolicy})
	}
	table := fmt.Sprintf("arn:aws:dynamodb:%s:%s:table/%s", rc.Name, account, cfg.Table)
	var queues, dlqs []string
	if rc.Name == cfg.HomeRegion {
		queues, dlqs = append(queues, cfg.QueueURL), append(dlqs, cfg.DLQURL)
	}
	queues, dlqs = append(queues, rc.QueueURL), append(dlqs, rc.DLQURL)
	for _, a := range policy.DaemonActions() {
		switch {
		case strings.HasPrefix(a, "dynamodb:"):
			out = append(out, admin.SimulateRequest{Action: a, Resource: table})
		case strings.HasPrefix(a, "sqs:"):
			for _, q := range dedup(queues) {
				out = append(out, admin.SimulateRequest{Action: a, Resource: queueARN(q, rc.Name, account)})
			}
		}
	}
	for _, q := range dedup(dlqs) {
		out = append(out, admin.SimulateRequest{Action: "sqs:SendMessage", Resource: queueARN(q, rc.Name, account)})
	}
	for i := range out {
		out[i].Role, out[i].Region = DaemonRole, rc.Name
	}
	return out
}

func dedup(list []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range list {
		if v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

func arnAccount(arn string) string {
	p := strings.SplitN(arn, ":", 6)
	if len(p) == 6 {
		return p[4]
	}
	return ""
}

// queueARN is arn:aws:sqs:REGION:ACCOUNT:NAME of a queue URL (region from an sqs.REGION host,
// account from the path), as `envdr policy render` and the stand-in derive it.
func queueARN(raw, region, account string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 {
		return raw
	}
	if h := strings.Split(u.Hostname(), "."); len(h) >= 3 && h[0] == "sqs" {
		region = h[1]
	}
	if len(parts[0]) == 12 {
		account = parts[0]
	}
	return fmt.Sprintf("arn:aws:sqs:%s:%s:%s", region, account, parts[1])
}

// doctorPermissions asks the stand-in whether the daemon role may make each call; on AWS (no
// local admin endpoint) it adds nothing: `envdr policy lint` checks a daemon policy there
// (rule daemon-missing-action).
func doctorPermissions(ctx context.Context, cfg *config.Config, facts map[string]*regionFacts, add func(Check)) {
	if cfg.Local == nil || cfg.Local.Admin == "" {
		return
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for _, rc := range cfg.Regions {
		keyARN, keyPolicy := rc.Key, (*string)(nil)
		if f := facts[rc.Name]; f != nil && f.md != nil && f.md.Arn != nil {
			keyARN = *f.md.Arn
			if f.policy != nil {
				p := string(f.policy.Doc.JSON())
				keyPolicy = &p
			}
		}
		var missing []string
		var denial string
		for _, q := range daemonCalls(cfg, rc, keyARN, keyPolicy) {
			res, err := simulate(ctx, hc, cfg.Local.Admin, q)
			if err != nil {
				add(Check{Check: CheckDaemonPermissions, Region: rc.Name, Target: DaemonRole, Status: StatusWarn,
					Detail: "cannot evaluate the daemon role's permissions: " + err.Error(),
					Fix:    "start the stand-in (make local-up) or lint the daemon policy: envdr policy lint iam-daemon.json"})
				return
			}
			if !res.Allowed {
				missing = append(missing, q.Action+" on "+q.Resource)
				if denial == "" {
					denial = res.Message
				}
			}
		}
		if len(missing) == 0 {
			add(Check{Check: CheckDaemonPermissions, Region: rc.Name, Target: DaemonRole, Status: StatusPass,
				Detail: "the daemon role may make every call envdr run makes here (key, table, queue, DLQ)"})
			continue
		}
		sort.Strings(missing)
		add(Check{Check: CheckDaemonPermissions, Region: rc.Name, Target: DaemonRole, Status: StatusFail,
			Detail: fmt.Sprintf("the daemon role may not: %s (%s)", strings.Join(missing, ", "), denial),
			Fix:    "attach envdr policy render's iam-daemon.json to the daemon role (locally: PUT /iam/roles/envdr-daemon/policy on the admin endpoint)"})
	}
}

func simulate(ctx context.Context, hc *http.Client, adminURL string, q admin.SimulateRequest) (admin.SimulateResult, error) {
	var res admin.SimulateResult
	body, _ := json.Marshal(q)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(adminURL, "/")+"/iam/simulate", bytes.NewReader(body))
	if err != nil {
		return res, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("POST /iam/simulate: %s", resp.Status)
	}
	return res, json.NewDecoder(resp.Body).Decode(&res)
}
