package envelope_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/envelope/envelopetest"
)

var t0 = time.Date(2026, 11, 23, 13, 0, 0, 123456789, time.UTC)

func sampleEvent(t testing.TB) *envelope.Event {
	t.Helper()
	com, err := envelope.Commitment(testDEK(1))
	require.NoError(t, err)
	return &envelope.Event{
		Version:      1,
		ID:           "rec-1",
		SourceRegion: "us-east-1",
		KeyARN:       testARN,
		WrappedDEK:   []byte("wrapped under us-east-1"),
		Context:      mustContext(t, "rec-1", map[string]string{"app": "billing"}),
		Commitment:   com,
		CreatedAt:    t0,
		DataURI:      "s3://bucket/key",
	}
}

func sampleRecord(t testing.TB) *envelope.Record {
	r := sampleEvent(t).Record()
	r.Version = 3
	r.Regions["us-east-1"].VerifiedAt = t0.Add(time.Second)
	r.Regions["eu-west-1"] = &envelope.RegionWrap{
		KeyARN: "arn:aws:kms:eu-west-1:111122223333:key/mrk-1", Wrapped: []byte("wrapped under eu-west-1"),
		WrappedAt: t0.Add(2 * time.Second),
	}
	r.Regions["ap-southeast-2"] = &envelope.RegionWrap{
		LastError: "ThrottlingException: rate exceeded", LastErrorAt: t0.Add(3 * time.Second),
	}
	return r
}

func TestRecordCodec(t *testing.T) {
	t.Parallel()
	r := sampleRecord(t)
	b, err := envelope.EncodeRecord(r)
	require.NoError(t, err)
	require.Equal(t, `{"format":1,"id":"rec-1","version":3,"context":{"app":"billing","envdr:id":"rec-1"},`+
		`"commitment":"sf3z0w/cNxS/QWQrqozTjC5MOhqHuay21M/lUPL48Uw=","source_region":"us-east-1",`+
		`"source_key_arn":"`+testARN+`","created_at":"2026-11-23T13:00:00.123456789Z","data_uri":"s3://bucket/key",`+
		`"regions":{"ap-southeast-2":{"last_error":"ThrottlingException: rate exceeded","last_error_at":"2026-11-23T13:00:03.123456789Z"},`+
		`"eu-west-1":{"key_arn":"arn:aws:kms:eu-west-1:111122223333:key/mrk-1","wrapped_dek":"d3JhcHBlZCB1bmRlciBldS13ZXN0LTE=","wrapped_at":"2026-11-23T13:00:02.123456789Z"},`+
		`"us-east-1":{"key_arn":"`+testARN+`","wrapped_dek":"d3JhcHBlZCB1bmRlciB1cy1lYXN0LTE=","wrapped_at":"2026-11-23T13:00:00.123456789Z","verified_at":"2026-11-23T13:00:01.123456789Z"}}}`,
		string(b))
	back, err := envelope.DecodeRecord(b)
	require.NoError(t, err)
	require.Equal(t, r, back)
	again, err := envelope.EncodeRecord(back)
	require.NoError(t, err)
	require.Equal(t, b, again, "decode then encode gives identical bytes")
	require.Equal(t, "eu-west-1", r.Wrap("eu-west-1").Region)
	require.Nil(t, r.Wrap("ap-southeast-2"))
}

