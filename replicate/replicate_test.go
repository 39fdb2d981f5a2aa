package replicate_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
	"github.com/envdr/envdr/replicate/replicatetest"
)

// bundle is one test's stand-in, topology and captured logs.
type bundle struct {
	env  *localtest.Env
	cfg  *config.Config
	topo *regions.Topology // the admin: SQS and DynamoDB fixtures (no KMS key use)
	// producer and operator sign as those roles: the keys carry the rendered key policies, which
	// let the producer generate data keys and the operator decrypt, and the admin neither.
	producer, operator *regions.Topology
	logs               *observer.ObservedLogs
	log                *zap.Logger
	plain              [][]byte // plaintexts sealed, to check logs never hold them
	deks               [][]byte // DEKs seen by the test (via a recording generator), same purpose
	mu                 sync.Mutex
}

// setup gives a test its own three-region stand-in with the given per-region modes.
func setup(t *testing.T, modes map[string]string) *bundle {
	t.Helper()
	env := localtest.New(t)
	cfg := *env.Config
	cfg.Regions = append([]config.Region(nil), env.Config.Regions...)
	for i, r := range cfg.Regions {
		if m, ok := modes[r.Name]; ok && m == config.ModeIndependent {
			cfg.Regions[i].Mode = config.ModeIndependent
			cfg.Regions[i].Key = env.Keys[r.Name].Independent
		}
	}
	cfg.Worker.Visibility = 6 * time.Second
	cfg.Worker.Concurrency = 8
	require.NoError(t, cfg.Validate())
	require.NoError(t, localaws.LoadRenderedPolicies(env.IAM, &cfg)) // the roles' policies for these keys
	topo, err := regions.New(context.Background(), &cfg, regions.Options{})
	require.NoError(t, err)
	producer, err := regions.New(context.Background(), env.ConfigAs(&cfg, iam.RoleProducer), regions.Options{})
	require.NoError(t, err)
	operator, err := regions.New(context.Background(), env.ConfigAs(&cfg, iam.RoleOperator), regions.Options{})
	require.NoError(t, err)
	core, logs := observer.New(zap.DebugLevel)
	b := &bundle{env: env, cfg: &cfg, topo: topo, producer: producer, operator: operator, logs: logs, log: zap.New(core)}
	t.Cleanup(func() { b.checkNoSecretsInLogs(t) })
	return b
}

// recordingGen records the DEKs it hands out (test only) so log checks can look for them.
type recordingGen struct {
	b   *bundle
	gen envelope.KeyGenerator
}

func (g recordingGen) GenerateDataKey(ctx context.Context, ec envelope.Context) (*envelope.DataKey, error) {
	dk, err := g.gen.GenerateDataKey(ctx, ec)
	if err == nil {
		g.b.mu.Lock()
		g.b.deks = append(g.b.deks, bytes.Clone(dk.Plaintext))
		g.b.mu.Unlock()
	}
	return dk, err
}

// seal seals a random plaintext in the home region, as the producer, and returns the envelope
// and its event body.
func (b *bundle) seal(t *testing.T) (sealed []byte, body string, hdr *envelope.Header) {
	t.Helper()
	home, err := b.producer.HomeRegion()
	require.NoError(t, err)
	pt := make([]byte, 1000)
	_, _ = rand.Read(pt)
	b.mu.Lock()
	b.plain = append(b.plain, pt)
	b.mu.Unlock()
	var buf bytes.Buffer
	hdr, err = envelope.Seal(context.Background(), &buf, bytes.NewReader(pt), recordingGen{b, home}, envelope.SealOptions{Context: map[string]string{"app": "test"}})
	require.NoError(t, err)
	ev, err := envelope.NewEvent(hdr, time.Now(), "")
	require.NoError(t, err)
	raw, err := envelope.EncodeEvent(ev)
	require.NoError(t, err)
	return buf.Bytes(), string(raw), hdr
}

// sealAndSend seals n envelopes and sends each one's event copies times.
func (b *bundle) sealAndSend(t *testing.T, n, copies int) (ids []string, sealed [][]byte) {
	t.Helper()
	for i := 0; i < n; i++ {
		s, body, hdr := b.seal(t)
		ids, sealed = append(ids, hdr.RecordID()), append(sealed, s)
		for k := 0; k < copies; k++ {
			b.send(t, body)
		}
	}
	return ids, sealed
}

// verifiedEverywhere fails unless every record is verified in every region.
func (b *bundle) verifiedEverywhere(t *testing.T, ids []string) {
	t.Helper()
	for _, id := range ids {
		rec := b.record(t, "us-east-1", id)
		for _, r := range b.env.Regions {
			require.True(t, rec.Regions[r].Verified(), "record %s region %s", id, r)
		}
	}
}

func (b *bundle) sqs(t *testing.T) *sqs.Client {
	home, err := b.topo.HomeRegion()
	require.NoError(t, err)
	return home.SQS()
}

