package faults

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/replicate"
)

// The record protocol's two HIGH review findings of issue 20, end to end through the CLI and
// the daemons on the stand-in. Each failed on the code before the fixes; each names the
// invariant of docs/FORMAT.md §6.1 it guards.

// waitHandled waits until d has logged at least n event outcomes.
func (d *daemon) waitHandled(n int, within time.Duration) {
	d.s.t.Helper()
	deadline := time.Now().Add(within)
	for d.handled() < n {
		require.Truef(d.s.t, time.Now().Before(deadline), "%s: %d event outcomes after %s, want %d", d.name, d.handled(), within, n)
		time.Sleep(50 * time.Millisecond)
	}
}

func randomID(t *testing.T) string {
	b := make([]byte, 16)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// forgeEvent is what a producer can do with its own permissions (GenerateDataKey under the
// record's context, SendMessage): an event with the genuine event's id, context, commitment
// and key, but the wrap of another data key.
func (s *suite) forgeEvent(c *cliSealed) string {
	s.t.Helper()
	src := c.hdr.HomeRegion
	kc := kms.NewFromConfig(s.env.AWSConfigAs(src, "envdr-producer"))
	out, err := kc.GenerateDataKey(context.Background(), &kms.GenerateDataKeyInput{
		KeyId: aws.String(c.hdr.KeyARN), KeySpec: kmstypes.DataKeySpecAes256, EncryptionContext: c.hdr.Context.Map()})
	require.NoError(s.t, err, "the producer role generates a data key under the record's context")
	s.secrets.add(out.Plaintext)
	require.False(s.t, bytes.Equal(out.Plaintext, c.dek))
	ev, err := envelope.NewEvent(c.hdr, time.Now(), "")
	require.NoError(s.t, err)
	ev.WrappedDEK = out.CiphertextBlob
	raw, err := envelope.EncodeEvent(ev)
	require.NoError(s.t, err)
	return string(raw)
}

// sendAs sends body to region's events queue as role.
func (s *suite) sendAs(role, region, body string) {
	s.t.Helper()
	q, _ := s.env.Queues(region)
	c := sqs.NewFromConfig(s.env.AWSConfigAs(region, role))
	_, err := c.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(q), MessageBody: aws.String(body)})
	require.NoError(s.t, err, "the %s role sends to %s's queue", role, region)
}

// opensIn asserts that `envdr open --region R` opens c to its plaintext.
func (s *suite) opensIn(c *cliSealed, region string) {
	s.t.Helper()
	path := filepath.Join(s.dir, c.id+".envdr")
	out := filepath.Join(s.dir, fmt.Sprintf("%s.%s.out", c.id, region))
	res := s.cli(nil, "open", "--region", region, path, out)
	require.Equalf(s.t, 0, res.code, "open --region %s %s: %s", region, c.id, res.stderr)
	got, err := os.ReadFile(out)
	require.NoError(s.t, err)
	require.True(s.t, bytes.Equal(got, c.plain), "open --region %s: wrong plaintext", region)
	require.NoError(s.t, os.Remove(out))
}

// TestForgedEventIsDeadLettered is finding 1 (invariants I5 and I3): with ap-southeast-2 lost,
// an envelope is sealed and its event processed; then a producer sends a forged event (same id,
// context, commitment and key, another data key), then the genuine event again. The forged
// event must be dead-lettered with reason commitment_mismatch and change nothing, and
// ap-southeast-2 must end up with the genuine wrap: `open --region ap-southeast-2` opens the
// file. Before the fix, the forged wrap filled ap-southeast-2 (unchecked: the record existed),
// fill-only kept it, and ap-southeast-2 could never open the envelope.
func TestForgedEventIsDeadLettered(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, verify, mrkWrap string }{
		{"verify-all", config.VerifyAll, ""},
		{"verify-none", config.VerifyNone, ""},
		{"shared-wrap", config.VerifyAll, config.MRKWrapShared},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newSuiteWith(t, nil, func(cfg *config.Config) {
				cfg.Policy.Required = []string{"us-east-1", "eu-west-1"}
				cfg.Policy.Verify = c.verify
				cfg.MRKWrap = c.mrkWrap
			})
			const lost = "ap-southeast-2"
			s.env.Down(lost)
			d := s.startDaemon("daemon us-east-1", "--region", "us-east-1")
			d.waitUp()
			genuine := s.sealCLI(randomID(t), map[string]string{"app": "forge"})
			s.waitAcked([]string{genuine.id}, time.Minute)

			s.env.Up(lost)
			s.env.Settle()
			seen := d.handled()
			s.sendAs("envdr-producer", "us-east-1", s.forgeEvent(genuine))
			d.waitHandled(seen+1, time.Minute)
			seen = d.handled()
			s.sendAs("envdr-producer", "us-east-1", genuine.body())
			d.waitHandled(seen+1, time.Minute)
			require.Equal(t, 0, d.term(30*time.Second))
			s.env.Settle()

			dlq := s.drainDLQ()
			require.Lenf(t, dlq, 1, "the forged event, and only it, is dead-lettered: %+v", dlq)
			require.Equal(t, replicate.ReasonCommitmentMismatch, dlq[0].reason, "DLQ reason (error: %s)", dlq[0].err)
			for _, r := range s.cfg.RegionNames() {
				s.opensIn(genuine, r)
			}
			res := s.cli(nil, "verify", "--id", genuine.id, "--no-write")
			require.Equalf(t, 0, res.code, "verify: %s %s", res.stdout, res.stderr)
		})
	}
}