func TestRecordDecodeRejects(t *testing.T) {
	t.Parallel()
	good, err := envelope.EncodeRecord(sampleRecord(t))
	require.NoError(t, err)
	g := string(good)
	for name, in := range map[string]string{
		"not json":          `{"format":1,`,
		"array":             `[]`,
		"trailing":          g + `{}`,
		"invalid utf8":      strings.Replace(g, "billing", "bill\xffing", 1),
		"unknown format":    strings.Replace(g, `"format":1`, `"format":2`, 1),
		"unknown field":     strings.Replace(g, `"format":1,`, `"format":1,"extra":1,`, 1),
		"case-folded field": strings.Replace(g, `"id":`, `"ID":`, 1),
		"duplicate field":   strings.Replace(g, `"format":1,`, `"format":1,"format":1,`, 1),
		"missing id":        strings.Replace(g, `"id":"rec-1",`, ``, 1),
		"bad base64":        strings.Replace(g, `sf3z0w/`, `sf3z0w*`, 1),
		"short commitment":  strings.Replace(g, `sf3z0w/cNxS/QWQrqozTjC5MOhqHuay21M/lUPL48Uw=`, `AAAA`, 1),
		"id/context differ": strings.Replace(g, `"id":"rec-1"`, `"id":"rec-2"`, 1),
		"bad time":          strings.Replace(g, `"created_at":"2026-11-23T13:00:00.123456789Z"`, `"created_at":"yesterday"`, 1),
		"version string":    strings.Replace(g, `"version":3`, `"version":"3"`, 1),
		"version float":     strings.Replace(g, `"version":3`, `"version":3.5`, 1),
		"negative version":  strings.Replace(g, `"version":3`, `"version":-1`, 1),
		"bad region name":   strings.Replace(g, `"eu-west-1":{`, `"EU":{`, 1),
		"verified no wrap":  strings.Replace(g, `{"last_error"`, `{"verified_at":"2026-11-23T13:00:00Z","last_error"`, 1),
		"empty optional":    strings.Replace(g, `{"last_error"`, `{"key_arn":"","last_error"`, 1),
		"nested duplicate":  strings.Replace(g, `"app":"billing"`, `"app":"billing","app":"x"`, 1),
		"deep nesting":      strings.Repeat("[", 100) + strings.Repeat("]", 100),
	} {
		_, err := envelope.DecodeRecord([]byte(in))
		require.Error(t, err, name)
		var re *envelope.RecordError
		require.ErrorAs(t, err, &re, name)
		require.ErrorIs(t, err, envelope.ErrBadRecord, name)
	}
	_, err = envelope.DecodeRecord([]byte(strings.Replace(g, `"format":1`, `"format":2`, 1)))
	require.ErrorIs(t, err, envelope.ErrUnknownVersion)
}