func (b *bundle) send(t *testing.T, body string) {
	t.Helper()
	_, err := b.sqs(t).SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(b.cfg.QueueURL), MessageBody: aws.String(body)})
	require.NoError(t, err)
}

func (b *bundle) daemon(t *testing.T) *replicate.Daemon { t.Helper(); return b.daemonIn(t, "") }

// daemonIn starts the daemon of region ("": the home region).
func (b *bundle) daemonIn(t *testing.T, region string) *replicate.Daemon {
	t.Helper()
	return replicatetest.StartDaemon(t, context.Background(), b.asDaemon(t), b.log, replicate.DaemonOptions{
		AdminAddr: "127.0.0.1:0", WaitTime: time.Second, RetryBase: time.Second, Region: region,
		Regions: regions.Options{MaxCooldown: time.Second, BaseBackoff: 5 * time.Millisecond},
	})
}

// waitDrained waits until the queue is empty (visible, in flight, delayed) twice in a row.
func (b *bundle) waitDrained(t *testing.T, d *replicate.Daemon, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	empty := 0
	for time.Now().Before(deadline) {
		n, err := d.QueueDepth(context.Background())
		require.NoError(t, err)
		if n == 0 {
			if empty++; empty >= 2 {
				return
			}
		} else {
			empty = 0
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("queue not drained within %s", within)
}

func (b *bundle) record(t *testing.T, region, id string) *envelope.Record {
	t.Helper()
	// What was written elsewhere (verification stamps go through the daemon's own replica)
	// reaches region's replica after the replication lag; with every region up, wait for it.
	b.env.SettleIfUp()
	r, err := b.topo.Region(region)
	require.NoError(t, err)
	rec, err := replicate.NewStore(b.cfg.Table, region, r.DynamoDB(), b.cfg.RegionNames()).Get(context.Background(), id)
	require.NoError(t, err)
	return rec
}

// daemonAfterOneEvent seals and sends one event and returns a daemon that has replicated it
// (drained the queue).
func (b *bundle) daemonAfterOneEvent(t *testing.T) *replicate.Daemon {
	t.Helper()
	_, body, _ := b.seal(t)
	b.send(t, body)
	d := b.daemon(t)
	b.waitDrained(t, d, 30*time.Second)
	return d
}

// progressedWithoutEU reports whether every record of ids, read from the home region's replica
// (no wait for replication: eu-west-1 may be unreachable), is verified in us-east-1 and
// ap-southeast-2 while eu-west-1 holds no wrap, and whether the daemon logged a failure for
// eu-west-1 that lastErr accepts. Failures are logged and counted, never written to the table
// (no item without a wrap: docs/FORMAT.md §6.1, I3).
func (b *bundle) progressedWithoutEU(t *testing.T, ids []string, lastErr func(string) bool) bool {
	t.Helper()
	r, err := b.topo.Region("us-east-1")
	require.NoError(t, err)
	store := replicate.NewStore(b.cfg.Table, "us-east-1", r.DynamoDB(), b.cfg.RegionNames())
	for _, id := range ids {
		rec, err := store.Get(context.Background(), id)
		if err != nil || !rec.Regions["ap-southeast-2"].Verified() || !rec.Regions["us-east-1"].Verified() {
			return false
		}
		if w := rec.Regions["eu-west-1"]; w != nil {
			require.Falsef(t, w.HasWrap(), "record %s: eu-west-1 has a wrap while it is unreachable", id)
			require.Emptyf(t, w.LastError, "record %s: a failure was written to eu-west-1's item", id)
		}
	}
	return b.loggedStatus("eu-west-1", lastErr)
}

// loggedStatus reports whether some event's log line gave region a status that accept takes.
func (b *bundle) loggedStatus(region string, accept func(string) bool) bool {
	for _, e := range b.logs.All() {
		if regs, ok := e.ContextMap()["regions"].(map[string]string); ok && accept(regs[region]) {
			return true
		}
	}
	return false
}

// openIn opens sealed through region alone, with that region's wrap from the record.
func (b *bundle) openIn(t *testing.T, region string, sealed []byte) []byte {
	t.Helper()
	hdr, err := envelope.ReadHeader(bytes.NewReader(sealed))
	require.NoError(t, err)
	rec := b.record(t, region, hdr.RecordID())
	r, err := b.operator.Region(region)
	require.NoError(t, err)
	var out bytes.Buffer
	_, err = envelope.Open(context.Background(), &out, bytes.NewReader(sealed), r, envelope.OpenOptions{Wrap: rec.Wrap(region)})
	require.NoError(t, err, "open through %s", region)
	return out.Bytes()
}

func (b *bundle) dlq(t *testing.T) []sqstypes.Message {
	t.Helper()
	var all []sqstypes.Message
	for i := 0; i < 5; i++ {
		out, err := b.sqs(t).ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(b.cfg.DLQURL), MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: 60,
			MessageAttributeNames: []string{"All"},
		})
		require.NoError(t, err)
		all = append(all, out.Messages...)
		if len(out.Messages) == 0 {
			break
		}
	}
	return all
}

