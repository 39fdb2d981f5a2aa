package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
)

// Op is one operation of a schedule. A schedule is generated from its seed alone, so the
// operations (and their parameters) replay exactly; the interleaving of the goroutines they
// start follows the machine's timing.
type Op struct {
	Kind   string
	Region string
	Slot   int
	Pick   int
	Env    int
	Dur    time.Duration
	Dur2   time.Duration
	F      float64
	Flag   bool
	Gap    time.Duration // pause after the op
}

func (o Op) String() string {
	switch o.Kind {
	case "seal":
		s := "seal in " + o.Region
		if o.Flag {
			s += fmt.Sprintf(" (+copy to the next region, delayed %s)", o.Dur)
		}
		return s
	case "handle":
		s := fmt.Sprintf("daemon %s/%d handles message #%d", o.Region, o.Slot, o.Pick)
		if o.Dur > 0 {
			s += fmt.Sprintf(", killed -9 after %s", o.Dur)
		}
		return s
	case "dup":
		return fmt.Sprintf("re-send envelope #%d's event to %s", o.Env, o.Region)
	case "forge":
		s := fmt.Sprintf("producer forges envelope #%d's event (another data key) into %s", o.Env, o.Region)
		if o.Flag {
			s += ", then re-sends the genuine one"
		}
		return s
	case "kill":
		return fmt.Sprintf("kill -9 daemon %s/%d", o.Region, o.Slot)
	case "restart":
		return fmt.Sprintf("restart daemon %s/%d", o.Region, o.Slot)
	case "down":
		return "lose region " + o.Region
	case "kmsdown":
		return "lose KMS in " + o.Region + " (its table and queue stay)"
	case "up":
		return "region " + o.Region + " returns"
	case "kmsfault":
		return fmt.Sprintf("KMS in %s: %.0f%% errors, %.0f%% throttled, +%s latency", o.Region, o.F*100, float64(o.Pick)/100*100/100, o.Dur)
	case "clear":
		return "clear every fault"
	case "lag":
		return fmt.Sprintf("global table lag %s, jitter %s", o.Dur, o.Dur2)
	case "lagto":
		return fmt.Sprintf("replica %s falls %s behind", o.Region, o.Dur)
	case "skew":
		return fmt.Sprintf("clock of %s skewed %s", o.Region, o.Dur)
	case "verify":
		if o.Region == "" {
			return "envdr verify"
		}
		return "envdr verify --region " + o.Region
	case "drill":
		return "envdr drill --lose " + o.Region
	case "open":
		return fmt.Sprintf("envdr open --region %s envelope #%d", o.Region, o.Env)
	case "rewrap":
		return "rotate " + o.Region + " to a new key: envdr rewrap --region " + o.Region + ", then the retirement gate (rewrap --check, verify --region " + o.Region + " --require-current)"
	case "wait":
		return "wait " + o.Dur.String()
	}
	return o.Kind
}