func TestRecordMerge(t *testing.T) {
	t.Parallel()
	base := sampleRecord(t)
	eu := "eu-west-1"

	t.Run("union and max version", func(t *testing.T) {
		t.Parallel()
		a, b := base.Clone(), base.Clone()
		delete(a.Regions, eu)
		b.Version = 7
		require.NoError(t, a.Merge(b))
		require.EqualValues(t, 7, a.Version)
		require.True(t, a.Regions[eu].HasWrap(), "a wrap is never lost")
	})
	t.Run("same wrap keeps the latest verification", func(t *testing.T) {
		t.Parallel()
		a, b := base.Clone(), base.Clone()
		b.Regions[eu].VerifiedAt = t0.Add(time.Minute)
		require.NoError(t, a.Merge(b))
		require.Equal(t, t0.Add(time.Minute), a.Regions[eu].VerifiedAt)
		// And back: merging the older view does not regress it.
		require.NoError(t, a.Merge(base))
		require.Equal(t, t0.Add(time.Minute), a.Regions[eu].VerifiedAt)
	})
	t.Run("racing wraps: verified beats newer", func(t *testing.T) {
		t.Parallel()
		a, b := base.Clone(), base.Clone()
		a.Regions[eu].VerifiedAt = t0.Add(time.Minute)
		b.Regions[eu] = &envelope.RegionWrap{KeyARN: a.Regions[eu].KeyARN, Wrapped: []byte("second worker's wrap"), WrappedAt: t0.Add(time.Hour)}
		ab, ba := a.Clone(), b.Clone()
		require.NoError(t, ab.Merge(b))
		require.NoError(t, ba.Merge(a))
		require.Equal(t, ab, ba, "merge is commutative")
		require.Equal(t, []byte("wrapped under eu-west-1"), ab.Regions[eu].Wrapped)
		require.Equal(t, t0.Add(time.Minute), ab.Regions[eu].VerifiedAt, "verified_at never regresses")
	})
	t.Run("racing unverified wraps: earliest wins", func(t *testing.T) {
		t.Parallel()
		a, b := base.Clone(), base.Clone()
		b.Regions[eu] = &envelope.RegionWrap{KeyARN: a.Regions[eu].KeyARN, Wrapped: []byte("later"), WrappedAt: t0.Add(time.Hour)}
		ab, ba := a.Clone(), b.Clone()
		require.NoError(t, ab.Merge(b))
		require.NoError(t, ba.Merge(a))
		require.Equal(t, ab, ba)
		require.Equal(t, []byte("wrapped under eu-west-1"), ab.Regions[eu].Wrapped)
	})
	t.Run("last error: newest wins, cleared by a newer success", func(t *testing.T) {
		t.Parallel()
		a, b := base.Clone(), base.Clone()
		ap := "ap-southeast-2"
		b.Regions[ap] = &envelope.RegionWrap{KeyARN: "arn:aws:kms:ap-southeast-2:1:key/k", Wrapped: []byte("w"), WrappedAt: t0.Add(time.Hour),
			LastErrorAt: t0.Add(time.Hour)}
		require.NoError(t, a.Merge(b))
		require.Empty(t, a.Regions[ap].LastError)
		require.True(t, a.Regions[ap].HasWrap())
		require.NoError(t, a.Merge(base))
		require.Empty(t, a.Regions[ap].LastError, "an older error does not come back")
	})
	t.Run("conflicts refused", func(t *testing.T) {
		t.Parallel()
		for name, edit := range map[string]func(r *envelope.Record){
			"id":         func(r *envelope.Record) { r.ID = "other" },
			"commitment": func(r *envelope.Record) { r.Commitment = make([]byte, 32) },
			"context":    func(r *envelope.Record) { r.Context = mustContext(t, "rec-1", nil) },
			"source":     func(r *envelope.Record) { r.SourceRegion = "eu-west-1" },
		} {
			a, b := base.Clone(), base.Clone()
			edit(b)
			before := a.Clone()
			err := a.Merge(b)
			require.ErrorIs(t, err, envelope.ErrRecordConflict, name)
			require.Equal(t, before, a, "%s: receiver unchanged", name)
		}
	})
	t.Run("inputs not aliased", func(t *testing.T) {
		t.Parallel()
		a, b := base.Clone(), base.Clone()
		delete(a.Regions, eu)
		require.NoError(t, a.Merge(b))
		b.Regions[eu].Wrapped[0] = 'X'
		require.Equal(t, byte('w'), a.Regions[eu].Wrapped[0])
	})
}

func TestEventCodec(t *testing.T) {
	t.Parallel()
	e := sampleEvent(t)
	b, err := envelope.EncodeEvent(e)
	require.NoError(t, err)
	require.Equal(t, `{"version":1,"id":"rec-1","source_region":"us-east-1","key_arn":"`+testARN+`",`+
		`"wrapped_dek":"d3JhcHBlZCB1bmRlciB1cy1lYXN0LTE=","context":{"app":"billing","envdr:id":"rec-1"},`+
		`"commitment":"sf3z0w/cNxS/QWQrqozTjC5MOhqHuay21M/lUPL48Uw=","created_at":"2026-11-23T13:00:00.123456789Z",`+
		`"data_uri":"s3://bucket/key"}`, string(b))
	back, err := envelope.DecodeEvent(b)
	require.NoError(t, err)
	require.Equal(t, e, back)
	again, err := envelope.EncodeEvent(back)
	require.NoError(t, err)
	require.Equal(t, b, again)

	// Whitespace, field order and time offsets are accepted and normalised.
	loose := `{ "created_at": "2026-11-23T14:00:00.123456789+01:00", "commitment": "sf3z0w/cNxS/QWQrqozTjC5MOhqHuay21M/lUPL48Uw=",
	  "context": {"envdr:id": "rec-1", "app": "billing"}, "wrapped_dek": "d3JhcHBlZCB1bmRlciB1cy1lYXN0LTE=",
	  "key_arn": "` + testARN + `", "source_region": "us-east-1", "id": "rec-1", "version": 1, "data_uri": "s3://bucket/key" }`
	l, err := envelope.DecodeEvent([]byte(loose))
	require.NoError(t, err)
	lb, err := envelope.EncodeEvent(l)
	require.NoError(t, err)
	require.Equal(t, string(b), string(lb))
}