// checkNoSecretsInLogs fails if any DEK or plaintext seen by the test appears in the logs, raw,
// base64 or hex.
func (b *bundle) checkNoSecretsInLogs(t *testing.T) {
	var all strings.Builder
	for _, e := range b.logs.All() {
		all.WriteString(e.Message)
		for k, v := range e.ContextMap() {
			fmt.Fprintf(&all, " %s=%v", k, v)
		}
		all.WriteString("\n")
	}
	text := all.String()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range append(append([][]byte(nil), b.deks...), b.plain...) {
		for _, enc := range []string{string(s), base64.StdEncoding.EncodeToString(s), fmt.Sprintf("%x", s)} {
			if strings.Contains(text, enc) {
				t.Errorf("a secret (DEK or plaintext) appears in the daemon's logs")
				return
			}
		}
	}
}

func TestReplicateModes(t *testing.T) {
	t.Parallel()
	for name, modes := range map[string]map[string]string{
		"mrk":         {},
		"independent": {"us-east-1": config.ModeIndependent, "eu-west-1": config.ModeIndependent, "ap-southeast-2": config.ModeIndependent},
		"mixed":       {"ap-southeast-2": config.ModeIndependent},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, modes)
			const n = 12
			sealed := make([][]byte, n)
			ids := make([]string, n)
			for i := range sealed {
				var body string
				var hdr *envelope.Header
				sealed[i], body, hdr = b.seal(t)
				ids[i] = hdr.RecordID()
				b.send(t, body)
			}
			b.env.ResetCounters()
			d := b.daemon(t)
			b.waitDrained(t, d, 60*time.Second)
			c := b.env.Counters() // before the test's own opens below
			for i, id := range ids {
				for _, region := range b.env.Regions {
					rec := b.record(t, region, id)
					require.Truef(t, rec.Regions[region].Verified(), "record %s region %s: %+v", id, region, rec.Regions[region])
					require.Equal(t, b.plain[i], b.openIn(t, region, sealed[i]))
				}
			}
			// One Decrypt per envelope per region: the source region's proves the event's wrap
			// before the record is written and is reused for its verification.
			for _, r := range b.env.Regions {
				require.EqualValues(t, n, c[r]["Decrypt"], "region %s", r)
			}
			switch name {
			case "mrk": // the DEK never leaves KMS outside verification: no Encrypt anywhere
				for _, r := range b.env.Regions {
					require.Zero(t, c[r]["Encrypt"], "region %s", r)
				}
				require.EqualValues(t, n, c["eu-west-1"]["ReEncrypt"])
				require.EqualValues(t, n, c["ap-southeast-2"]["ReEncrypt"])
			case "independent":
				require.Zero(t, c["eu-west-1"]["ReEncrypt"])
				require.EqualValues(t, n, c["eu-west-1"]["Encrypt"])
			case "mixed":
				require.EqualValues(t, n, c["eu-west-1"]["ReEncrypt"])
				require.EqualValues(t, n, c["ap-southeast-2"]["Encrypt"])
			}
			require.Equal(t, float64(n), testutil.ToFloat64(d.Metrics.Events.WithLabelValues("acked", "")))
			require.Empty(t, b.dlq(t))
		})
	}
}

func TestRedeliveryAndTwoWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]string{"ap-southeast-2": config.ModeIndependent})
	const n = 10
	ids, _ := b.sealAndSend(t, n, 3) // deliberate duplicates
	d1 := b.daemon(t)
	d2 := b.daemon(t)
	b.waitDrained(t, d1, 90*time.Second)
	b.waitDrained(t, d2, 10*time.Second)
	b.verifiedEverywhere(t, ids)
	for _, id := range ids {
		require.GreaterOrEqual(t, b.record(t, "us-east-1", id).Version, int64(2))
	}
	require.Empty(t, b.dlq(t))
}

func TestRegionDownThenBack(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const n = 6
	ids, sealed := b.sealAndSend(t, n, 1)
	b.env.Down("eu-west-1")
	d := b.daemon(t)
	// The healthy regions progress while eu-west-1 is down, and no message is deleted.
	require.Eventually(t, func() bool {
		return b.progressedWithoutEU(t, ids, func(status string) bool { return strings.HasPrefix(status, "failed: ") })
	}, 30*time.Second, 200*time.Millisecond)
	depth, err := d.QueueDepth(context.Background())
	require.NoError(t, err)
	require.Equal(t, n, depth, "no message may be deleted before the policy is met")
	require.Zero(t, testutil.ToFloat64(d.Metrics.Events.WithLabelValues("acked", "")))

	b.env.Up("eu-west-1")
	b.waitDrained(t, d, 60*time.Second)
	for i, id := range ids {
		rec := b.record(t, "eu-west-1", id)
		require.True(t, rec.Regions["eu-west-1"].Verified())
		require.Empty(t, rec.Regions["eu-west-1"].LastError)
		require.Equal(t, b.plain[i], b.openIn(t, "eu-west-1", sealed[i]))
	}
	require.Empty(t, b.dlq(t))
}

