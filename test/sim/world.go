package sim

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	kmssvc "github.com/envdr/envdr/localaws/kms"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// Regions of every simulated world, home first.
var Regions = []string{"us-east-1", "eu-west-1", "ap-southeast-2"}

const (
	table     = "envdr-records"
	accessKey = "AKIASIMULATION"
	secretKey = "simulation-secret"
)

// world is one schedule's universe: the in-process KMS stand-in (the real kms.Service behind
// the real SDK clients), the global-table model, the queues, the daemons, and what the checker
// knows (every DEK it made, every ack, every verify that passed).
type world struct {
	seed uint64
	net  *network
	kms  *kmssvc.Service
	gt   *globalTable
	rng  *rand.Rand

	cfgMu sync.Mutex
	cfg   *config.Config
	// keys: region -> multi-Region key ARN (replica) and independent key ARN.
	mrk, indep map[string]string
	retired    map[string][]string // region -> keys rewrap moved away from

	logs *syncBuffer
	log  *zap.Logger

	admin *session

	mu        sync.Mutex
	envs      []*sealed
	byID      map[string]*sealed
	queues    map[string]*queue
	daemons   map[string][]*daemon // region -> slots
	acked     map[string]bool      // envelope IDs acknowledged by some daemon
	forged    map[string]*message  // message ID -> forged message
	dlq       []dlqEntry
	passed    []verifyPass
	retireChk []retireCheck
	openFails []string // acknowledged envelopes that open or drill could not open
	inflight  sync.WaitGroup
	stats     Stats
	notes     []string
}

// sealed is one envelope the checker sealed: it knows the DEK, so it can tell a wrap of the
// right key from a wrap of another.
type sealed struct {
	hdr   *envelope.Header
	dek   []byte
	plain []byte
	data  []byte
	event []byte
	bad   [][]byte // forged DEKs made under this envelope's context
}

type dlqEntry struct {
	msg    *message
	reason string
}

type verifyPass struct {
	regions []string
	ids     []string
	what    string
}

type retireCheck struct {
	region string
	keys   []string
	ids    []string
}

// Stats are one schedule's counts.
type Stats struct {
	Ops, Events, Handled, Acks, Poison, Retries, Kills, Forged, Verifies, Rewraps, Drills, Opens int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Sync() error { return nil }

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setup is the schedule's starting point: keys, config and policy.
type setup struct {
	Independent string // a region in independent mode ("" none)
	Verify      string // policy.verify
	Shared      bool   // mrk_wrap: shared
	Required    []string
	Slots       map[string]int // daemons per region
}

func newWorld(ctx context.Context, seed uint64, su setup) (*world, error) {
	w := &world{seed: seed, net: newNetwork(seed), rng: rand.New(rand.NewPCG(seed, 0x3a)),
		mrk: map[string]string{}, indep: map[string]string{}, retired: map[string][]string{},
		byID: map[string]*sealed{}, queues: map[string]*queue{}, daemons: map[string][]*daemon{},
		acked: map[string]bool{}, forged: map[string]*message{}, logs: &syncBuffer{}}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	w.log = zap.New(zapcore.NewCore(enc, w.logs, zapcore.DebugLevel))
	svc, err := kmssvc.NewService(kmssvc.Options{Regions: Regions, ReplicaCreating: -1, Updating: -1})
	if err != nil {
		return nil, err
	}
	w.kms = svc
	w.gt = newGlobalTable(table, Regions, w.net, seed)
	for _, r := range Regions {
		w.net.handlers["kms|"+r] = svc.Handler(r)
		w.net.handlers["dynamodb|"+r] = w.gt.handler(r)
		w.queues[r] = &queue{region: r}
	}
	w.admin = &session{n: w.net, name: "checker"}
	if err := w.provision(ctx); err != nil {
		return nil, fmt.Errorf("sim: provision keys: %w", err)
	}
	c := &config.Config{HomeRegion: Regions[0], Table: table,
		Policy: config.Policy{Required: su.Required, Verify: su.Verify},
		Local:  &config.Local{AccessKey: accessKey, SecretKey: secretKey}}
	if su.Shared {
		c.MRKWrap = config.MRKWrapShared
	}
	for _, r := range Regions {
		rc := config.Region{Name: r, Key: w.mrk[r], Mode: config.ModeMRK, KMSRate: 100000,
			Endpoints: config.Endpoints{KMS: endpoint("kms", r), DynamoDB: endpoint("dynamodb", r), SQS: endpoint("sqs", r), STS: endpoint("sts", r)},
			QueueURL:  endpoint("sqs", r) + "/000000000000/events", DLQURL: endpoint("sqs", r) + "/000000000000/events-dlq"}
		if r == su.Independent {
			rc.Key, rc.Mode = w.indep[r], config.ModeIndependent
		}
		c.Regions = append(c.Regions, rc)
	}
	c.QueueURL, c.DLQURL = c.Regions[0].QueueURL, c.Regions[0].DLQURL
	c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("sim: config: %w", err)
	}
	w.cfg = c
	for _, r := range Regions {
		for i := 0; i < su.Slots[r]; i++ {
			w.daemons[r] = append(w.daemons[r], &daemon{w: w, region: r, slot: i})
		}
	}
	return w, nil
}

