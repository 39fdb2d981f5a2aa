package envelope_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
)

func TestContextCanonical(t *testing.T) {
	t.Parallel()
	c, err := envelope.NewContext("env-1", map[string]string{"zeta": "1", "alpha": "2", "Mid": "ü"})
	require.NoError(t, err)
	require.Equal(t, []string{"Mid", "alpha", "envdr:id", "zeta"}, c.Keys(), "bytewise order")
	require.Equal(t, "env-1", c.ID())
	require.Equal(t, map[string]string{"Mid": "ü", "alpha": "2", "envdr:id": "env-1", "zeta": "1"}, c.Map())
	require.Equal(t, map[string]string{"Mid": "ü", "alpha": "2", "zeta": "1"}, c.User())
	require.Equal(t, "Mid=ü,alpha=2,envdr:id=env-1,zeta=1", c.String())
	j, err := json.Marshal(c)
	require.NoError(t, err)
	require.Equal(t, `{"Mid":"ü","alpha":"2","envdr:id":"env-1","zeta":"1"}`, string(j))
	var back envelope.Context
	require.NoError(t, json.Unmarshal(j, &back))
	require.True(t, back.Equal(c))
	// Maps already come sorted from encoding/json, so the canonical JSON is json.Marshal's.
	std, _ := json.Marshal(c.Map())
	require.Equal(t, string(std), string(j))
}

func TestContextRules(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("v", envelope.MaxContextValueLen)
	many := map[string]string{}
	for i := 0; i < envelope.MaxContextEntries; i++ {
		many[string(rune('a'+i%26))+strings.Repeat("x", i)] = "v"
	}
	big := map[string]string{}
	for i := 0; i < 5; i++ {
		big[string(rune('a'+i))] = long
	}
	for name, c := range map[string]struct {
		id   string
		user map[string]string
	}{
		"empty id":        {id: "", user: nil},
		"bad id char":     {id: "a/b"},
		"id leading dash": {id: "-a"},
		"long id":         {id: strings.Repeat("a", envelope.MaxIDLen+1)},
		"reserved key":    {id: "a", user: map[string]string{"envdr:id": "a"}},
		"reserved other":  {id: "a", user: map[string]string{"envdr:x": "a"}},
		"empty key":       {id: "a", user: map[string]string{"": "v"}},
		"empty value":     {id: "a", user: map[string]string{"k": ""}},
		"invalid utf8":    {id: "a", user: map[string]string{"k": "\xff"}},
		"control in key":  {id: "a", user: map[string]string{"k\n": "v"}},
		"long key":        {id: "a", user: map[string]string{strings.Repeat("k", envelope.MaxContextKeyLen+1): "v"}},
		"long value":      {id: "a", user: map[string]string{"k": long + "v"}},
		"too many":        {id: "a", user: many},
		"too many bytes":  {id: "a", user: big},
	} {
		_, err := envelope.NewContext(c.id, c.user)
		require.ErrorIs(t, err, envelope.ErrBadContext, name)
		var ce *envelope.ContextError
		require.ErrorAs(t, err, &ce, name)
	}
	// ParseContext takes envdr:id from the map and refuses it missing.
	_, err := envelope.ParseContext(map[string]string{"a": "b"})
	require.ErrorIs(t, err, envelope.ErrBadContext)
	c, err := envelope.ParseContext(map[string]string{"a": "b", "envdr:id": "x"})
	require.NoError(t, err)
	require.Equal(t, "x", c.ID())
	// Duplicate JSON keys are refused, not silently collapsed.
	var dup envelope.Context
	require.ErrorIs(t, json.Unmarshal([]byte(`{"envdr:id":"x","a":"1","a":"2"}`), &dup), envelope.ErrBadContext)
	require.ErrorIs(t, json.Unmarshal([]byte(`{"envdr:id":"x","a":1}`), &dup), envelope.ErrBadContext)
}

func TestContextCompare(t *testing.T) {
	t.Parallel()
	c := mustContext(t, "id-1", map[string]string{"a": "1", "b": "2", "c": "3"})
	require.NoError(t, c.Compare(map[string]string{"a": "1", "b": "2", "c": "3"}))
	require.NoError(t, c.Compare(map[string]string{"a": "1", "b": "2", "c": "3", "envdr:id": "id-1"}))
	err := c.Compare(map[string]string{"a": "9", "c": "3", "d": "4", "envdr:id": "id-2"})
	var cm *envelope.ContextMismatchError
	require.ErrorAs(t, err, &cm)
	require.ErrorIs(t, err, envelope.ErrContextMismatch)
	require.Equal(t, []string{"d"}, cm.Missing)
	require.Equal(t, []string{"b"}, cm.Extra)
	require.Equal(t, []string{"a", "envdr:id"}, cm.Different)
	require.Equal(t, `envelope: encryption context mismatch: missing keys "d"; unexpected keys "b"; different values for keys "a", "envdr:id"`, err.Error())

	other := mustContext(t, "id-2", map[string]string{"a": "1"})
	err = c.Diff(other)
	require.ErrorAs(t, err, &cm)
	require.Equal(t, []string{"b", "c"}, cm.Extra)
	require.Equal(t, []string{"envdr:id"}, cm.Different)
	require.NoError(t, c.Diff(c))
}