func TestThrottledKMS(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const n = 20
	ids, _ := b.sealAndSend(t, n, 1)
	// Far below demand: 8 workers each need 2-3 calls per region at once.
	for _, r := range b.env.Regions {
		b.env.SetRateLimit(r, 5)
	}
	d := b.daemon(t)
	b.waitDrained(t, d, 90*time.Second)
	b.verifiedEverywhere(t, ids)
	var throttles float64
	for _, r := range b.env.Regions {
		for _, op := range []string{"ReEncrypt", "Decrypt"} {
			throttles += testutil.ToFloat64(d.Metrics.Throttles.WithLabelValues(r, op))
		}
	}
	require.Greater(t, throttles, 0.0, "the stand-in throttled, and the daemon saw it")
	require.Equal(t, float64(n), testutil.ToFloat64(d.Metrics.Events.WithLabelValues("acked", "")))
	require.Empty(t, b.dlq(t))
}

func TestPoisonGoesToDLQWithReason(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]string{"ap-southeast-2": config.ModeIndependent})
	_, good, _ := b.seal(t)
	var ev map[string]any
	require.NoError(t, json.Unmarshal([]byte(good), &ev))
	mutate := func(f func(m map[string]any)) string {
		m := map[string]any{}
		raw, _ := json.Marshal(ev)
		_ = json.Unmarshal(raw, &m)
		f(m)
		out, _ := json.Marshal(m)
		return string(out)
	}
	_, other, _ := b.seal(t)
	var otherEv map[string]any
	require.NoError(t, json.Unmarshal([]byte(other), &otherEv))

	cases := map[string]struct{ body, reason string }{
		"bad json":        {`{"version":1,`, "bad_json"},
		"unknown version": {mutate(func(m map[string]any) { m["version"] = 99 }), "unknown_version"},
		"missing field":   {mutate(func(m map[string]any) { delete(m, "wrapped_dek") }), "missing_field"},
		"bad base64":      {mutate(func(m map[string]any) { m["commitment"] = "!!!" }), "bad_base64"},
		"unknown key": {mutate(func(m map[string]any) {
			m["key_arn"] = "arn:aws:kms:us-east-1:111122223333:key/mrk-00000000000000000000000000000000"
		}), replicate.ReasonUnknownKey},
		"context without envdr:id":        {mutate(func(m map[string]any) { m["context"] = map[string]string{"app": "test"} }), "bad_context"},
		"commitment mismatch":             {mutate(func(m map[string]any) { m["commitment"] = otherEv["commitment"] }), replicate.ReasonCommitmentMismatch},
		"wrapped DEK of another envelope": {mutate(func(m map[string]any) { m["wrapped_dek"] = otherEv["wrapped_dek"] }), replicate.ReasonInvalidWrap},
		"oversize":                        {`{"version":1,"id":"` + strings.Repeat("a", 300<<10) + `"}`, "oversize"},
	}
	want := map[string]string{}
	for name, c := range cases {
		b.send(t, c.body)
		want[c.reason] = name
	}
	d := b.daemon(t)
	b.waitDrained(t, d, 60*time.Second)
	got := map[string]bool{}
	for _, m := range b.dlq(t) {
		reason := aws.ToString(m.MessageAttributes["reason"].StringValue)
		require.Contains(t, want, reason, "unexpected DLQ reason %q (error %q)", reason, aws.ToString(m.MessageAttributes["error"].StringValue))
		got[reason] = true
	}
	for reason, name := range want {
		require.True(t, got[reason], "case %q: no DLQ message with reason %q", name, reason)
	}
	// The daemon keeps serving: a good event still replicates.
	_, body, hdr := b.seal(t)
	b.send(t, body)
	b.waitDrained(t, d, 30*time.Second)
	require.True(t, b.record(t, "eu-west-1", hdr.RecordID()).Regions["eu-west-1"].Verified())
}

func TestStopMidBatchLosesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const n = 40
	ids, _ := b.sealAndSend(t, n, 1)
	for _, r := range b.env.Regions {
		b.env.SetRateLimit(r, 40) // slow enough that work is in flight when we stop
	}
	d, err := replicate.NewDaemon(context.Background(), b.asDaemon(t), b.log, replicate.DaemonOptions{WaitTime: time.Second, RetryBase: time.Second})
	require.NoError(t, err)
	require.NoError(t, d.Start(context.Background()))
	time.Sleep(700 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	d.Stop(ctx) // grace shorter than the work: in-flight work is cancelled
	cancel()
	<-d.Stopped()
	for _, r := range b.env.Regions {
		b.env.SetRateLimit(r, 0)
	}
	d2 := b.daemon(t)
	b.waitDrained(t, d2, 60*time.Second)
	b.verifiedEverywhere(t, ids)
	require.Empty(t, b.dlq(t))
}

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	d := b.daemonAfterOneEvent(t)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + d.AdminAddr() + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(raw)
	}
	code, _ := get("/healthz")
	require.Equal(t, http.StatusOK, code)
	code, ready := get("/readyz")
	require.Equal(t, http.StatusOK, code, ready)
	code, metrics := get("/metrics")
	require.Equal(t, http.StatusOK, code)
	// Every series names the daemon's own region (daemon_region), first among its sorted labels.
	dr := `daemon_region="` + d.Region() + `"`
	for _, want := range []string{
		`envdr_events_total{` + dr + `,outcome="acked",reason=""} 1`,
		`envdr_kms_calls_total{` + dr + `,op="ReEncrypt",region="eu-west-1",result="ok"} 1`,
		`envdr_wrap_seconds_count{` + dr + `,region="ap-southeast-2"} 1`,
		`envdr_verify_seconds_count{` + dr + `,region="us-east-1"} 1`,
		`envdr_inflight_events{` + dr + `} 0`,
		`envdr_region_healthy{` + dr + `,region="eu-west-1"} 1`,
	} {
		require.Contains(t, metrics, want)
	}

	// Not ready while stopping.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.Ready.SetRunning(false)
	ok, _ := d.Ready.Status()
	require.False(t, ok)
	d.Stop(ctx)
}

// While a region is down, redeliveries write nothing for it: no item without a wrap may share
// the region's item with a wrap (docs/FORMAT.md §6.1, I3; issue 20's finding 2: such a write
// erased an acknowledged wrap in another replica by last-writer-wins), so the failure is counted
// in envdr_region_failures_total and logged, and the record is not rewritten on each retry.
func TestFailedRegionWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ids, _ := b.sealAndSend(t, 1, 1)
	b.env.Down("eu-west-1")
	d := b.daemon(t)
	retries := func() float64 {
		return testutil.ToFloat64(d.Metrics.Events.WithLabelValues("retry", "regions_pending"))
	}
	require.Eventually(t, func() bool { return retries() >= 1 }, 30*time.Second, 50*time.Millisecond)
	first := b.record(t, "us-east-1", ids[0])
	require.Nil(t, first.Regions["eu-west-1"], "a region whose wrap failed has no item")
	require.GreaterOrEqual(t, testutil.ToFloat64(d.Metrics.RegionFailures.WithLabelValues("eu-west-1", "wrap")), 1.0)
	require.Eventually(t, func() bool { return retries() >= 3 }, 60*time.Second, 50*time.Millisecond)
	later := b.record(t, "us-east-1", ids[0])
	require.Equal(t, first.Version, later.Version, "no rewrite on a retry")
	require.Nil(t, later.Regions["eu-west-1"])
}

// sealEventUnder seals an envelope in the home region under key (a key or alias ARN of the home
// region) and returns its event body and record ID.
func (b *bundle) sealEventUnder(t *testing.T, key string) (string, string) {
	t.Helper()
	cfg := *b.cfg
	cfg.Regions = append([]config.Region(nil), b.cfg.Regions...)
	cfg.Regions[0].Key, cfg.Regions[0].Mode = key, config.ModeIndependent
	topo, err := regions.New(context.Background(), b.env.ConfigAs(&cfg, iam.RoleProducer), regions.Options{})
	require.NoError(t, err)
	home, err := topo.HomeRegion()
	require.NoError(t, err)
	pt := []byte("sealed under " + key)
	b.mu.Lock()
	b.plain = append(b.plain, pt)
	b.mu.Unlock()
	hdr, err := envelope.Seal(context.Background(), io.Discard, bytes.NewReader(pt), recordingGen{b, home}, envelope.SealOptions{})
	require.NoError(t, err)
	ev, err := envelope.NewEvent(hdr, time.Now(), "")
	require.NoError(t, err)
	raw, err := envelope.EncodeEvent(ev)
	require.NoError(t, err)
	return string(raw), hdr.RecordID()
}

// Rotating a region to a new key: events sealed under the old key, still in flight, replicate
// when the old key is listed in previous_keys. Before issue 13 they were dead-lettered as
// unknown_key (the daemon accepted only the configured key).
func TestPreviousKeysAccepted(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	old := b.env.Keys["us-east-1"].Independent
	body, id := b.sealEventUnder(t, old)
	b.send(t, body)
	b.cfg.Regions[0].PreviousKeys = []string{old}
	require.NoError(t, b.cfg.Validate())
	// The roles' policies for the changed config, as an operator re-applies them: the
	// daemon may unwrap with the previous key.
	require.NoError(t, localaws.LoadRenderedPolicies(b.env.IAM, b.cfg))
	d := b.daemon(t)
	b.waitDrained(t, d, 60*time.Second)
	require.Empty(t, b.dlq(t))
	b.verifiedEverywhere(t, []string{id})
}

