package recovery

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	htmltemplate "html/template"
	"io"
	"sort"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// RegionControl loses and restores a region (the stand-in's admin endpoint). Against AWS there
// is none: the operator blocks the region's endpoints, and the game day only measures.
type RegionControl interface {
	Down(ctx context.Context, region string) error
	Up(ctx context.Context, region string) error
}

// GamedayOptions tune Gameday.
type GamedayOptions struct {
	// Lose is the region lost during the game day.
	Lose string
	// Rate is how many envelopes are sealed (and enqueued) per second; default 2.
	Rate float64
	// Before and During are how long sealing goes on before the loss and during it; defaults
	// 5s and 20s.
	Before, During time.Duration
	// Within bounds the wait for protection after the sealing stops, and for the catch-up after
	// the region returns; default 2m.
	Within time.Duration
	// Control takes the region down and back; nil: the region is assumed blocked by the
	// operator for the whole game day and is never contacted (no catch-up is measured).
	Control RegionControl
	// SealTimeout bounds each region's try when sealing (fall-over); default 5s.
	SealTimeout time.Duration
	// Regions tunes the per-region clients.
	Regions regions.Options
	// Log, optional, receives progress lines.
	Log func(string)
	// Open, optional, opens a whole envelope the way `envdr open` does without --region (the
	// sealing region first, then seal order, skipping a lost region) and says which region
	// served and which it skipped. During the loss the game day opens an envelope sealed before
	// it and one sealed during it this way, to show the plain command working. Used only with
	// Control: without it the lost region must never be contacted, and the fall-over would try it.
	Open func(ctx context.Context, envelope []byte) (served string, skipped []string, err error)
}

// GamedayOpen is one envelope opened without --region during the loss.
type GamedayOpen struct {
	ID       string   `json:"id"`
	SealedIn string   `json:"sealed_in"`
	Region   string   `json:"region,omitempty"` // the region that served
	Skipped  []string `json:"skipped"`
	Error    string   `json:"error,omitempty"`
}

// GamedayReport is what a game day measured. Its three figures:
//   - RPO: envelopes sealed and enqueued that no surviving region could open on its own by the
//     end of the outage (target 0);
//   - RTO: seconds from the loss until an envelope sealed after the loss opened in every
//     surviving region on its own, i.e. until new data was protected again;
//   - catch-up: seconds from the region's return until every envelope opened in it on its own.
type GamedayReport struct {
	Lost       string    `json:"lost"`
	Surviving  []string  `json:"surviving"`
	StartedAt  time.Time `json:"started_at"`
	LostAt     time.Time `json:"lost_at"`
	RestoredAt time.Time `json:"restored_at,omitzero"`
	EndedAt    time.Time `json:"ended_at"`

	Sealed       int            `json:"sealed"`
	SealedBefore int            `json:"sealed_before_loss"`
	SealedDuring int            `json:"sealed_during_loss"`
	SealedIn     map[string]int `json:"sealed_in"`
	SealFailures int            `json:"seal_failures"`
	EnqueueFails int            `json:"enqueue_failures"`

	// RPO: the envelopes (IDs) no surviving region opened alone by the end of the outage.
	RPOEnvelopes int      `json:"rpo_envelopes"`
	Unprotected  []string `json:"unprotected,omitempty"`
	// RTOSeconds: from the loss until an envelope sealed after it was open in every surviving
	// region alone; -1 when none was.
	RTOSeconds float64 `json:"rto_seconds"`
	// MaxProtectSeconds: the longest any envelope sealed during the outage waited, from its
	// seal, to be open in every surviving region alone.
	MaxProtectSeconds float64 `json:"max_protect_seconds"`
	// CatchUpSeconds: from the region's return until every envelope opened in it alone; -1
	// when not measured (no control) or not reached within the wait.
	CatchUpSeconds float64 `json:"catch_up_seconds"`
	NotCaughtUp    int     `json:"not_caught_up"`
	// Matrix: per region, how many of the envelopes it opened alone at the end.
	Matrix []GamedayRegion `json:"matrix"`
	// OpenedWithoutRegion: envelopes opened during the loss as plain `envdr open` does, with no
	// --region (GamedayOptions.Open); any failure fails the game day.
	OpenedWithoutRegion []GamedayOpen `json:"opened_without_region"`
	Passed              bool          `json:"passed"`
}

// GamedayRegion is one row of the matrix.
type GamedayRegion struct {
	Region string `json:"region"`
	Lost   bool   `json:"lost"`
	Opened int    `json:"opened_alone"`
	Of     int    `json:"of"`
}

type gdEnvelope struct {
	id        string
	rec       *envelope.Record // header fields for the checks (ID, context, commitment)
	sealedAt  time.Time
	during    bool
	protected time.Time            // open in every surviving region alone
	opened    map[string]time.Time // per region: first opened alone
}

