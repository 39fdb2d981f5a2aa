package sim

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// wrapClass is what a wrap decrypts to, through its region's KMS alone.
type wrapClass int

const (
	wrapGood   wrapClass = iota // the envelope's DEK
	wrapForged                  // a data key the producer made for a forged event
	wrapBad                     // does not decrypt there, or to some other key
)

func (c wrapClass) String() string {
	return [...]string{"the envelope's data key", "a forged event's data key", "no usable data key"}[c]
}

type classifier struct {
	w     *world
	ctx   context.Context
	cache map[string]wrapClass
}

func (c *classifier) class(region, recID string, it regionItem) wrapClass {
	e := c.w.byID[recID]
	if e == nil || len(it.wrapped) == 0 {
		return wrapBad
	}
	k := region + "|" + it.keyARN + "|" + string(it.wrapped)
	if v, ok := c.cache[k]; ok {
		return v
	}
	v := wrapBad
	pt, err := c.w.decryptIn(c.ctx, region, it.keyARN, it.wrapped, e.hdr.Context.Map())
	if err == nil {
		switch {
		case bytes.Equal(pt, e.dek):
			v = wrapGood
		default:
			for _, b := range e.bad {
				if bytes.Equal(pt, b) {
					v = wrapForged
				}
			}
		}
	}
	c.cache[k] = v
	return v
}

// check asserts I1-I6 (and L1) on the settled world.
func (w *world) check(ctx context.Context, su setup) []Violation {
	var out []Violation
	seen := map[string]bool{}
	add := func(inv, format string, a ...any) {
		d := fmt.Sprintf(format, a...)
		if !seen[inv+d] {
			seen[inv+d] = true
			out = append(out, Violation{Inv: inv, Detail: d})
		}
	}
	c := &classifier{w: w, ctx: ctx, cache: map[string]wrapClass{}}
	snaps := map[string]map[string]attrs{}
	for _, r := range Regions {
		snaps[r] = w.gt.snapshot(r)
	}
	// opensAlone: R's own replica holds a wrap for R under a key R trusts that opens, in R, to
	// the envelope's DEK.
	opensAlone := func(id, region string) (bool, string) {
		img, ok := snaps[region][id+"#"+region]
		if !ok {
			return false, "no item for the region in its own replica"
		}
		it := parseRegionItem(img)
		if len(it.wrapped) == 0 {
			return false, fmt.Sprintf("its item holds no wrap (last_error %q)", it.lastErr)
		}
		if !w.trusted(region)[it.keyARN] {
			return false, "its wrap is under key " + it.keyARN + ", which the region does not trust"
		}
		if cl := c.class(region, id, it); cl != wrapGood {
			return false, "its wrap opens to " + cl.String()
		}
		return true, ""
	}

	// I1: acknowledged means every required region opens it alone.
	ids := make([]string, 0, len(w.acked))
	for id := range w.acked {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		for _, r := range su.Required {
			if ok, why := opensAlone(id, r); !ok {
				add("I1", "record %s was acknowledged, but in %s's own replica %s", short(id), r, why)
			}
		}
	}
	for _, f := range w.openFails {
		add("I1", "%s", f)
	}
	// I2: a passing verify of R means every record it counted opens in R alone.
	for _, p := range w.passed {
		for _, id := range p.ids {
			for _, r := range p.regions {
				if ok, why := opensAlone(id, r); !ok {
					add("I2", "%s passed with record %s counted, but in %s's own replica %s", p.what, short(id), r, why)
				}
			}
		}
	}
	// I3: once a region item holds a verified wrap, every later version (in any replica) holds a
	// wrap that opens to the DEK; a verified_at is never put on a wrap that does not.
	w.gt.mu.Lock()
	hist := append([]applied(nil), w.gt.history...)
	w.gt.mu.Unlock()
	for _, h := range hist {
		recID, region, isRegion := splitItemID(h.id)
		if !isRegion {
			continue
		}
		next := parseRegionItem(h.next)
		if h.next != nil && next.verified != "" && len(next.wrapped) > 0 {
			if cl := c.class(region, recID, next); cl != wrapGood {
				add("I3", "record %s: %s's item got verified_at on a wrap that opens to %s (replica %s)", short(recID), region, cl, h.region)
			}
		}
		if h.prev == nil {
			continue
		}
		prev := parseRegionItem(h.prev)
		if prev.verified == "" || len(prev.wrapped) == 0 {
			continue
		}
		switch {
		case h.next == nil:
			add("I3", "record %s: %s's verified wrap was deleted (replica %s)", short(recID), region, h.region)
		case len(next.wrapped) == 0:
			how := "replicated"
			if h.local {
				how = "written locally"
			}
			add("I3", "record %s: %s's verified wrap was replaced in replica %s by a version without a wrap (last_error %q, %s)",
				short(recID), region, h.region, next.lastErr, how)
		case !bytes.Equal(next.wrapped, prev.wrapped):
			if cl := c.class(region, recID, next); cl != wrapGood {
				add("I3", "record %s: %s's verified wrap was replaced in replica %s by one that opens to %s", short(recID), region, h.region, cl)
			}
		}
	}
	// I4: after rewrap and a passing retirement gate, no counted record needs the retired key.
	for _, rc := range w.retireChk {
		add("I4", "the retirement gate passed after rewrap of %s, but record %s's wrap there is still under the retired key %s",
			rc.region, short(rc.ids[0]), rc.keys[0])
	}
	// I5: every forged event is dead-lettered (commitment_mismatch) and changes nothing.
	inDLQ := map[*message]string{}
	for _, d := range w.dlq {
		inDLQ[d.msg] = d.reason
		if !d.msg.forged {
			add("L1", "the genuine event of record %s was dead-lettered (reason %s)", short(d.msg.envID), d.reason)
		}
	}
	for _, m := range w.forged {
		reason, ok := inDLQ[m]
		switch {
		case ok && reason == "commitment_mismatch":
		case ok:
			add("I5", "forged event %s (record %s) was dead-lettered with reason %s, not commitment_mismatch", m.id, short(m.envID), reason)
		case m.done:
			add("I5", "forged event %s (record %s) was acknowledged", m.id, short(m.envID))
		default:
			add("I5", "forged event %s (record %s) was never dead-lettered (still redelivered)", m.id, short(m.envID))
		}
	}
	for _, view := range Regions {
		for id, img := range snaps[view] {
			recID, region, isRegion := splitItemID(id)
			if !isRegion {
				continue
			}
			it := parseRegionItem(img)
			if len(it.wrapped) == 0 {
				continue
			}
			if cl := c.class(region, recID, it); cl == wrapForged {
				add("I5", "record %s: %s's wrap holds a forged event's data key (replica %s)", short(recID), region, view)
			}
		}
	}
	// I6: no DEK or plaintext in any log line.
	logs := w.logs.String()
	for _, e := range w.envs {
		secrets := append([][]byte{e.dek, e.plain}, e.bad...)
		for _, s := range secrets {
			if leaked(logs, s) {
				add("I6", "a data key or plaintext of record %s appears in the logs", short(e.hdr.RecordID()))
			}
		}
	}
	return out
}