// An alias repointed to a new key while the daemon runs: events under the new key (producers
// follow the alias) and under the old one (in flight) both replicate. Before issue 13 the daemon
// compared event keys with what the alias resolved to at start-up and dead-lettered the new ones
// as unknown_key.
func TestAliasRepointedKeepsEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]string{"us-east-1": config.ModeIndependent})
	ctx := context.Background()
	kc := kms.NewFromConfig(b.env.AWSConfig("us-east-1"))
	alias := "alias/envdr-rotate"
	keyA := b.env.Keys["us-east-1"].Independent
	_, err := kc.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(keyA)})
	require.NoError(t, err)
	aliasARN := strings.Replace(keyA, ":key/"+regions.KeyID(keyA), ":"+alias, 1)
	b.cfg.Regions[0].Key = aliasARN
	require.NoError(t, b.cfg.Validate())
	// The roles' policies for the alias config (key/* scoped by kms:ResourceAliases): the
	// producer seals through the alias whichever key it names.
	require.NoError(t, localaws.LoadRenderedPolicies(b.env.IAM, b.cfg))

	bodyA, idA := b.sealEventUnder(t, aliasARN)
	// Found running this suite as envdr-daemon (issue 11): under envdr policy render's
	// policies for an alias config (key/* scoped by kms:ResourceAliases), the repointed alias
	// no longer covers key A, so IAM denies the in-flight event A's unwrap; on AWS it needs
	// key A in previous_keys (rendered as PreviousKeys). This test checks envdr's own key
	// trust, so its daemon role is given every right.
	require.NoError(t, b.env.IAM.SetPolicy(iam.RoleDaemon, iam.AdminPolicy()))
	d := b.daemon(t) // resolves the alias to key A
	nk, err := kc.CreateKey(ctx, &kms.CreateKeyInput{})
	require.NoError(t, err)
	_, err = kc.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String(alias), TargetKeyId: nk.KeyMetadata.KeyId})
	require.NoError(t, err)
	bodyB, idB := b.sealEventUnder(t, aliasARN)
	require.NotEqual(t, bodyA, bodyB)
	b.send(t, bodyB)
	b.send(t, bodyA)
	b.waitDrained(t, d, 60*time.Second)
	for _, m := range b.dlq(t) {
		t.Errorf("dead-lettered: %s: %s", aws.ToString(m.MessageAttributes["reason"].StringValue), aws.ToString(m.MessageAttributes["error"].StringValue))
	}
	b.verifiedEverywhere(t, []string{idA, idB})
}

// A blackholed region (its endpoints accept requests and never answer) is treated like a lost
// one: each call gives up after its per-attempt timeout, the region is deferred, the healthy
// regions progress, nothing is acknowledged; once the fault is cleared everything completes.
func TestRegionBlackholedThenCleared(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.cfg.Worker.KMSTimeout = 500 * time.Millisecond
	b.cfg.Worker.DynamoDBTimeout = 500 * time.Millisecond
	const n = 6
	ids, sealed := b.sealAndSend(t, n, 1)
	require.NoError(t, b.env.Stack.SetFault("eu-west-1", "", localaws.Fault{Blackhole: true}))
	d := b.daemon(t)
	require.Eventually(t, func() bool {
		return b.progressedWithoutEU(t, ids, func(lastErr string) bool {
			return strings.Contains(lastErr, "no answer within 500ms") || strings.Contains(lastErr, "marked unhealthy")
		})
	}, 30*time.Second, 200*time.Millisecond, "the healthy regions progress while eu-west-1 is blackholed")
	require.Zero(t, testutil.ToFloat64(d.Metrics.Events.WithLabelValues("acked", "")))
	require.Zero(t, testutil.ToFloat64(d.Metrics.Healthy.WithLabelValues("eu-west-1")))

	require.NoError(t, b.env.Stack.ClearFaults("eu-west-1", ""))
	b.waitDrained(t, d, 60*time.Second)
	b.verifiedEverywhere(t, ids)
	for i, id := range ids {
		require.Empty(t, b.record(t, "eu-west-1", id).Regions["eu-west-1"].LastError)
		require.Equal(t, b.plain[i], b.openIn(t, "eu-west-1", sealed[i]))
	}
	require.Empty(t, b.dlq(t))
}