// Schedule is a seed's setup and operations.
type Schedule struct {
	Seed  uint64
	Setup setup
	Ops   []Op
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

func ms(r *rand.Rand, lo, hi int) time.Duration {
	return time.Duration(lo+r.IntN(hi-lo+1)) * time.Millisecond
}

// Generate makes the schedule of a seed.
func Generate(seed uint64) Schedule {
	r := rand.New(rand.NewPCG(seed, 0x51))
	su := setup{Verify: config.VerifyAll, Slots: map[string]int{}}
	switch x := r.IntN(10); {
	case x < 2:
		su.Verify = config.VerifyNone
	case x < 3:
		su.Verify = config.VerifySamplePrefix + "50%"
	}
	su.Shared = su.Verify == config.VerifyAll && r.IntN(6) == 0
	if r.IntN(4) == 0 {
		su.Independent = pick(r, Regions...)
	}
	if r.IntN(2) == 0 {
		su.Required = append([]string(nil), Regions...)
	} else {
		su.Required = []string{Regions[0], pick(r, Regions[1:]...)}
	}
	for _, reg := range Regions {
		su.Slots[reg] = 1 + r.IntN(3)
	}
	n := 20 + r.IntN(21)
	type weighted struct {
		kind string
		w    int
	}
	kinds := []weighted{{"seal", 14}, {"handle", 34}, {"dup", 5}, {"forge", 6}, {"kill", 3}, {"restart", 4},
		{"down", 4}, {"kmsdown", 3}, {"up", 6}, {"kmsfault", 3}, {"clear", 2}, {"lag", 3}, {"lagto", 3}, {"skew", 3},
		{"verify", 4}, {"drill", 1}, {"rewrap", 1}, {"open", 2}, {"wait", 5}}
	total := 0
	for _, k := range kinds {
		total += k.w
	}
	ops := make([]Op, 0, n+2)
	if r.IntN(3) == 0 {
		// A third of the schedules start with one replica far behind.
		ops = append(ops, Op{Kind: "lagto", Region: pick(r, Regions...), Dur: ms(r, 5000, 30000)})
	}
	ops = append(ops, Op{Kind: "seal", Region: Regions[0], Flag: true, Dur: ms(r, 0, 2000)})
	for len(ops) < n {
		x := r.IntN(total)
		var kind string
		for _, k := range kinds {
			if x < k.w {
				kind = k.kind
				break
			}
			x -= k.w
		}
		o := Op{Kind: kind, Region: pick(r, Regions...), Slot: r.IntN(3), Pick: r.IntN(8), Env: r.IntN(16),
			Gap: ms(r, 0, 60)}
		switch kind {
		case "seal":
			if r.IntN(3) > 0 {
				o.Region = Regions[0]
			}
			o.Flag = r.IntN(5) < 3
			o.Dur = ms(r, 0, 2000)
		case "handle":
			if r.IntN(8) == 0 {
				o.Dur = ms(r, 1, 80)
			}
		case "forge":
			o.Flag = r.IntN(2) == 0
		case "kmsfault":
			o.F = pick(r, 0, 0.3, 1)
			o.Pick = pick(r, 0, 50)
			o.Dur = pick(r, 0, ms(r, 20, 300))
		case "lag":
			o.Dur, o.Dur2 = ms(r, 0, 300), ms(r, 0, 500)
		case "lagto":
			// A replica a little behind, or far behind (issue 20's finding 2: 40 s).
			o.Dur = pick(r, ms(r, 300, 3000), ms(r, 5000, 30000))
		case "skew":
			o.Dur = ms(r, 0, 800) - 400*time.Millisecond
		case "verify":
			if r.IntN(2) == 0 {
				o.Region = ""
			}
		case "wait":
			o.Dur = ms(r, 20, 500)
		}
		ops = append(ops, o)
	}
	return Schedule{Seed: seed, Setup: su, Ops: ops}
}

// debugHook, set by a debugging test, sees the settled world.
var debugHook func(*world, Result)

// Result is one schedule's outcome.
type Result struct {
	Seed       uint64
	Violations []Violation
	Stats      Stats
	Duration   time.Duration
	Err        error
	Notes      []string
}

// Violation is one broken invariant.
type Violation struct {
	Inv    string // I1 ... I6, L1
	Detail string
}

func (v Violation) String() string { return v.Inv + ": " + v.Detail }

// Run runs the schedule's ops (all, or those keep selects), lets the world settle, and checks
// the invariants.
func Run(ctx context.Context, s Schedule, keep []bool) Result {
	start := time.Now()
	res := Result{Seed: s.Seed}
	w, err := newWorld(ctx, s.Seed, s.Setup)
	if err != nil {
		res.Err = err
		return res
	}
	defer w.close()
	dir, err := os.MkdirTemp("", "envdr-sim-")
	if err != nil {
		res.Err = err
		return res
	}
	defer os.RemoveAll(dir)
	for _, ds := range w.daemons {
		for _, d := range ds {
			if err := d.start(); err != nil {
				res.Err = err
				return res
			}
		}
	}
	for i, o := range s.Ops {
		if keep != nil && !keep[i] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		w.stats.Ops++
		if err := w.apply(ctx, o, dir); err != nil {
			w.mu.Lock()
			w.notes = append(w.notes, fmt.Sprintf("op %d (%s): %v", i, o, err))
			w.mu.Unlock()
		}
		if o.Gap > 0 {
			time.Sleep(o.Gap)
		}
	}
	w.settle(ctx)
	res.Violations = w.check(ctx, s.Setup)
	if debugHook != nil {
		debugHook(w, res)
	}
	res.Stats = w.stats
	res.Notes = w.notes
	res.Duration = time.Since(start)
	return res
}

func (w *world) slot(region string, i int) *daemon {
	ds := w.daemons[region]
	if len(ds) == 0 {
		return nil
	}
	return ds[i%len(ds)]
}

func (w *world) envAt(i int) *sealed {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.envs) == 0 {
		return nil
	}
	return w.envs[i%len(w.envs)]
}

