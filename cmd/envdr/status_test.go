package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/replicate"
)

// status names, in its replica's view, the oldest record not meeting the replication policy,
// and per region the oldest one the policy still waits for that region on (issue 23).
func TestStatusOldestUnprotected(t *testing.T) {
	env := localtest.New(t)
	cfgPath := writeConfig(t, env.Config)
	home := env.Config.HomeRegion
	require.Equal(t, []string{"us-east-1", "eu-west-1", "ap-southeast-2"}, env.Regions)
	st := replicate.NewStore(env.Config.Table, home, localaws.NewDynamoDB(env.AWSConfig(home)), env.Config.RegionNames())
	now := time.Now().UTC().Truncate(time.Millisecond)
	record := func(age time.Duration, skip func(region string, w *envelope.RegionWrap) *envelope.RegionWrap) *envelope.Record {
		id, err := envelope.NewID()
		require.NoError(t, err)
		ec, err := envelope.NewContext(id, map[string]string{"app": "status-test"})
		require.NoError(t, err)
		r := &envelope.Record{ID: id, Context: ec, Commitment: random(t, 32), SourceRegion: home, CreatedAt: now.Add(-age),
			Regions: map[string]*envelope.RegionWrap{}}
		for _, reg := range env.Regions {
			w := &envelope.RegionWrap{KeyARN: "arn:aws:kms:" + reg + ":111122223333:key/mrk-test", Wrapped: random(t, 40),
				WrappedAt: r.CreatedAt, VerifiedAt: r.CreatedAt.Add(time.Second)}
			if w = skip(reg, w); w != nil {
				r.Regions[reg] = w
			}
		}
		return r
	}
	keep := func(_ string, w *envelope.RegionWrap) *envelope.RegionWrap { return w }
	protected := record(time.Hour, keep)
	// 10 minutes old, no wrap in ap-southeast-2 yet.
	noAP := record(10*time.Minute, func(reg string, w *envelope.RegionWrap) *envelope.RegionWrap {
		if reg == "ap-southeast-2" {
			return nil
		}
		return w
	})
	// 2 minutes old, eu-west-1's wrap not verified yet.
	unverifiedEU := record(2*time.Minute, func(reg string, w *envelope.RegionWrap) *envelope.RegionWrap {
		if reg == "eu-west-1" {
			w.VerifiedAt = time.Time{}
		}
		return w
	})
	require.NoError(t, st.Load(context.Background(), []*envelope.Record{protected, noAP, unverifiedEU}))

	stdout, stderr, code := runSplit(t, "--config", cfgPath, "status", "--region", home, "--quiet", "--output", "json")
	require.Equal(t, exitOK, code, stderr)
	var rep statusReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
	require.Equal(t, 3, rep.Records)
	require.Equal(t, 1, rep.Replicated)
	require.NotNil(t, rep.OldestUnprotected, stdout)
	require.Equal(t, noAP.ID, rep.OldestUnprotected.ID)
	require.Equal(t, home, rep.OldestUnprotected.SourceRegion)
	require.True(t, noAP.CreatedAt.Equal(rep.OldestUnprotected.CreatedAt), "%s != %s", noAP.CreatedAt, rep.OldestUnprotected.CreatedAt)
	require.InDelta(t, 600, rep.OldestUnprotected.AgeSeconds, 60)
	byRegion := map[string]*unprotected{}
	for _, rs := range rep.Regions {
		byRegion[rs.Region] = rs.OldestUnprotected
	}
	require.Nil(t, byRegion["us-east-1"], "every record is protected in us-east-1")
	require.NotNil(t, byRegion["eu-west-1"])
	require.Equal(t, unverifiedEU.ID, byRegion["eu-west-1"].ID)
	require.InDelta(t, 120, byRegion["eu-west-1"].AgeSeconds, 60)
	require.NotNil(t, byRegion["ap-southeast-2"])
	require.Equal(t, noAP.ID, byRegion["ap-southeast-2"].ID)
	// The JSON names the members docs/OUTPUT.md documents, null when none.
	require.Contains(t, stdout, `"oldest_unprotected": null`)

	stdout, stderr, code = runSplit(t, "--config", cfgPath, "status", "--region", home, "--quiet")
	require.Equal(t, exitOK, code, stderr)
	t.Logf("status:\n%s", stdout)
	require.Contains(t, stdout, "oldest not protected: "+noAP.ID+", sealed in us-east-1 at "+noAP.CreatedAt.Format(time.RFC3339))
	require.Contains(t, stdout, "OLDEST UNPROTECTED (AGE)")
	require.Regexp(t, `(?m)^eu-west-1 .* 2m\d*s?$`, stdout)
	require.Regexp(t, `(?m)^us-east-1 .* -$`, stdout)
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}