func TestEventDecodeReasons(t *testing.T) {
	t.Parallel()
	good, err := envelope.EncodeEvent(sampleEvent(t))
	require.NoError(t, err)
	g := string(good)
	rep := func(old, new string) string {
		require.Contains(t, g, old)
		return strings.Replace(g, old, new, 1)
	}
	for name, c := range map[string]struct{ in, reason, field string }{
		"empty":            {``, envelope.ReasonBadJSON, ""},
		"garbage":          {`not json`, envelope.ReasonBadJSON, ""},
		"truncated":        {g[:len(g)-1], envelope.ReasonBadJSON, ""},
		"array":            {`[1]`, envelope.ReasonBadJSON, ""},
		"null":             {`null`, envelope.ReasonBadJSON, ""},
		"invalid utf8":     {rep("billing", "bill\xffing"), envelope.ReasonBadJSON, ""},
		"two values":       {g + g, envelope.ReasonBadJSON, ""},
		"oversize":         {g + strings.Repeat(" ", envelope.MaxEventSize), envelope.ReasonOversize, ""},
		"no version":       {rep(`"version":1,`, ``), envelope.ReasonMissingField, "version"},
		"version 2":        {rep(`"version":1`, `"version":2`), envelope.ReasonUnknownVersion, "version"},
		"version 2 extra":  {rep(`"version":1,`, `"version":2,"new_field":true,`), envelope.ReasonUnknownVersion, "version"},
		"version string":   {rep(`"version":1`, `"version":"1"`), envelope.ReasonBadField, "version"},
		"unknown field":    {rep(`"version":1,`, `"version":1,"extra":1,`), envelope.ReasonUnknownField, "extra"},
		"case-folded":      {rep(`"id":`, `"Id":`), envelope.ReasonUnknownField, "Id"},
		"duplicate":        {rep(`"version":1,`, `"version":1,"id":"rec-1",`), envelope.ReasonDuplicateField, "id"},
		"missing id":       {rep(`"id":"rec-1",`, ``), envelope.ReasonMissingField, "id"},
		"missing wrap":     {rep(`"wrapped_dek":"d3JhcHBlZCB1bmRlciB1cy1lYXN0LTE=",`, ``), envelope.ReasonMissingField, "wrapped_dek"},
		"missing context":  {rep(`"context":{"app":"billing","envdr:id":"rec-1"},`, ``), envelope.ReasonMissingField, "context"},
		"missing created":  {rep(`,"created_at":"2026-11-23T13:00:00.123456789Z"`, ``), envelope.ReasonMissingField, "created_at"},
		"bad base64":       {rep(`d3JhcHBl`, `d3JhcHB!`), envelope.ReasonBadBase64, "wrapped_dek"},
		"url base64":       {rep(`sf3z0w/`, `sf3z0w_`), envelope.ReasonBadBase64, "commitment"},
		"unpadded":         {rep(`LTE=`, `LTE`), envelope.ReasonBadBase64, "wrapped_dek"},
		"short commitment": {rep(`sf3z0w/cNxS/QWQrqozTjC5MOhqHuay21M/lUPL48Uw=`, `AAAA`), envelope.ReasonBadField, "commitment"},
		"no envdr:id":      {rep(`,"envdr:id":"rec-1"`, ``), envelope.ReasonBadContext, "context"},
		"id mismatch":      {rep(`"envdr:id":"rec-1"`, `"envdr:id":"rec-2"`), envelope.ReasonBadContext, "context"},
		"reserved key":     {rep(`"app":"billing"`, `"envdr:x":"billing"`), envelope.ReasonBadContext, "context"},
		"context dup":      {rep(`"app":"billing"`, `"app":"billing","app":"x"`), envelope.ReasonDuplicateField, "app"},
		"context number":   {rep(`"app":"billing"`, `"app":1`), envelope.ReasonBadContext, "context"},
		"context array":    {rep(`{"app":"billing","envdr:id":"rec-1"}`, `[]`), envelope.ReasonBadContext, "context"},
		"bad id":           {rep(`"id":"rec-1"`, `"id":"rec 1"`), envelope.ReasonBadField, "id"},
		"bad region":       {rep(`"source_region":"us-east-1"`, `"source_region":"Mars"`), envelope.ReasonBadField, "source_region"},
		"empty key arn":    {rep(`"key_arn":"`+testARN+`"`, `"key_arn":""`), envelope.ReasonBadField, "key_arn"},
		"bad time":         {rep(`2026-11-23T13:00:00.123456789Z`, `23/11/2026`), envelope.ReasonBadField, "created_at"},
		"empty data_uri":   {rep(`"s3://bucket/key"`, `""`), envelope.ReasonBadField, "data_uri"},
		"id number":        {rep(`"id":"rec-1"`, `"id":1`), envelope.ReasonBadField, "id"},
	} {
		_, err := envelope.DecodeEvent([]byte(c.in))
		var ee *envelope.EventError
		require.ErrorAs(t, err, &ee, name)
		require.Equal(t, c.reason, ee.Reason(), "%s: %v", name, err)
		require.Equal(t, c.field, ee.Field, name)
		require.ErrorIs(t, err, envelope.ErrBadEvent, name)
	}
}