// Gameday keeps sealing while a region is lost and measures RPO, RTO and catch-up. The daemons
// of the deployment must be running in every region (envdr run --region R); the game day is a
// producer and an auditor, never a replicator.
func Gameday(ctx context.Context, cfg *config.Config, o GamedayOptions) (*GamedayReport, error) {
	if _, ok := cfg.Region(o.Lose); !ok {
		return nil, fmt.Errorf("region %s: %w (configured: %v)", o.Lose, regions.ErrNotConfigured, cfg.RegionNames())
	}
	if o.Rate <= 0 {
		o.Rate = 2
	}
	if o.Before <= 0 {
		o.Before = 5 * time.Second
	}
	if o.During <= 0 {
		o.During = 20 * time.Second
	}
	if o.Within <= 0 {
		o.Within = 2 * time.Minute
	}
	if o.SealTimeout <= 0 {
		o.SealTimeout = 5 * time.Second
	}
	logf := func(format string, a ...any) {
		if o.Log != nil {
			o.Log(fmt.Sprintf(format, a...))
		}
	}
	ro := o.Regions
	if o.Control == nil {
		ro.Exclude = append(ro.Exclude, o.Lose) // blocked by the operator: never contacted
	}
	topo, err := regions.New(ctx, cfg, ro)
	if err != nil {
		return nil, err
	}
	checks := map[string]*regionCheck{}
	rep := &GamedayReport{Lost: o.Lose, SealedIn: map[string]int{}, StartedAt: time.Now().UTC(), RTOSeconds: -1, CatchUpSeconds: -1}
	for _, n := range topo.Names() {
		r, _ := topo.Region(n)
		checks[n] = &regionCheck{r: r, store: replicate.NewStore(cfg.Table, n, r.DynamoDB(), cfg.RegionNames()), tally: newTally()}
		if n != o.Lose {
			rep.Surviving = append(rep.Surviving, n)
		}
	}
	var order []string
	for _, n := range cfg.SealOrder() {
		if _, err := topo.Region(n); err == nil {
			order = append(order, n)
		}
	}
	keys := &regions.Failover{Topology: topo, Order: order, Timeout: o.SealTimeout}

	var mu sync.Mutex
	var envs []*gdEnvelope
	// The first envelope sealed before the loss and the first sealed during it are kept whole,
	// for the open-without---region step (o.Open).
	keep := map[bool]*kept{}
	rep.OpenedWithoutRegion = []GamedayOpen{}
	seal := func(during bool) {
		pt := make([]byte, 1024)
		_, _ = rand.Read(pt)
		var sealed bytes.Buffer
		hdr, err := envelope.Seal(ctx, &sealed, bytes.NewReader(pt), keys, envelope.SealOptions{Context: map[string]string{"gameday": rep.StartedAt.Format("20060102T150405Z")}})
		envelope.Wipe(pt)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			rep.SealFailures++
			logf("seal failed: %v", err)
			return
		}
		if _, err := replicate.Enqueue(ctx, topo, hdr, "", func(string) {}); err != nil {
			rep.EnqueueFails++
			logf("record %s: enqueue failed: %v", hdr.RecordID(), err)
		}
		rec := &envelope.Record{ID: hdr.RecordID(), Context: hdr.Context, Commitment: hdr.Commitment}
		envs = append(envs, &gdEnvelope{id: rec.ID, rec: rec, sealedAt: time.Now(), during: during, opened: map[string]time.Time{}})
		if keep[during] == nil {
			keep[during] = &kept{id: hdr.RecordID(), region: hdr.HomeRegion, file: sealed.Bytes()}
		}
		rep.Sealed++
		rep.SealedIn[hdr.HomeRegion]++
		if during {
			rep.SealedDuring++
		} else {
			rep.SealedBefore++
		}
	}
	sealFor := func(d time.Duration, during bool) error {
		tick := time.NewTicker(time.Duration(float64(time.Second) / o.Rate))
		defer tick.Stop()
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			seal(during)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
		}
		return nil
	}
	// checkAll tries every envelope not yet open in the given regions; it returns how many
	// remain.
	checkAll := func(in []string) int {
		mu.Lock()
		list := append([]*gdEnvelope(nil), envs...)
		mu.Unlock()
		left := 0
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		var lmu sync.Mutex
		for _, e := range list {
			for _, n := range in {
				lmu.Lock()
				_, done := e.opened[n]
				lmu.Unlock()
				if done {
					continue
				}
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					_, outcome, _ := checks[n].check(ctx, e.rec, false)
					lmu.Lock()
					defer lmu.Unlock()
					if outcome == OutcomeOK {
						e.opened[n] = time.Now()
					} else {
						left++
					}
				}()
			}
		}
		wg.Wait()
		for _, e := range list {
			if !e.protected.IsZero() {
				continue
			}
			all := true
			for _, n := range rep.Surviving {
				if _, ok := e.opened[n]; !ok {
					all = false
				}
			}
			if all {
				e.protected = time.Now()
			}
		}
		return left
	}

	logf("sealing %.1f/s for %s before losing %s", o.Rate, o.Before, o.Lose)
	if err := sealFor(o.Before, false); err != nil {
		return nil, err
	}
	if o.Control != nil {
		if err := o.Control.Down(ctx, o.Lose); err != nil {
			return nil, fmt.Errorf("lose %s: %w", o.Lose, err)
		}
	}
	rep.LostAt = time.Now().UTC()
	logf("%s lost; sealing on for %s", o.Lose, o.During)
	// Check protection while sealing, so RTO is measured as it happens.
	stop := make(chan struct{})
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		for {
			checkAll(rep.Surviving)
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	err = sealFor(o.During, true)
	close(stop)
	<-checked
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(o.Within)
	for checkAll(rep.Surviving) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(500 * time.Millisecond)
	}
	for _, e := range envs {
		if e.protected.IsZero() {
			rep.Unprotected = append(rep.Unprotected, e.id)
			continue
		}
		if e.during {
			if rto := e.protected.Sub(rep.LostAt).Seconds(); rep.RTOSeconds < 0 || rto < rep.RTOSeconds {
				rep.RTOSeconds = rto
			}
			rep.MaxProtectSeconds = max(rep.MaxProtectSeconds, e.protected.Sub(e.sealedAt).Seconds())
		}
	}
	sort.Strings(rep.Unprotected)
	rep.RPOEnvelopes = len(rep.Unprotected)
	logf("outage measured: RPO %d envelopes, RTO %.1fs", rep.RPOEnvelopes, rep.RTOSeconds)
	if o.Open != nil && o.Control != nil {
		for _, during := range []bool{false, true} {
			k := keep[during]
			if k == nil {
				continue
			}
			res := GamedayOpen{ID: k.id, SealedIn: k.region, Skipped: []string{}}
			served, skipped, err := o.Open(ctx, k.file)
			if err != nil {
				res.Error = err.Error()
				logf("open without --region, %s lost: record %s (sealed in %s) FAILED: %v", o.Lose, k.id, k.region, err)
			} else {
				res.Region, res.Skipped = served, append(res.Skipped, skipped...)
				logf("open without --region, %s lost: record %s (sealed in %s) opened through %s (skipped: %v)", o.Lose, k.id, k.region, served, skipped)
			}
			rep.OpenedWithoutRegion = append(rep.OpenedWithoutRegion, res)
		}
	}

	if o.Control != nil {
		if err := o.Control.Up(ctx, o.Lose); err != nil {
			return nil, fmt.Errorf("restore %s: %w", o.Lose, err)
		}
		rep.RestoredAt = time.Now().UTC()
		logf("%s restored; waiting for it to catch up", o.Lose)
		deadline := time.Now().Add(o.Within)
		left := checkAll([]string{o.Lose})
		for left > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(500 * time.Millisecond)
			left = checkAll([]string{o.Lose})
		}
		rep.NotCaughtUp = left
		if left == 0 {
			rep.CatchUpSeconds = time.Since(rep.RestoredAt).Seconds()
		}
	}
	for _, n := range cfg.RegionNames() {
		row := GamedayRegion{Region: n, Lost: n == o.Lose, Of: len(envs)}
		for _, e := range envs {
			if _, ok := e.opened[n]; ok {
				row.Opened++
			}
		}
		rep.Matrix = append(rep.Matrix, row)
	}
	rep.EndedAt = time.Now().UTC()
	rep.Passed = rep.RPOEnvelopes == 0 && rep.SealFailures == 0 && rep.EnqueueFails == 0 && rep.RTOSeconds >= 0 &&
		(o.Control == nil || rep.NotCaughtUp == 0)
	for _, x := range rep.OpenedWithoutRegion {
		if x.Error != "" {
			rep.Passed = false
		}
	}
	return rep, nil
}