// A queue endpoint that stops answering makes receives fail after the long-poll wait plus
// worker.sqs_timeout (logged, backed off) instead of hanging the fetch loop; when it answers
// again the events are handled.
func TestQueueBlackholedReceiveIsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.cfg.Worker.SQSTimeout = 500 * time.Millisecond
	ids, _ := b.sealAndSend(t, 3, 1)
	require.NoError(t, b.env.Stack.SetFault("us-east-1", localaws.ServiceSQS, localaws.Fault{Blackhole: true}))
	d := b.daemon(t)
	require.Eventually(t, func() bool {
		return b.logs.FilterMessage("receive failed; backing off").Len() >= 2
	}, 20*time.Second, 100*time.Millisecond, "receives against a blackholed queue endpoint must fail, not hang")
	require.Zero(t, testutil.ToFloat64(d.Metrics.Events.WithLabelValues("acked", "")))
	require.NoError(t, b.env.Stack.ClearFaults("us-east-1", ""))
	b.waitDrained(t, d, 60*time.Second)
	b.verifiedEverywhere(t, ids)
	require.Equal(t, float64(len(ids)), testutil.ToFloat64(d.Metrics.Events.WithLabelValues("acked", "")))
}

// The same events reach the daemons of two regions at once (the sealing region's queue and the
// copy in the next region's, here without the copy delay), with 1 s of replication lag: each
// daemon writes wraps and verifications through its own replica, and last writer wins between
// the replicas. Whatever the interleaving, every replica ends with a verified wrap for every
// region, and both daemons ack only once every region's own replica holds its wrap.
func TestTwoRegionsDaemonsSameEventsUnderLag(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.env.SetLag(time.Second)
	const n = 8
	euQ, _ := b.cfg.Queues("eu-west-1")
	eu, err := b.topo.Region("eu-west-1")
	require.NoError(t, err)
	var ids []string
	for i := 0; i < n; i++ {
		_, body, hdr := b.seal(t)
		ids = append(ids, hdr.RecordID())
		b.send(t, body)
		_, err := eu.SQS().SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(euQ), MessageBody: aws.String(body)})
		require.NoError(t, err)
	}
	ds := []*replicate.Daemon{b.daemonIn(t, "us-east-1"), b.daemonIn(t, "eu-west-1")}
	for _, d := range ds {
		b.waitDrained(t, d, 90*time.Second)
	}
	for _, region := range b.env.Regions {
		for _, id := range ids {
			rec := b.record(t, region, id) // settles replication first
			for _, r := range b.env.Regions {
				require.Truef(t, rec.Regions[r].Verified(), "replica %s: record %s: region %s lost its verified wrap", region, id, r)
			}
		}
	}
	require.Empty(t, b.dlq(t))
	for _, d := range ds {
		// Each daemon acks each of its copies (a redelivered copy may be acked again: idempotent).
		require.GreaterOrEqual(t, testutil.ToFloat64(d.Metrics.Events.WithLabelValues("acked", "")), float64(n))
	}
}

// mrk_wrap: shared records the source wrap under each replica's ARN and proves it with that
// region's Decrypt: N KMS calls per envelope (here 3: the source's Decrypt, which also verifies
// it, and one Decrypt per other region), no ReEncrypt, instead of 2N-1 = 5.
func TestSharedMRKWrapCallsPerEnvelope(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.cfg.MRKWrap = config.MRKWrapShared
	require.NoError(t, b.cfg.Validate())
	const n = 6
	ids, sealed := b.sealAndSend(t, n, 1)
	b.env.ResetCounters()
	d := b.daemon(t)
	b.waitDrained(t, d, 60*time.Second)
	c := b.env.Counters()
	calls := 0
	for _, r := range b.env.Regions {
		require.Zero(t, c[r]["ReEncrypt"], "region %s", r)
		require.EqualValues(t, n, c[r]["Decrypt"], "region %s: one Decrypt per envelope proves its wrap", r)
		calls += int(c[r]["Decrypt"] + c[r]["Encrypt"] + c[r]["ReEncrypt"])
	}
	require.Equal(t, 3*n, calls, "N calls per envelope with N regions")
	for i, id := range ids {
		for _, r := range b.env.Regions {
			rec := b.record(t, r, id)
			require.True(t, rec.Regions[r].Verified())
			require.Equal(t, b.env.Keys[r].MRK, rec.Regions[r].KeyARN, "the wrap is recorded under %s's replica", r)
			require.Equal(t, b.plain[i], b.openIn(t, r, sealed[i]))
		}
	}
}

