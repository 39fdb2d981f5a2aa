package sim

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// The I6 scanner finds a secret in every encoding a log line could carry it in.
func TestLeakedFindsEveryEncoding(t *testing.T) {
	secret := []byte{0xfb, 0xff, 0x01, 0x02, 0x7e, 0x80, 0x3f, 0xbe, 0xef, 0x00, 0x10}
	for name, enc := range map[string]string{
		"raw":       string(secret),
		"std":       base64.StdEncoding.EncodeToString(secret),
		"raw std":   base64.RawStdEncoding.EncodeToString(secret),
		"url":       base64.URLEncoding.EncodeToString(secret),
		"raw url":   base64.RawURLEncoding.EncodeToString(secret),
		"hex":       hex.EncodeToString(secret),
		"upper hex": strings.ToUpper(hex.EncodeToString(secret)),
	} {
		if !leaked(`{"level":"debug","msg":"x","v":"`+enc+`"}`, secret) {
			t.Errorf("%s: not found", name)
		}
	}
	if leaked(`{"level":"debug","msg":"nothing here"}`, secret) {
		t.Error("found a secret that is not there")
	}
}

// The condition evaluator knows replicate.Store's expressions and refuses any other.
func TestConditionExpressions(t *testing.T) {
	cur := attrs{"id": []byte(`{"S":"a"}`), "version": []byte(`{"N":"3"}`)}
	names := map[string]string{"#0": "id", "#1": "version"}
	for _, c := range []struct {
		expr string
		vals attrs
		cur  attrs
		want bool
	}{
		{"attribute_not_exists (#0)", nil, nil, true},
		{"attribute_not_exists (#0)", nil, cur, false},
		{"attribute_exists (#0)", nil, cur, true},
		{"#1 = :0", attrs{":0": []byte(`{"N":"3"}`)}, cur, true},
		{"#1 = :0", attrs{":0": []byte(`{"N":"4"}`)}, cur, false},
		{"#1 = :0", attrs{":0": []byte(`{"N":"3"}`)}, nil, false},
	} {
		got, err := condition(writeReq{ConditionExpression: c.expr, ExpressionAttributeNames: names, ExpressionAttributeValues: c.vals}, c.cur)
		if err != nil || got != c.want {
			t.Errorf("%s on %v: %v, %v; want %v", c.expr, c.cur, got, err, c.want)
		}
	}
	if _, err := condition(writeReq{ConditionExpression: "#1 < :0", ExpressionAttributeNames: names,
		ExpressionAttributeValues: attrs{":0": []byte(`{"N":"3"}`)}}, cur); err == nil {
		t.Error("an expression the model does not know was evaluated")
	}
}