func next(region string) string {
	for i, r := range Regions {
		if r == region {
			return Regions[(i+1)%len(Regions)]
		}
	}
	return ""
}

// apply runs one op.
func (w *world) apply(ctx context.Context, o Op, dir string) error {
	switch o.Kind {
	case "seal":
		copyTo := ""
		if o.Flag {
			copyTo = next(o.Region)
		}
		return w.seal(ctx, o.Region, copyTo, o.Dur)
	case "handle":
		if d := w.slot(o.Region, o.Slot); d != nil {
			if o.Dur > 0 {
				w.stats.Kills++
			}
			d.handle(o.Pick, o.Dur)
		}
	case "dup":
		if e := w.envAt(o.Env); e != nil {
			w.send(o.Region, &message{body: string(e.event), envID: e.hdr.RecordID()})
		}
	case "forge":
		if e := w.envAt(o.Env); e != nil {
			if err := w.forge(ctx, e, o.Region); err != nil {
				return err
			}
			if o.Flag {
				w.send(o.Region, &message{body: string(e.event), envID: e.hdr.RecordID()})
			}
		}
	case "kill":
		if d := w.slot(o.Region, o.Slot); d != nil {
			w.stats.Kills++
			d.kill()
		}
	case "restart":
		if d := w.slot(o.Region, o.Slot); d != nil {
			return d.start()
		}
	case "down":
		w.net.setDown(o.Region, true)
	case "kmsdown":
		w.net.setDown(o.Region+"|kms", true)
	case "up":
		w.net.setDown(o.Region, false)
		w.net.setDown(o.Region+"|kms", false)
	case "kmsfault":
		w.net.setFault(o.Region, "kms", fault{errRate: o.F, throttle: float64(o.Pick) / 100, latency: o.Dur})
	case "clear":
		w.net.clearFaults()
	case "lag":
		w.gt.mu.Lock()
		w.gt.lag, w.gt.jitter = o.Dur, o.Dur2
		w.gt.mu.Unlock()
	case "lagto":
		w.gt.mu.Lock()
		w.gt.lagTo = map[string]time.Duration{o.Region: o.Dur}
		w.gt.mu.Unlock()
	case "skew":
		w.gt.mu.Lock()
		w.gt.skew[o.Region] = o.Dur
		w.gt.mu.Unlock()
	case "verify":
		return w.verify(ctx, o.Region, "verify")
	case "drill":
		return w.drill(ctx, o.Region, dir)
	case "open":
		if e := w.envAt(o.Env); e != nil {
			return w.openCLI(ctx, e, o.Region, dir)
		}
	case "rewrap":
		return w.rotate(ctx, o.Region, dir)
	case "wait":
		time.Sleep(o.Dur)
	}
	return nil
}

// headerIDs lists the records whose header region's replica holds.
func (w *world) headerIDs(region string) []string {
	var ids []string
	for id := range w.gt.snapshot(region) {
		if _, _, isRegion := splitItemID(id); !isRegion {
			ids = append(ids, id)
		}
	}
	return ids
}

// verify runs envdr verify (every region, or --region) and remembers what a pass claims.
func (w *world) verify(ctx context.Context, region, what string) error {
	cfg := w.config()
	scan := cfg.HomeRegion
	checked := cfg.Policy.Required
	if region != "" {
		scan, checked = region, []string{region}
	}
	ids := w.headerIDs(scan)
	s := &session{n: w.net, name: "verify"}
	w.stats.Verifies++
	rep, err := recovery.Verify(ctx, cfg, recovery.VerifyOptions{Region: region, Segments: 2, Workers: 4, Regions: w.regionOptions(s)})
	if err != nil {
		return err
	}
	if rep.Passed() {
		w.mu.Lock()
		w.passed = append(w.passed, verifyPass{regions: checked, ids: ids, what: what})
		w.mu.Unlock()
	}
	return nil
}