// A redelivery cannot undo a rewrap (issue 13, item 7): the record's source-region wrap was
// replaced (rewrap to a new wrap, unverified, later wrapped_at); the original event, delivered
// again, carries the original wrap, which the merge used to prefer (earlier wrapped_at) and put
// back. Now an event only fills regions without a wrap.
func TestRedeliveryCannotUndoRewrap(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	_, body, hdr := b.seal(t)
	id := hdr.RecordID()
	b.send(t, body)
	d := b.daemon(t)
	b.waitDrained(t, d, 60*time.Second)
	rec := b.record(t, "us-east-1", id)
	old := rec.Regions["us-east-1"]
	require.True(t, old.Verified())

	home, err := b.topo.HomeRegion()
	require.NoError(t, err)
	rw, err := regions.New(context.Background(), b.env.ConfigAs(b.cfg, iam.RoleRewrap), regions.Options{})
	require.NoError(t, err)
	rwHome, err := rw.HomeRegion()
	require.NoError(t, err)
	rewrapped, arn, err := rwHome.ReEncrypt(context.Background(), old.Wrapped, old.KeyARN, "", rec.Context.Map())
	require.NoError(t, err)
	require.NotEqual(t, old.Wrapped, rewrapped)
	store := replicate.NewStore(b.cfg.Table, "us-east-1", home.DynamoDB(), b.cfg.RegionNames())
	_, err = store.Update(context.Background(), id, func(cur *envelope.Record) (*envelope.Record, error) {
		next := cur.Clone()
		next.Regions["us-east-1"] = &envelope.RegionWrap{KeyARN: arn, Wrapped: rewrapped, WrappedAt: time.Now().UTC()}
		return next, nil
	})
	require.NoError(t, err)

	b.send(t, body) // the original event again
	b.waitDrained(t, d, 60*time.Second)
	got := b.record(t, "us-east-1", id).Regions["us-east-1"]
	require.Equal(t, rewrapped, got.Wrapped, "the redelivered event put the pre-rewrap wrap back")
	require.True(t, got.Verified(), "the rewrapped wrap is verified by the redelivery")
}

// envdr_protection_seconds (issue 23): one sample per envelope, from its seal to the ack that
// found every required region's replica holding its verified wrap; a later copy of an already
// protected envelope adds none.
func TestProtectionTimeObservedOncePerEnvelope(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	var bodies []string
	for i := 0; i < 3; i++ {
		_, body, _ := b.seal(t)
		bodies = append(bodies, body)
		b.send(t, body)
	}
	d := b.daemon(t)
	b.waitDrained(t, d, time.Minute)
	count := func() uint64 {
		var m dto.Metric
		require.NoError(t, d.Metrics.Protection.WithLabelValues("us-east-1").(prometheus.Histogram).Write(&m))
		return m.GetHistogram().GetSampleCount()
	}
	require.Equal(t, uint64(3), count())
	var m dto.Metric
	require.NoError(t, d.Metrics.Protection.WithLabelValues("us-east-1").(prometheus.Histogram).Write(&m))
	require.Positive(t, m.GetHistogram().GetSampleSum())
	for _, body := range bodies {
		b.send(t, body) // copies, after the fact
	}
	acked := func() float64 { return testutil.ToFloat64(d.Metrics.Events.WithLabelValues("acked", "")) }
	require.Eventually(t, func() bool { return acked() >= 6 }, time.Minute, 50*time.Millisecond)
	require.Equal(t, uint64(3), count(), "a copy of a protected envelope is no protection moment")
}

// A message delivered before whose record already looks protected was left by a pass that did
// not ack (say, a region lost between its verification and the ack's re-read): its ack is the
// envelope's first, and is observed; a fresh copy still is not.
func TestProtectionTimeObservedOnRedelivery(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	_, body, _ := b.seal(t)
	m := replicate.NewMetrics()
	topo, err := regions.New(context.Background(), b.asDaemon(t), regions.Options{})
	require.NoError(t, err)
	p, err := replicate.NewPipeline(topo, "us-east-1", b.log, m, nil)
	require.NoError(t, err)
	count := func() uint64 {
		var dm dto.Metric
		require.NoError(t, m.Protection.WithLabelValues("us-east-1").(prometheus.Histogram).Write(&dm))
		return dm.GetHistogram().GetSampleCount()
	}
	ctx := context.Background()
	res := p.Handle(ctx, replicate.Message{ID: "m1", Body: body, ReceiveCount: 1})
	require.Equal(t, replicate.Ack, res.Verdict, "first pass: %v", res.Err)
	require.Equal(t, uint64(1), count())
	res = p.Handle(ctx, replicate.Message{ID: "m2", Body: body, ReceiveCount: 1})
	require.Equal(t, replicate.Ack, res.Verdict, "a copy: %v", res.Err)
	require.Equal(t, uint64(1), count(), "a fresh copy of a protected envelope is no protection moment")
	res = p.Handle(ctx, replicate.Message{ID: "m1", Body: body, ReceiveCount: 2})
	require.Equal(t, replicate.Ack, res.Verdict, "redelivery: %v", res.Err)
	require.Equal(t, uint64(2), count(), "a redelivered message's ack is observed: its earlier pass did not ack")
	res = p.Handle(ctx, replicate.Message{ID: "m3", Body: body, ReceiveCount: 1, FirstSentAt: time.Now().Add(-time.Minute)})
	require.Equal(t, replicate.Ack, res.Verdict, "re-sent: %v", res.Err)
	require.Equal(t, uint64(3), count(), "a re-sent message (requeued before the redrive limit) counts as delivered before")
}
