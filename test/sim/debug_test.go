package sim

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestDebugHistory(t *testing.T) {
	seedStr := os.Getenv("ENVDR_SIM_DEBUG_SEED")
	if seedStr == "" {
		t.Skip("ENVDR_SIM_DEBUG_SEED unset")
	}
	seed, _ := strconv.ParseUint(seedStr, 10, 64)
	s := Generate(seed)
	keep, _ := ParseKeep(os.Getenv("ENVDR_SIM_OPS"), len(s.Ops))
	debugHook = func(w *world, res Result) {
		if len(res.Violations) == 0 {
			return
		}
		for _, v := range res.Violations {
			t.Log(v)
		}
		for _, h := range w.gt.history {
			if !strings.Contains(h.id, "#") {
				continue
			}
			it := parseRegionItem(h.next)
			var ver struct{ N string }
			_ = json.Unmarshal(h.next["version"], &ver)
			var wa struct{ S string }
			_ = json.Unmarshal(h.next["wrapped_at"], &wa)
			cl := "-"
			if len(it.wrapped) > 0 {
				rec, reg, _ := splitItemID(h.id)
				c := &classifier{w: w, ctx: context.Background(), cache: map[string]wrapClass{}}
				cl = c.class(reg, rec, it).String()
			}
			t.Logf("%s in %s local=%v v=%s wrap=%s(%s) wrapped_at=%s verified=%s err=%.60s", h.id[len(h.id)-20:], h.region, h.local, ver.N,
				hex.EncodeToString(it.wrapped)[:min(12, 2*len(it.wrapped))], cl, wa.S, it.verified, it.lastErr)
		}
	}
	defer func() { debugHook = nil }()
	Run(context.Background(), s, keep)
}