// drill runs envdr drill --lose region over two envelope files.
func (w *world) drill(ctx context.Context, region, dir string) error {
	var files []string
	for i := 0; i < 2; i++ {
		e := w.envAt(w.rng.IntN(16))
		if e == nil {
			break
		}
		p := filepath.Join(dir, fmt.Sprintf("drill-%d-%s.envdr", i, short(e.hdr.RecordID())))
		if err := os.WriteFile(p, e.data, 0o600); err != nil {
			return err
		}
		files = append(files, p)
	}
	w.stats.Drills++
	acked := w.ackedNow()
	healthy := w.healthyRequired(region)
	// The drill brings its own HTTP client (its guard against the lost region), so it reaches
	// the simulated regions through loopback sockets, as the CLI does.
	socks, err := w.serveSockets()
	if err != nil {
		return err
	}
	defer socks.close()
	cfg := socks.config(w.config())
	rep, err := recovery.Drill(ctx, cfg, recovery.DrillOptions{Lose: region, Open: files, Segments: 2, Workers: 4,
		Regions: regions.Options{Attempts: 3, BaseBackoff: 2 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxCooldown: 200 * time.Millisecond}})
	if err != nil {
		return err
	}
	// An envelope acknowledged before the drill opens in every required region alone (I1): with
	// one of them surviving and healthy, the drill must open it.
	for _, f := range rep.Files {
		if acked[f.ID] && healthy != "" && !f.OK {
			w.mu.Lock()
			w.openFails = append(w.openFails, fmt.Sprintf("envdr drill --lose %s could not open acknowledged envelope %s (%s healthy): %s", region, short(f.ID), healthy, f.Error))
			w.mu.Unlock()
		}
	}
	return nil
}

// ackedNow is the set of envelopes acknowledged so far.
func (w *world) ackedNow() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]bool, len(w.acked))
	for id := range w.acked {
		out[id] = true
	}
	return out
}

// healthyRequired names a required region other than except that is up with no KMS fault, ""
// when none is.
func (w *world) healthyRequired(except string) string {
	w.net.mu.Lock()
	defer w.net.mu.Unlock()
	for _, r := range w.config().Policy.Required {
		f := w.net.faults[r+"|kms"]
		if r != except && !w.net.down[r] && !w.net.down[r+"|kms"] && f.errRate == 0 && f.throttle == 0 {
			return r
		}
	}
	return ""
}

// rotate moves region to a new key: the config names the new key (the old one as a previous
// key), envdr rewrap re-makes region's wraps under it, and envdr verify (--require-current)
// gates the old key's retirement. Daemons started from now on read the new config.
func (w *world) rotate(ctx context.Context, region, dir string) error {
	key, err := w.newKey(ctx, region)
	if err != nil {
		return err
	}
	w.cfgMu.Lock()
	c := *w.cfg
	c.Regions = append([]config.Region(nil), w.cfg.Regions...)
	var old string
	for i := range c.Regions {
		if c.Regions[i].Name == region {
			old = c.Regions[i].Key
			c.Regions[i].PreviousKeys = append(append([]string(nil), c.Regions[i].PreviousKeys...), old)
			c.Regions[i].Key, c.Regions[i].Mode = key, config.ModeIndependent
		}
	}
	w.cfg = &c
	w.retired[region] = append(w.retired[region], old)
	retired := append([]string(nil), w.retired[region]...)
	w.cfgMu.Unlock()
	// The new config is rolled out to every daemon (a rolling restart) before anything else.
	w.inflight.Wait()
	for _, ds := range w.daemons {
		for _, d := range ds {
			if d.running() {
				d.kill()
				if err := d.start(); err != nil {
					return err
				}
			}
		}
	}
	s := &session{n: w.net, name: "rewrap"}
	w.stats.Rewraps++
	ro := recovery.RewrapOptions{Region: region, ToKey: key, Segments: 2, Workers: 4,
		Checkpoint: filepath.Join(dir, "rewrap-"+region+fmt.Sprint(len(retired))), Regions: w.regionOptions(s)}
	if _, err := recovery.Rewrap(ctx, &c, ro); err != nil {
		return err
	}
	return w.retirementGate(ctx, &c, region, key, retired, ro)
}