// kept is an envelope the game day keeps whole to open it later.
type kept struct {
	id, region string
	file       []byte
}

var gamedayFuncs = map[string]any{
	"secs": func(f float64) string {
		if f < 0 {
			return "—"
		}
		return fmt.Sprintf("%.1f s", f)
	},
	"verdict": func(ok bool) string {
		if ok {
			return "PASSED"
		}
		return "FAILED"
	},
	"join": strings.Join,
}

const gamedayMD = `# envdr game day: losing {{.Lost}} — {{verdict .Passed}}

| figure | value | target |
|---|---|---|
| RPO (envelopes sealed and enqueued that no surviving region could open alone) | {{.RPOEnvelopes}} | 0 |
| RTO (loss until new envelopes were open in every surviving region alone) | {{secs .RTOSeconds}} | |
| longest wait of an envelope sealed during the outage to be protected | {{secs .MaxProtectSeconds}} | |
| catch-up of {{.Lost}} after its return | {{secs .CatchUpSeconds}} | |

Sealed {{.Sealed}} envelopes ({{.SealedBefore}} before the loss, {{.SealedDuring}} during it); seal failures {{.SealFailures}}, enqueue failures {{.EnqueueFails}}.
Surviving regions: {{join .Surviving ", "}}. Lost at {{.LostAt.Format "2006-01-02T15:04:05Z07:00"}}.

| region | opened alone | of |
|---|---|---|
{{range .Matrix}}| {{.Region}}{{if .Lost}} (lost){{end}} | {{.Opened}} | {{.Of}} |
{{end}}{{range .OpenedWithoutRegion}}
envdr open without --region while {{$.Lost}} was lost: record {{.ID}} (sealed in {{.SealedIn}}) {{if .Error}}FAILED: {{.Error}}{{else}}opened through {{.Region}}{{if .Skipped}}, skipping {{join .Skipped ", "}}{{end}}{{end}}.
{{end}}{{if .Unprotected}}
Unprotected envelopes:
{{range .Unprotected}}- {{.}}
{{end}}{{end}}`