func (w *world) close() {
	w.inflight.Wait()
	w.gt.close()
	_ = w.kms.Close()
}

// config returns the current config (rewrap moves a region's key).
func (w *world) config() *config.Config {
	w.cfgMu.Lock()
	defer w.cfgMu.Unlock()
	return w.cfg
}

// regionOptions are the real clients' options for one process of the simulation.
func (w *world) regionOptions(s *session) regions.Options {
	return regions.Options{HTTPClient: s, Attempts: 3, BaseBackoff: 2 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		KMSTimeout: 2 * time.Second, DynamoDBTimeout: 2 * time.Second, MaxCooldown: 200 * time.Millisecond,
		SDKLogger: nil}
}

func (w *world) kmsClient(s *session, region string) *kms.Client {
	return kms.New(kms.Options{Region: region, BaseEndpoint: aws.String(endpoint("kms", region)), HTTPClient: s,
		Credentials: credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
		Retryer:     aws.NopRetryer{}})
}

// provision makes the keys: a multi-Region key with a replica in every region, and an
// independent key per region.
func (w *world) provision(ctx context.Context) error {
	home := w.kmsClient(w.admin, Regions[0])
	out, err := home.CreateKey(ctx, &kms.CreateKeyInput{MultiRegion: aws.Bool(true)})
	if err != nil {
		return err
	}
	primary := aws.ToString(out.KeyMetadata.Arn)
	w.mrk[Regions[0]] = primary
	for _, r := range Regions[1:] {
		rep, err := home.ReplicateKey(ctx, &kms.ReplicateKeyInput{KeyId: aws.String(primary), ReplicaRegion: aws.String(r)})
		if err != nil {
			return err
		}
		w.mrk[r] = aws.ToString(rep.ReplicaKeyMetadata.Arn)
	}
	for _, r := range Regions {
		arn, err := w.newKey(ctx, r)
		if err != nil {
			return err
		}
		w.indep[r] = arn
	}
	return nil
}

func (w *world) newKey(ctx context.Context, region string) (string, error) {
	out, err := w.kmsClient(w.admin, region).CreateKey(ctx, &kms.CreateKeyInput{KeySpec: kmstypes.KeySpecSymmetricDefault})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.KeyMetadata.Arn), nil
}

// queue is one region's events queue (and its DLQ, in world.dlq): messages become invisible
// while a daemon works on them and visible again when it does not acknowledge them (a retry, a
// crash: the visibility timeout, here immediate).
type queue struct {
	region string
	mu     sync.Mutex
	msgs   []*message
}

type message struct {
	id       string
	body     string
	envID    string
	forged   bool
	receives int
	busy     bool
	done     bool
	visible  time.Time // a delayed message (an event's copy) is received from then on
}

var msgSeq struct {
	sync.Mutex
	n int
}

func (w *world) send(region string, m *message) {
	msgSeq.Lock()
	msgSeq.n++
	m.id = fmt.Sprintf("m%d", msgSeq.n)
	msgSeq.Unlock()
	q := w.queues[region]
	q.mu.Lock()
	q.msgs = append(q.msgs, m)
	q.mu.Unlock()
	w.mu.Lock()
	w.stats.Events++
	if m.forged {
		w.forged[m.id] = m
	}
	w.mu.Unlock()
}

// take receives the pick-th visible message of region's queue (modulo the number visible).
func (w *world) take(region string, pick int) *message {
	q := w.queues[region]
	q.mu.Lock()
	defer q.mu.Unlock()
	var vis []*message
	now := time.Now()
	for _, m := range q.msgs {
		if !m.busy && !m.done && !now.Before(m.visible) {
			vis = append(vis, m)
		}
	}
	if len(vis) == 0 {
		return nil
	}
	m := vis[pick%len(vis)]
	m.busy = true
	m.receives++
	return m
}

