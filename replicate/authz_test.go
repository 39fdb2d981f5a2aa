package replicate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/policy"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
	"github.com/envdr/envdr/replicate/replicatetest"
)

// outageAsDaemon runs envdr run as the daemon role, under the daemon policy `envdr policy
// render` generates minus the actions in drop, through a region outage compressed as the issue
// asks (maxReceiveCount 3, a 1 s visibility, eu-west-1 lost for 8 s: every event is received
// more than 3 times meanwhile). It returns the valid events that reached the DLQ.
func outageAsDaemon(t *testing.T, drop ...string) (dlqEvents int, requeued float64) {
	t.Helper()
	b := setup(t, nil)
	ctx := context.Background()
	admin := b.sqs(t)

	// The queue redrives after 3 receives.
	attrs, err := admin.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(b.cfg.DLQURL),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	require.NoError(t, err)
	redrive, _ := json.Marshal(map[string]string{"deadLetterTargetArn": attrs.Attributes["QueueArn"], "maxReceiveCount": "3"})
	_, err = admin.SetQueueAttributes(ctx, &sqs.SetQueueAttributesInput{QueueUrl: aws.String(b.cfg.QueueURL),
		Attributes: map[string]string{"RedrivePolicy": string(redrive)}})
	require.NoError(t, err)

	// The daemon role's policy: render's, without the dropped actions.
	docs, err := policy.Render(b.cfg, policy.Options{})
	require.NoError(t, err)
	var daemon *policy.Document
	for _, d := range docs {
		if d.Name == policy.DaemonPolicy {
			daemon = d.Doc
		}
	}
	var kept []policy.Statement
	for _, s := range daemon.Statement {
		var keep policy.Strings
		for _, a := range s.Action {
			if !contains(drop, a) {
				keep = append(keep, a)
			}
		}
		// A statement left with no action goes: IAM refuses one without Action.
		if len(keep) > 0 {
			s.Action = keep
			kept = append(kept, s)
		}
	}
	daemon.Statement = kept
	require.NoError(t, b.env.IAM.SetPolicy(iam.RoleDaemon, daemon))

	// envdr run with the daemon's credentials.
	dcfg := *b.asDaemon(t)
	dcfg.Worker.Visibility = time.Second
	require.NoError(t, dcfg.Validate())

	const n = 4
	ids, _ := b.sealAndSend(t, n, 1)
	b.env.Down("eu-west-1")
	d := replicatetest.StartDaemon(t, ctx, &dcfg, b.log, replicate.DaemonOptions{
		WaitTime: time.Second, RetryBase: 200 * time.Millisecond,
		Regions: regions.Options{MaxCooldown: time.Second, BaseBackoff: 5 * time.Millisecond},
	})
	time.Sleep(8 * time.Second)
	b.env.Up("eu-west-1")

	// Either every event is replicated (and the queue drains), or the DLQ holds what is missing.
	dlq := 0
	require.Eventually(t, func() bool {
		depth, err := replicate.QueueDepth(ctx, admin, b.cfg.QueueURL)
		require.NoError(t, err)
		dlqDepth, err := replicate.QueueDepth(ctx, admin, b.cfg.DLQURL)
		require.NoError(t, err)
		dlq = dlqDepth
		return depth == 0
	}, 60*time.Second, 250*time.Millisecond)
	if dlq == 0 {
		b.verifiedEverywhere(t, ids)
	}
	return dlq, testutil.ToFloat64(d.Metrics.Requeued)
}

// asDaemon is the bundle's config signed as envdr-daemon: envdr run as deployed.
func (b *bundle) asDaemon(t *testing.T) *config.Config {
	t.Helper()
	id, ok := b.env.IAM.Identity(iam.RoleDaemon)
	require.True(t, ok)
	dcfg := *b.cfg
	local := *b.cfg.Local
	local.AccessKey, local.SecretKey = id.AccessKey, id.SecretKey
	dcfg.Local = &local
	return &dcfg
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// The bug issue 11 found: the daemon policy both generators shipped had no
// sqs:GetQueueAttributes on the queue, so readQueueAttributes failed, the re-send before
// redrive never ran, and an outage pushed valid events into the DLQ. Reproduced here with the
// stand-in evaluating the policy as AWS does.
func TestOutageWithoutGetQueueAttributesDeadLettersValidEvents(t *testing.T) {
	t.Parallel()
	dlq, requeued := outageAsDaemon(t, "sqs:GetQueueAttributes")
	require.Equal(t, 4, dlq, "without sqs:GetQueueAttributes every event outlives maxReceiveCount and is redriven")
	require.Zero(t, requeued, "the re-send before redrive cannot run")
}

// With the fixed policy the daemon re-sends each still-valid event before SQS would redrive it:
// after the outage no valid event is in the DLQ and every record is verified everywhere.
func TestOutageWithRenderedPolicyDeadLettersNothing(t *testing.T) {
	t.Parallel()
	dlq, requeued := outageAsDaemon(t)
	require.Zero(t, dlq, fmt.Sprintf("%d valid events in the DLQ", dlq))
	require.Positive(t, requeued, "events were re-sent before redrive")
}