// TestErrorWriteKeepsAckedWrap is finding 2 (invariants I1 and I3): two daemons (us-east-1's,
// and eu-west-1's reading a replica far behind), policy.required = us-east-1 and
// ap-southeast-2. us-east-1's daemon verifies ap-southeast-2 and acknowledges every envelope;
// then ap-southeast-2 is lost, and eu-west-1's daemon handles the event copies through its
// stale replica, where the records do not exist yet, so it cannot wrap for ap-southeast-2.
// Before the fix it wrote ap-southeast-2's item with only last_error; its condition held in its
// own replica, and last writer wins then replaced ap-southeast-2's verified wrap everywhere:
// acknowledged envelopes that ap-southeast-2 could no longer open. Every acknowledged envelope
// must keep ap-southeast-2's wrap in every replica.
func TestErrorWriteKeepsAckedWrap(t *testing.T) {
	t.Parallel()
	s := newSuiteWith(t, nil, func(cfg *config.Config) {
		cfg.Policy.Required = []string{"us-east-1", "ap-southeast-2"}
	})
	const far, lost = "eu-west-1", "ap-southeast-2"
	gt := s.env.Stack.GlobalTables()
	for _, from := range []string{"us-east-1", lost} {
		require.NoError(t, gt.SetLag(from, far, 20*time.Second))
	}
	east := s.startDaemon("daemon us-east-1", "--region", "us-east-1")
	east.waitUp()
	files := make([]*cliSealed, 5)
	ids := make([]string, len(files))
	for i := range files {
		files[i] = s.sealCLI(randomID(t), map[string]string{"app": "lww"})
		ids[i] = files[i].id
	}
	s.waitAcked(ids, time.Minute)
	require.Equal(t, 0, east.term(30*time.Second))

	s.env.Down(lost)
	west := s.startDaemon("daemon "+far, "--region", far)
	west.waitUp()
	west.waitHandled(len(files), time.Minute) // every copy tried once, through the stale replica
	require.Equal(t, 0, west.term(30*time.Second))
	s.env.Up(lost)
	for _, from := range []string{"us-east-1", lost} {
		require.NoError(t, gt.SetLag(from, far, 0))
	}
	s.env.Settle()
	// Changes written before SetLag(0) keep their 20 s lag: wait them out.
	time.Sleep(20 * time.Second)
	s.env.Settle()

	for _, r := range s.cfg.RegionNames() {
		store := s.store(r)
		for _, f := range files {
			rec, err := store.Get(context.Background(), f.id)
			require.NoError(t, err)
			require.Truef(t, rec.Regions[lost].HasWrap(), "replica %s: acknowledged record %s lost %s's wrap: %+v", r, f.id, lost, rec.Regions[lost])
		}
	}
	for _, f := range files {
		s.opensIn(f, lost)
	}
	res := s.cli(nil, "status", "--region", lost, "--json")
	require.Equal(t, 0, res.code, string(res.stderr))
	var st struct {
		Regions []struct {
			Region  string `json:"region"`
			Wrapped int    `json:"wrapped"`
		} `json:"regions"`
	}
	require.NoError(t, json.Unmarshal(res.stdout, &st), string(res.stdout))
	for _, r := range st.Regions {
		if r.Region == lost {
			require.Equalf(t, len(files), r.Wrapped, "status --region %s: wrapped", lost)
		}
	}
}