func (w *world) release(region string, m *message, done bool) {
	q := w.queues[region]
	q.mu.Lock()
	m.busy = false
	m.done = m.done || done
	q.mu.Unlock()
}

// daemon is one `envdr run --region R` process: the real replicate.Pipeline over real SDK
// clients, through its own session (killing it cuts its connections; nothing it would do after
// that point happens).
type daemon struct {
	w      *world
	region string
	slot   int

	mu     sync.Mutex
	sess   *session
	p      *replicate.Pipeline
	cancel context.CancelFunc
	ctx    context.Context
}

// start (re)starts the process with the current config.
func (d *daemon) start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.p != nil {
		return nil
	}
	s := &session{n: d.w.net, name: fmt.Sprintf("daemon-%s-%d", d.region, d.slot)}
	ctx, cancel := context.WithCancel(context.Background())
	topo, err := regions.New(ctx, d.w.config(), d.w.regionOptions(s))
	if err != nil {
		cancel()
		return err
	}
	p, err := replicate.NewPipeline(topo, d.region, d.w.log.With(zap.String("daemon", s.name)), nil, nil)
	if err != nil {
		cancel()
		return err
	}
	d.sess, d.p, d.ctx, d.cancel = s, p, ctx, cancel
	return nil
}

func (d *daemon) running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.p != nil
}

// kill is kill -9: the process's context ends and its connections are cut at once.
func (d *daemon) kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.p == nil {
		return
	}
	d.sess.dead.Store(true)
	d.cancel()
	d.p, d.sess = nil, nil
}

// handle receives one message from the daemon's queue and runs the pipeline on it, as the
// consumer does: ack deletes it, poison moves it to the DLQ with the reason, anything else
// leaves it for redelivery. killAfter > 0 kills the process that long into the work.
func (d *daemon) handle(pick int, killAfter time.Duration) {
	d.mu.Lock()
	p, ctx, sess := d.p, d.ctx, d.sess
	d.mu.Unlock()
	if p == nil {
		return
	}
	m := d.w.take(d.region, pick)
	if m == nil {
		return
	}
	d.w.inflight.Add(1)
	go func() {
		defer d.w.inflight.Done()
		if killAfter > 0 {
			t := time.AfterFunc(killAfter, d.kill)
			defer t.Stop()
		}
		res := p.Handle(ctx, replicate.Message{ID: m.id, Body: m.body, ReceiptHandle: m.id, ReceiveCount: m.receives, SentAt: time.Now()})
		if sess.dead.Load() {
			d.w.release(d.region, m, false) // killed: the message comes back after its visibility timeout
			return
		}
		w := d.w
		w.mu.Lock()
		w.stats.Handled++
		switch res.Verdict {
		case replicate.Ack:
			w.stats.Acks++
			w.acked[m.envID] = true
			if m.forged {
				w.notes = append(w.notes, fmt.Sprintf("forged message %s (record %s) acknowledged by daemon %s", m.id, m.envID, sess.name))
			}
		case replicate.Poison:
			w.stats.Poison++
			w.dlq = append(w.dlq, dlqEntry{msg: m, reason: res.Reason})
		default:
			w.stats.Retries++
		}
		w.mu.Unlock()
		w.release(d.region, m, res.Verdict != replicate.Retry)
	}()
}

// seal seals a small random file in region as a producer does (GenerateDataKey there), keeps
// its DEK for the checks, and enqueues its event in region (and a copy in the next region).
func (w *world) seal(ctx context.Context, region string, copyTo string, copyDelay time.Duration) error {
	s := &session{n: w.net, name: "producer"}
	topo, err := regions.New(ctx, w.config(), w.regionOptions(s))
	if err != nil {
		return err
	}
	plain := make([]byte, 64+w.rng.IntN(64))
	for i := range plain {
		plain[i] = byte(w.rng.UintN(256))
	}
	// As `envdr seal` does: the region asked for first, then the next ones in order.
	var hdr *envelope.Header
	var gen *keepDEK
	var out bytes.Buffer
	for i := 0; i < len(Regions); i++ {
		r, err := topo.Region(region)
		if err != nil {
			return err
		}
		gen = &keepDEK{r: r}
		out.Reset()
		hdr, err = envelope.Seal(ctx, &out, bytes.NewReader(plain), gen, envelope.SealOptions{Context: map[string]string{"app": "sim"}})
		if err == nil {
			break
		}
		if i == len(Regions)-1 {
			return err
		}
		if copyTo != "" {
			copyTo = next(next(region))
		}
		region = next(region)
	}
	ev, err := envelope.NewEvent(hdr, time.Now(), "")
	if err != nil {
		return err
	}
	body, err := envelope.EncodeEvent(ev)
	if err != nil {
		return err
	}
	e := &sealed{hdr: hdr, dek: gen.dek, plain: plain, data: out.Bytes(), event: body}
	w.mu.Lock()
	w.envs = append(w.envs, e)
	w.byID[hdr.RecordID()] = e
	w.mu.Unlock()
	w.send(region, &message{body: string(body), envID: hdr.RecordID()})
	if copyTo != "" && copyTo != region {
		// The copy is delayed (enqueue_copy_delay, scaled down), so normally the sealing
		// region's daemon has acknowledged the event before the copy is received.
		w.send(copyTo, &message{body: string(body), envID: hdr.RecordID(), visible: time.Now().Add(copyDelay)})
	}
	return nil
}

