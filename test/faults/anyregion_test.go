package faults

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fileCase is one file sealed by `envdr seal` as a producer would.
type fileCase struct {
	id, path string
	plain    []byte
	region   string // the region that sealed it (the header's)
}

// sealFiles seals n random files with `envdr seal --enqueue` (plus args) and returns them.
func (s *suite) sealFiles(n int, tag string, args ...string) []fileCase {
	s.t.Helper()
	out := make([]fileCase, n)
	for i := range out {
		pt := make([]byte, 100+randInt(400))
		_, _ = rand.Read(pt)
		s.secrets.addSample(pt)
		in := filepath.Join(s.dir, fmt.Sprintf("%s-%d.txt", tag, i))
		require.NoError(s.t, os.WriteFile(in, pt, 0o600))
		env := in + ".envdr"
		res := s.cli(nil, append(append([]string{"seal", "--context", "app=any-region", "--enqueue"}, args...), in, env)...)
		require.Equalf(s.t, 0, res.code, "seal %s: %s", in, res.stderr)
		require.NoError(s.t, os.Remove(in))
		ins := s.cli(nil, "inspect", env)
		require.Equal(s.t, 0, ins.code, string(ins.stderr))
		var hdr struct {
			ID         string `json:"id"`
			HomeRegion string `json:"home_region"`
		}
		require.NoError(s.t, json.Unmarshal(ins.stdout, &hdr), string(ins.stdout))
		out[i] = fileCase{id: hdr.ID, path: env, plain: pt, region: hdr.HomeRegion}
	}
	return out
}

// opensAlone reports whether region alone verifies f's record (`verify --region R --id ID
// --no-write`) and opens f (`open --region R`) to its plaintext; it says why not.
func (s *suite) opensAlone(f fileCase, region string) (bool, string) {
	res := s.cli(nil, "verify", "--region", region, "--id", f.id, "--no-write", "--quiet")
	if res.code != 0 {
		return false, fmt.Sprintf("verify %s in %s: exit %d: %s", f.id, region, res.code, bytes.TrimSpace(res.stderr))
	}
	out := f.path + "." + region + ".out"
	res = s.cli(nil, "open", "--region", region, f.path, out)
	if res.code != 0 {
		return false, fmt.Sprintf("open %s in %s: exit %d: %s", f.id, region, res.code, bytes.TrimSpace(res.stderr))
	}
	got, err := os.ReadFile(out)
	_ = os.Remove(out)
	if err != nil || !bytes.Equal(got, f.plain) {
		return false, fmt.Sprintf("open %s in %s: wrong plaintext", f.id, region)
	}
	return true, ""
}