const gamedayHTML = `<!doctype html><html><head><meta charset="utf-8"><title>envdr game day: {{.Lost}}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.3em .6em}.PASSED{color:#070}.FAILED{color:#b00}</style></head><body>
<h1>envdr game day: losing {{.Lost}} — <span class="{{verdict .Passed}}">{{verdict .Passed}}</span></h1>
<table><tr><th>figure</th><th>value</th><th>target</th></tr>
<tr><td>RPO: envelopes sealed and enqueued that no surviving region could open alone</td><td>{{.RPOEnvelopes}}</td><td>0</td></tr>
<tr><td>RTO: loss until new envelopes were open in every surviving region alone</td><td>{{secs .RTOSeconds}}</td><td></td></tr>
<tr><td>longest wait to be protected (sealed during the outage)</td><td>{{secs .MaxProtectSeconds}}</td><td></td></tr>
<tr><td>catch-up of {{.Lost}} after its return</td><td>{{secs .CatchUpSeconds}}</td><td></td></tr></table>
<p>Sealed {{.Sealed}} envelopes ({{.SealedBefore}} before the loss, {{.SealedDuring}} during it); seal failures {{.SealFailures}}, enqueue failures {{.EnqueueFails}}.</p>
<table><tr><th>region</th><th>opened alone</th><th>of</th></tr>{{range .Matrix}}<tr><td>{{.Region}}{{if .Lost}} (lost){{end}}</td><td>{{.Opened}}</td><td>{{.Of}}</td></tr>{{end}}</table>
{{range .OpenedWithoutRegion}}<p>envdr open without --region while {{$.Lost}} was lost: record {{.ID}} (sealed in {{.SealedIn}}) {{if .Error}}FAILED: {{.Error}}{{else}}opened through {{.Region}}{{if .Skipped}}, skipping {{join .Skipped ", "}}{{end}}{{end}}.</p>{{end}}
{{if .Unprotected}}<h2>Unprotected envelopes</h2><ul>{{range .Unprotected}}<li>{{.}}</li>{{end}}</ul>{{end}}
</body></html>
`

var (
	gamedayMDTmpl   = template.Must(template.New("md").Funcs(gamedayFuncs).Parse(gamedayMD))
	gamedayHTMLTmpl = htmltemplate.Must(htmltemplate.New("html").Funcs(gamedayFuncs).Parse(gamedayHTML))
)

// WriteMarkdown writes the report as Markdown.
func (r *GamedayReport) WriteMarkdown(w io.Writer) error { return gamedayMDTmpl.Execute(w, r) }

// WriteHTML writes the report as a self-contained HTML page.
func (r *GamedayReport) WriteHTML(w io.Writer) error { return gamedayHTMLTmpl.Execute(w, r) }

// WriteJSON writes the report as indented JSON.
func (r *GamedayReport) WriteJSON(w io.Writer) error { return writeIndentedJSON(w, r) }

// WriteFiles writes PATH.md, PATH.html and PATH.json and returns their paths.
func (r *GamedayReport) WriteFiles(path string) ([]string, error) {
	return writeReportFiles(path, r.WriteMarkdown, r.WriteHTML, r.WriteJSON)
}