// keepDEK is the region's key generator, keeping a copy of the DEK for the checker.
type keepDEK struct {
	r   *regions.Region
	dek []byte
}

func (k *keepDEK) GenerateDataKey(ctx context.Context, ec envelope.Context) (*envelope.DataKey, error) {
	dk, err := k.r.GenerateDataKey(ctx, ec)
	if err == nil {
		k.dek = bytes.Clone(dk.Plaintext)
	}
	return dk, err
}

// forge is what the producer role can do: GenerateDataKey under an envelope's context, then
// send an event with the envelope's id, context, commitment and key, but the other data key.
func (w *world) forge(ctx context.Context, e *sealed, to string) error {
	src := e.hdr.HomeRegion
	kc := w.kmsClient(w.admin, src)
	out, err := kc.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(e.hdr.KeyARN), KeySpec: kmstypes.DataKeySpecAes256,
		EncryptionContext: e.hdr.Context.Map()})
	if err != nil {
		return err
	}
	var ev map[string]any
	if err := json.Unmarshal(e.event, &ev); err != nil {
		return err
	}
	ev["wrapped_dek"] = base64.StdEncoding.EncodeToString(out.CiphertextBlob)
	// Keep the canonical field order: re-encode through the event type.
	b, _ := json.Marshal(ev)
	dec, err := envelope.DecodeEvent(b)
	if err != nil {
		return err
	}
	body, err := envelope.EncodeEvent(dec)
	if err != nil {
		return err
	}
	w.mu.Lock()
	e.bad = append(e.bad, bytes.Clone(out.Plaintext))
	w.stats.Forged++
	w.mu.Unlock()
	w.send(to, &message{body: string(body), envID: e.hdr.RecordID(), forged: true})
	return nil
}

// decryptIn decrypts a wrap with region's KMS alone (the checker's own client).
func (w *world) decryptIn(ctx context.Context, region, keyARN string, wrapped []byte, ec map[string]string) ([]byte, error) {
	out, err := w.kmsClient(w.admin, region).Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: wrapped, KeyId: aws.String(keyARN), EncryptionContext: ec})
	if err != nil {
		return nil, err
	}
	return out.Plaintext, nil
}

// regionItem is the part of a region item the checker reads.
type regionItem struct {
	keyARN   string
	wrapped  []byte
	verified string
	lastErr  string
}

func parseRegionItem(img attrs) regionItem {
	var it regionItem
	var s struct{ S, B string }
	if json.Unmarshal(img["key_arn"], &s) == nil {
		it.keyARN = s.S
	}
	s.S = ""
	if json.Unmarshal(img["wrapped_dek"], &s) == nil && s.B != "" {
		it.wrapped, _ = base64.StdEncoding.DecodeString(s.B)
	}
	s.S = ""
	if json.Unmarshal(img["verified_at"], &s) == nil {
		// An unset time may be stored as the zero time: that is not a verification.
		if t, err := time.Parse(time.RFC3339Nano, s.S); err == nil && !t.IsZero() {
			it.verified = s.S
		}
	}
	s.S = ""
	if json.Unmarshal(img["last_error"], &s) == nil {
		it.lastErr = s.S
	}
	return it
}

// trusted lists the keys region trusts now: its configured key and previous keys.
func (w *world) trusted(region string) map[string]bool {
	c := w.config()
	rc, _ := c.Region(region)
	out := map[string]bool{rc.Key: true}
	for _, k := range rc.PreviousKeys {
		out[k] = true
	}
	return out
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func splitItemID(id string) (rec, region string, ok bool) {
	i := strings.IndexByte(id, '#')
	if i < 0 {
		return id, "", false
	}
	return id[:i], id[i+1:], true
}