// retirementGate runs the documented gate before a key may be retired (docs/DRILLS.md, "The
// retirement gate"): no queued event sealed under it and replication settled; `envdr rewrap
// --region R --check` finds nothing left; `envdr verify --region R --require-current` passes.
// When it passes, I4 is checked at once: nothing the verify counted needs a retired key.
func (w *world) retirementGate(ctx context.Context, c *config.Config, region, key string, retired []string, ro recovery.RewrapOptions) error {
	if w.queuedUnder(retired) {
		return nil // step 1 says wait: the gate is not claimed
	}
	w.inflight.Wait()
	w.waitReplication(2 * time.Second)
	if !w.gt.settled() {
		return nil
	}
	check := ro
	check.DryRun, check.Checkpoint, check.Regions = true, "", w.regionOptions(&session{n: w.net, name: "rewrap-check"})
	rep, err := recovery.Rewrap(ctx, c, check)
	if err != nil || rep.Changed > 0 || rep.Failed > 0 {
		return err
	}
	ids := w.headerIDs(region)
	vs := &session{n: w.net, name: "verify"}
	vrep, err := recovery.Verify(ctx, c, requireCurrent(recovery.VerifyOptions{Region: region, Segments: 2, Workers: 4, Regions: w.regionOptions(vs)}))
	if err != nil || !vrep.Passed() {
		return err
	}
	// The gate passed: the retired keys may go. Nothing the verify counted may still need them.
	snap := w.gt.snapshot(region)
	for _, id := range ids {
		it := parseRegionItem(snap[id+"#"+region])
		for _, k := range retired {
			if it.keyARN == k && len(it.wrapped) > 0 {
				w.mu.Lock()
				w.retireChk = append(w.retireChk, retireCheck{region: region, keys: []string{k}, ids: []string{id}})
				w.mu.Unlock()
			}
		}
	}
	w.mu.Lock()
	w.passed = append(w.passed, verifyPass{regions: []string{region}, ids: ids, what: "the retirement gate's verify --region " + region + " --require-current"})
	w.mu.Unlock()
	return nil
}

// queuedUnder reports whether any queue holds an event (not yet done) sealed under one of keys.
func (w *world) queuedUnder(keys []string) bool {
	for _, q := range w.queues {
		q.mu.Lock()
		for _, m := range q.msgs {
			if m.done {
				continue
			}
			for _, k := range keys {
				if strings.Contains(m.body, `"key_arn":"`+k+`"`) {
					q.mu.Unlock()
					return true
				}
			}
		}
		q.mu.Unlock()
	}
	return false
}

// settle ends the schedule: every region back, faults and lag gone, every daemon restarted on
// the current config, the queues drained (a few rounds; an event still unacknowledged after them
// stays so), and replication finished.
func (w *world) settle(ctx context.Context) {
	w.inflight.Wait()
	for _, r := range Regions {
		w.net.setDown(r, false)
		w.net.setDown(r+"|kms", false)
	}
	w.net.clearFaults()
	w.gt.mu.Lock()
	w.gt.lag, w.gt.jitter, w.gt.lagTo = 0, 0, map[string]time.Duration{}
	w.gt.mu.Unlock()
	w.waitReplication(10 * time.Second)
	for _, ds := range w.daemons {
		for _, d := range ds {
			d.kill()
			_ = d.start()
		}
	}
	for round := 0; round < 4 && ctx.Err() == nil; round++ {
		left := 0
		for _, r := range Regions {
			q := w.queues[r]
			q.mu.Lock()
			n := 0
			for _, m := range q.msgs {
				if !m.done {
					n++
				}
			}
			q.mu.Unlock()
			left += n
			for i := 0; i < n; i++ {
				w.slot(r, i).handle(0, 0)
			}
		}
		w.inflight.Wait()
		w.waitReplication(10 * time.Second)
		if left == 0 {
			break
		}
	}
	for _, ds := range w.daemons {
		for _, d := range ds {
			d.kill()
		}
	}
	w.waitReplication(10 * time.Second)
}

func (w *world) waitReplication(max time.Duration) {
	w.gt.flush()
	deadline := time.Now().Add(max)
	for !w.gt.settled() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// describe prints a schedule, one op a line, with the ops keep selects.
func (s Schedule) describe(keep []bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "setup: policy.verify=%s required=%v mrk_wrap_shared=%v independent=%q daemons=%v\n",
		s.Setup.Verify, s.Setup.Required, s.Setup.Shared, s.Setup.Independent, s.Setup.Slots)
	for i, o := range s.Ops {
		if keep != nil && !keep[i] {
			continue
		}
		fmt.Fprintf(&b, "  %3d  %s\n", i, o)
	}
	return b.String()
}
