package envelope_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/envelope/envelopetest"
)

// Seal a stream with a DEK from the home region's key, then open it. In envdr the generator
// and unwrapper are package regions' KMS keys; here a fake stands in.
func Example() {
	ctx := context.Background()
	home := envelopetest.NewFakeKMS("us-east-1", "arn:aws:kms:us-east-1:111122223333:key/mrk-1", "example", nil)

	var sealed bytes.Buffer
	hdr, err := envelope.Seal(ctx, &sealed, strings.NewReader("quarterly numbers"), home, envelope.SealOptions{
		ID:      "report-2026-q3",
		Context: map[string]string{"app": "billing"},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("sealed", hdr.ID, "in", hdr.HomeRegion, "with context", hdr.Context)

	var plain bytes.Buffer
	if _, err := envelope.Open(ctx, &plain, &sealed, home, envelope.OpenOptions{
		Context: map[string]string{"app": "billing"}, // must match, or the error names the keys
	}); err != nil {
		panic(err)
	}
	fmt.Println(plain.String())
	// Output:
	// sealed report-2026-q3 in us-east-1 with context app=billing,envdr:id=report-2026-q3
	// quarterly numbers
}

// Open through another region only: take that region's wrap from the record and unwrap it
// there. The key commitment proves the region's wrap holds the same DEK.
func ExampleOpen_otherRegion() {
	ctx := context.Background()
	home := envelopetest.NewFakeKMS("us-east-1", "arn:aws:kms:us-east-1:111122223333:key/k1", "home", nil)
	dr := envelopetest.NewFakeKMS("eu-west-1", "arn:aws:kms:eu-west-1:111122223333:key/k2", "dr", nil)

	var sealed bytes.Buffer
	hdr, _ := envelope.Seal(ctx, &sealed, strings.NewReader("survives a region"), home, envelope.SealOptions{})

	// What the replicator does (independent-key mode): unwrap at home, wrap in eu-west-1 with
	// the same context, check the commitment, record the wrap.
	ev, _ := envelope.NewEvent(hdr, time.Now(), "")
	rec := ev.Record()
	dek, _ := home.Unwrap(ctx, ev.WrappedDEK, ev.KeyARN, ev.Context)
	wrapped, _ := dr.Wrap(ctx, dek, rec.Context)
	envelope.Wipe(dek)
	rec.Regions["eu-west-1"] = &envelope.RegionWrap{KeyARN: dr.KeyARN, Wrapped: wrapped, WrappedAt: time.Now()}

	// us-east-1 is gone: open with eu-west-1's wrap and key only.
	var plain bytes.Buffer
	_, err := envelope.Open(ctx, &plain, &sealed, dr, envelope.OpenOptions{Wrap: rec.Wrap("eu-west-1")})
	fmt.Println(plain.String(), err)
	// Output: survives a region <nil>
}

// A wrong context fails before any KMS call, naming the keys that differ.
func ExampleContextMismatchError() {
	ctx := context.Background()
	kms := envelopetest.NewFakeKMS("us-east-1", "arn:aws:kms:us-east-1:111122223333:key/k1", "mismatch", nil)
	var sealed bytes.Buffer
	_, _ = envelope.Seal(ctx, &sealed, strings.NewReader("x"), kms, envelope.SealOptions{
		Context: map[string]string{"app": "billing", "tenant": "t-42"},
	})
	_, err := envelope.Open(ctx, &bytes.Buffer{}, &sealed, kms, envelope.OpenOptions{
		Context: map[string]string{"app": "billing", "tenant": "t-43"},
	})
	var cm *envelope.ContextMismatchError
	fmt.Println(errors.As(err, &cm), cm.Different)
	fmt.Println(err)
	// Output:
	// true [tenant]
	// envelope: encryption context mismatch: different values for keys "tenant"
}

// Decode an SQS event strictly; a rejected event carries a short reason for the DLQ.
func ExampleDecodeEvent() {
	_, err := envelope.DecodeEvent([]byte(`{"version":2,"id":"x"}`))
	var ee *envelope.EventError
	if errors.As(err, &ee) {
		fmt.Println("to DLQ with reason", ee.Reason())
	}
	// Output: to DLQ with reason unknown_version
}

// Merge two workers' views of a record: no wrap is lost, verified_at never goes back.
func ExampleRecord_Merge() {
	com := make([]byte, envelope.CommitmentSize)
	ec, _ := envelope.NewContext("rec-1", nil)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	base := &envelope.Record{ID: "rec-1", Context: ec, Commitment: com, SourceRegion: "us-east-1",
		SourceKeyARN: "arn:aws:kms:us-east-1:1:key/k", CreatedAt: t0, Regions: map[string]*envelope.RegionWrap{}}
	a, b := base.Clone(), base.Clone()
	a.Version = 2
	a.Regions["eu-west-1"] = &envelope.RegionWrap{KeyARN: "arn:aws:kms:eu-west-1:1:key/k", Wrapped: []byte("A"), WrappedAt: t0, VerifiedAt: t0.Add(time.Second)}
	b.Version = 2
	b.Regions["ap-southeast-2"] = &envelope.RegionWrap{KeyARN: "arn:aws:kms:ap-southeast-2:1:key/k", Wrapped: []byte("B"), WrappedAt: t0}
	_ = a.Merge(b)
	fmt.Println(len(a.Regions), a.Regions["eu-west-1"].Verified(), a.Regions["ap-southeast-2"].Verified())
	// Output: 2 true false
}

// Cache DEKs when sealing many small objects: one KMS call for many envelopes.
func ExampleCachingKeyGenerator() {
	ctx := context.Background()
	kms := envelopetest.NewFakeKMS("us-east-1", "arn:aws:kms:us-east-1:111122223333:key/k1", "cache", nil)
	cache, _ := envelope.NewCachingKeyGenerator(kms, envelope.CacheOptions{MaxAge: 5 * time.Minute, MaxMessages: 1000})
	defer cache.Purge()
	for i := 0; i < 100; i++ {
		_, _ = envelope.Seal(ctx, &bytes.Buffer{}, strings.NewReader("small object"), cache, envelope.SealOptions{
			Context: map[string]string{"app": "thumbnails"},
		})
	}
	fmt.Println("KMS calls:", kms.Generated.Load())
	// Output: KMS calls: 1
}