func leaked(logs string, secret []byte) bool {
	if len(secret) == 0 {
		return false
	}
	for _, enc := range []string{string(secret), base64.StdEncoding.EncodeToString(secret), base64.RawStdEncoding.EncodeToString(secret),
		base64.URLEncoding.EncodeToString(secret), base64.RawURLEncoding.EncodeToString(secret), hex.EncodeToString(secret),
		strings.ToUpper(hex.EncodeToString(secret))} {
		if strings.Contains(logs, enc) {
			return true
		}
	}
	return false
}

// historyOf renders every version of the region items of the records the violations name, in
// the order the replicas applied them (ENVDR_SIM_HISTORY).
func (w *world) historyOf(vs []Violation) []string {
	c := &classifier{w: w, ctx: context.Background(), cache: map[string]wrapClass{}}
	w.gt.mu.Lock()
	hist := append([]applied(nil), w.gt.history...)
	w.gt.mu.Unlock()
	var out []string
	for _, h := range hist {
		recID, region, isRegion := splitItemID(h.id)
		named := false
		for _, v := range vs {
			named = named || strings.Contains(v.Detail, short(recID))
		}
		if !isRegion || !named {
			continue
		}
		it := parseRegionItem(h.next)
		wrap := "no wrap"
		if len(it.wrapped) > 0 {
			wrap = "a wrap of " + c.class(region, recID, it).String()
		}
		how := "replicated"
		if h.local {
			how = "written locally"
		}
		out = append(out, fmt.Sprintf("record %s, %s's item in replica %s (%s): %s, verified_at %q, last_error %.80q",
			short(recID), region, h.region, how, wrap, it.verified, it.lastErr))
	}
	return out
}