// TestEventFromSeal: the event announcing a sealed envelope carries exactly the header's wrap,
// and the record built from it opens the envelope.
func TestEventFromSeal(t *testing.T) {
	t.Parallel()
	kms := envelopetest.NewFakeKMS(testRegion, testARN, "event", nil)
	var sealed bytes.Buffer
	hdr, err := envelope.Seal(context.Background(), &sealed, bytes.NewReader(payload(300)), kms,
		envelope.SealOptions{ID: "ev-1", Context: map[string]string{"app": "x"}})
	require.NoError(t, err)
	ev, err := envelope.NewEvent(hdr, t0, "")
	require.NoError(t, err)
	b, err := envelope.EncodeEvent(ev)
	require.NoError(t, err)
	require.NotContains(t, string(b), "data_uri")
	got, err := envelope.DecodeEvent(b)
	require.NoError(t, err)
	rec := got.Record()
	require.NoError(t, rec.Validate())
	dek, err := kms.Unwrap(context.Background(), rec.Wrap(testRegion).Wrapped, testARN, rec.Context)
	require.NoError(t, err)
	require.NoError(t, envelope.CheckCommitment(dek, rec.Commitment), "the replicator's check")
	var out bytes.Buffer
	_, err = envelope.Open(context.Background(), &out, bytes.NewReader(sealed.Bytes()), kms, envelope.OpenOptions{Wrap: rec.Wrap(testRegion)})
	require.NoError(t, err)
	requireBytes(t, payload(300), out.Bytes())

	_, err = envelope.NewEvent(&envelope.Header{}, t0, "")
	require.True(t, errors.Is(err, envelope.ErrBadEvent))
}