// waitOpenAlone waits until every file verifies and opens in each of regions alone.
func (s *suite) waitOpenAlone(files []fileCase, regions []string, within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	pending := append([]fileCase(nil), files...)
	var why string
	for len(pending) > 0 && time.Now().Before(deadline) {
		var next []fileCase
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		for _, f := range pending {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				for _, r := range regions {
					if ok, w := s.opensAlone(f, r); !ok {
						mu.Lock()
						next, why = append(next, f), w
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		pending = next
		if len(pending) > 0 {
			time.Sleep(time.Second)
		}
	}
	require.Emptyf(s.t, pending, "%d of %d files do not open in each of %v alone after %s; e.g. %s", len(pending), len(files), regions, within, why)
}

// deadLetters is `envdr status --region R --json`'s dead_letter for each region.
func (s *suite) deadLetters() map[string]int {
	s.t.Helper()
	out := map[string]int{}
	for _, r := range s.cfg.RegionNames() {
		res := s.cli(nil, "status", "--region", r, "--json")
		require.Equalf(s.t, 0, res.code, "status --region %s: %s", r, res.stderr)
		var st struct {
			Region     string `json:"region"`
			DeadLetter int    `json:"dead_letter"`
		}
		require.NoError(s.t, json.Unmarshal(res.stdout, &st))
		require.Equal(s.t, r, st.Region)
		out[r] = st.DeadLetter
	}
	return out
}

// TestLoseHomeRegionKeepsProtecting is issue 12's end-to-end check, on global tables with 1 s
// of replication lag and one daemon per region: the home region is lost right after sealing,
// sealing goes on elsewhere (also by plain fall-over), everything sealed opens in each
// surviving region alone during the outage, and in every region after it; no DLQ holds
// anything.
func TestLoseHomeRegionKeepsProtecting(t *testing.T) {
	t.Parallel()
	const home = "us-east-1"
	s := newSuite(t, nil)
	s.env.SetLag(time.Second)
	daemons := map[string]*daemon{}
	for _, r := range s.cfg.RegionNames() {
		daemons[r] = s.startDaemon("daemon "+r, "--region", r)
	}
	for _, d := range daemons {
		d.waitUp()
	}

	// 1. Seal in the home region, with --enqueue.
	step1 := s.sealFiles(scaled(6, 30), "step1")
	for _, f := range step1 {
		require.Equal(t, home, f.region)
	}
	// 2. Stop the home region's daemon, seal more there, and lose the region at once.
	require.Equal(t, 0, daemons[home].term(30*time.Second))
	step2 := s.sealFiles(scaled(4, 20), "step2")
	s.env.Down(home)
	lostAt := time.Now()
	// 3. Seal elsewhere: explicitly, and by plain fall-over.
	step3 := s.sealFiles(scaled(6, 30), "step3", "--region", "eu-west-1")
	res := s.cli(nil, "seal", "--enqueue", "--region-timeout", "3s", "--context", "app=any-region", "/dev/null", filepath.Join(s.dir, "fallover.envdr"))
	require.Equal(t, 0, res.code, string(res.stderr))
	require.Contains(t, string(res.stderr), "region "+home+" cannot seal now")
	require.Contains(t, string(res.stderr), "falling over")
	ins := s.cli(nil, "inspect", filepath.Join(s.dir, "fallover.envdr"))
	require.Contains(t, string(ins.stdout), `"home_region": "eu-west-1"`)
	fall := fileCase{id: strings.TrimSpace(string(res.stdout)), path: filepath.Join(s.dir, "fallover.envdr"), plain: []byte{}, region: "eu-west-1"}
	for _, f := range step3 {
		require.Equal(t, "eu-west-1", f.region)
	}

	// 4. Everything from steps 2 and 3 opens in each surviving region alone, while the home
	// region is still down.
	during := append(append(append([]fileCase(nil), step2...), step3...), fall)
	s.waitOpenAlone(during, []string{"eu-west-1", "ap-southeast-2"}, 2*time.Minute)
	protected := time.Since(lostAt)
	require.False(t, s.env.Stack.IsUp(home))

	// 5. Restore the home region and restart its daemon.
	s.env.Up(home)
	upAt := time.Now()
	daemons[home] = s.startDaemon("daemon "+home+" (restarted)", "--region", home)
	daemons[home].waitUp()

	// 6. Every file opens in each region alone; every DLQ is empty.
	all := append(append([]fileCase(nil), step1...), during...)
	s.waitOpenAlone(all, s.cfg.RegionNames(), 3*time.Minute)
	caughtUp := time.Since(upAt)
	for r, n := range s.deadLetters() {
		require.Zerof(t, n, "region %s's DLQ", r)
	}
	for r, d := range daemons {
		require.Equalf(t, 0, d.term(30*time.Second), "daemon %s", r)
	}
	report(t, "any-region", fmt.Sprintf("lost %s with %d sealed after its daemon stopped; %d sealed in eu-west-1 (+1 by fall-over); "+
		"all of them open in eu-west-1 and ap-southeast-2 alone %.1fs after the loss; after restore, all %d open in every region within %.1fs; DLQs empty",
		home, len(step2), len(step3), protected.Seconds(), len(all), caughtUp.Seconds()))
}
