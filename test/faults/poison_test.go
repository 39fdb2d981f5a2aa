package faults

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/replicate"
)

// TestPoison sends a table of malformed events to a running daemon process. Each must end in
// the DLQ with its reason attribute, with a log line naming the reason; the daemon keeps
// serving (same process, good events still replicate), and the genuine events whose IDs the
// forgeries borrowed still replicate afterwards. It runs in mrk mode (wraps by ReEncrypt,
// the DEK never leaves KMS) and in mixed mode (one independent region: Decrypt + Encrypt).
func TestPoison(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name  string
		modes map[string]string
	}{
		{"mrk", nil},
		{"mixed", map[string]string{"ap-southeast-2": config.ModeIndependent}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testPoison(t, mode.modes)
		})
	}
}

func testPoison(t *testing.T, modes map[string]string) {
	s := newSuite(t, modes)
	es := s.sealN(4, map[string]string{"app": "poison"})
	target, other := es[0], es[1]
	evs := make([]map[string]any, len(es))
	for i, e := range es {
		require.NoError(t, json.Unmarshal([]byte(e.body), &evs[i]))
	}
	otherEv := evs[1]
	// mutateOf forges an event from es[i]'s genuine one.
	mutateOf := func(i int, f func(m map[string]any)) string {
		m := map[string]any{}
		raw, _ := json.Marshal(evs[i])
		require.NoError(t, json.Unmarshal(raw, &m))
		f(m)
		out, err := json.Marshal(m)
		require.NoError(t, err)
		return string(out)
	}
	mutate := func(f func(m map[string]any)) string { return mutateOf(0, f) }
	unknownKey := strings.Replace(target.hdr.KeyARN, target.hdr.KeyARN[len(target.hdr.KeyARN)-8:], "00000000", 1)

	type pcase struct{ name, body, reason string }
	cases := []pcase{
		{"bad JSON", `{"version":1,`, envelope.ReasonBadJSON},
		{"not an object", `["version",1]`, envelope.ReasonBadJSON},
		{"unknown version", mutate(func(m map[string]any) { m["version"] = 2 }), envelope.ReasonUnknownVersion},
		{"missing field (wrapped_dek)", mutate(func(m map[string]any) { delete(m, "wrapped_dek") }), envelope.ReasonMissingField},
		{"missing field (context)", mutate(func(m map[string]any) { delete(m, "context") }), envelope.ReasonMissingField},
		{"unknown field", mutate(func(m map[string]any) { m["plaintext_dek"] = "AAAA" }), envelope.ReasonUnknownField},
		{"duplicate field", strings.Replace(target.body, `"version":1,`, `"version":1,"version":1,`, 1), envelope.ReasonDuplicateField},
		{"wrong type", mutate(func(m map[string]any) { m["created_at"] = 12 }), envelope.ReasonBadField},
		{"bad base64 (wrapped_dek)", mutate(func(m map[string]any) { m["wrapped_dek"] = "not base64!" }), envelope.ReasonBadBase64},
		{"bad base64 (commitment)", mutate(func(m map[string]any) { m["commitment"] = "!!!" }), envelope.ReasonBadBase64},
		{"oversize", `{"version":1,"id":"` + strings.Repeat("a", 257<<10) + `"}`, envelope.ReasonOversize},
		{"unknown key", mutate(func(m map[string]any) { m["key_arn"] = unknownKey }), replicate.ReasonUnknownKey},
		{"unknown source region", mutate(func(m map[string]any) {
			m["source_region"] = "us-west-2"
			m["key_arn"] = strings.Replace(target.hdr.KeyARN, "us-east-1", "us-west-2", 1)
		}), replicate.ReasonUnknownRegion},
		{"context without envdr:id", mutate(func(m map[string]any) { m["context"] = map[string]string{"app": "poison"} }), envelope.ReasonBadContext},
		{"context envdr:id differs from id", mutate(func(m map[string]any) {
			m["context"] = map[string]string{"app": "poison", envelope.KeyID: other.id}
		}), envelope.ReasonBadContext},
		// The two forgeries that pass the decoder borrow the IDs of envelopes 2 and 3, whose
		// genuine events are sent afterwards and must still replicate.
		{"commitment mismatch", mutateOf(2, func(m map[string]any) { m["commitment"] = otherEv["commitment"] }), replicate.ReasonCommitmentMismatch},
		{"wrapped DEK of another envelope", mutateOf(3, func(m map[string]any) { m["wrapped_dek"] = otherEv["wrapped_dek"] }), replicate.ReasonInvalidWrap},
	}
	d := s.startDaemon("daemon")
	d.waitUp()
	pid := d.cmd.Process.Pid
	// Forgeries first: the genuine events of target and other come only after them, so a
	// forgery that polluted their records would show up as a genuine event failing.
	for _, c := range cases {
		s.send(c.body)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		n := d.handled()
		if n >= len(cases) {
			break
		}
		require.True(t, time.Now().Before(deadline), "only %d of %d poison events handled", n, len(cases))
		time.Sleep(100 * time.Millisecond)
	}
	s.waitDrained(time.Minute)
	dlq := s.drainDLQ()
	// Match DLQ messages to cases by body (each case's body is distinct).
	byBody := map[string]dlqMessage{}
	for _, m := range dlq {
		byBody[m.body] = m
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| poison case | expected reason | DLQ reason | error attribute (trimmed) |\n|---|---|---|---|\n")
	for _, c := range cases {
		m, ok := byBody[c.body]
		got := "(not in DLQ)"
		if ok {
			got = m.reason
		}
		e := m.err
		if len(e) > 110 {
			e = e[:110] + "…"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.name, c.reason, got, strings.ReplaceAll(e, "|", "/"))
		if assert := ok && got == c.reason; !assert {
			t.Errorf("case %q: want the DLQ with reason %q, got %s", c.name, c.reason, got)
		}
	}
	require.Len(t, dlq, len(cases), "one DLQ message per poison event, nothing else")
	// The log says so too: one warn line per poison event with its reason.
	reasons := map[string]int{}
	for _, c := range s.streams() {
		if !strings.HasPrefix(c.name, "daemon (stderr)") {
			continue
		}
		for _, line := range strings.Split(string(c.bytes()), "\n") {
			var l logLine
			if json.Unmarshal([]byte(line), &l) == nil && l.Outcome == "poison" && l.Msg == "poison event sent to the DLQ" {
				reasons[l.Reason]++
			}
		}
	}
	for _, c := range cases {
		require.Positive(t, reasons[c.reason], "no poison log line with reason %q", c.reason)
	}

	// Still serving, same process: the genuine events (including those whose IDs the
	// forgeries used) replicate and verify.
	require.True(t, d.alive())
	require.Equal(t, pid, d.cmd.Process.Pid)
	s.send(bodies(es)...)
	// Wait until every genuine event has had an outcome (acked or not) and the queue is empty.
	deadline = time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		n := d.handled()
		if s.ackedOf(ids(es)) == len(es) || n >= len(cases)+len(es) && s.depth() == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s.ackedOf(ids(es)) < len(es) {
		dlq := s.drainDLQ()
		for i, e := range es {
			if s.ackCount(e.id) == 0 {
				t.Errorf("genuine event of envelope %d (%s) not replicated after the forgeries ran first", i, e.id)
			}
		}
		t.Fatalf("DLQ now holds: %+v", dlq)
	}
	s.waitDrained(time.Minute)
	lost, corrupted := s.checkRecords(es)
	require.Zero(t, lost+corrupted)
	require.Empty(t, s.drainDLQ())
	poisoned, err := d.metric("envdr_dlq_total", nil)
	require.NoError(t, err)
	require.EqualValues(t, len(cases), poisoned)
	require.Equal(t, 0, d.term(30*time.Second))
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(&b, "daemon kept serving (same pid), genuine events acked afterwards: %d/%d; poison log lines by reason: %v\n",
		s.ackedOf(ids(es)), len(es), reasons)
	name := "faults-poison-mrk.md"
	if modes != nil {
		name = "faults-poison-mixed.md"
	}
	report(t, name, b.String())
}
