package replicate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/regions"
)

// ErrNoQueue: no region has a queue to take an event.
var ErrNoQueue = errors.New("no events queue configured (regions[].queue_url, or queue_url for the home region)")

// Enqueue sends the replication event of a sealed header to the sealing region's queue and, for
// survival, copies to the next regions in seal order (config Copies: 2 in mrk mode), each
// through that region's own SQS endpoint; copies are delayed by enqueue_copy_delay. A region
// that cannot take the event is skipped (warn is told) and the next one is tried. It returns how
// many queues took the event, and fails only when none did.
func Enqueue(ctx context.Context, topo *regions.Topology, hdr *envelope.Header, dataURI string, warn func(string)) (int, error) {
	cfg := topo.Config()
	ev, err := envelope.NewEvent(hdr, time.Now(), dataURI)
	if err != nil {
		return 0, err
	}
	body, err := envelope.EncodeEvent(ev)
	if err != nil {
		return 0, err
	}
	order := cfg.SealOrder()
	start := slices.Index(order, hdr.HomeRegion)
	if start < 0 {
		order, start = append([]string{hdr.HomeRegion}, order...), 0
	}
	want := cfg.Copies(hdr.HomeRegion)
	sent := 0
	var errs []error
	for i := range order {
		name := order[(start+i)%len(order)]
		q, _ := cfg.Queues(name)
		if q == "" {
			continue
		}
		r, err := topo.Region(name)
		if err != nil {
			continue // excluded from this topology (a drill's lost region)
		}
		in := &sqs.SendMessageInput{QueueUrl: aws.String(q), MessageBody: aws.String(string(body))}
		if sent > 0 {
			in.DelaySeconds = int32(cfg.EnqueueCopyDelay / time.Second)
		}
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = r.SQS().SendMessage(c, in)
		cancel()
		if err != nil {
			err = fmt.Errorf("region %s: SendMessage to %s: %w", name, q, err)
			if warn != nil {
				warn(err.Error() + "; trying the next region's queue")
			}
			errs = append(errs, err)
			continue
		}
		if sent++; sent == want {
			break
		}
	}
	switch {
	case sent == 0 && len(errs) == 0:
		return 0, ErrNoQueue
	case sent == 0:
		return 0, errors.Join(errs...)
	case sent < want && warn != nil:
		warn(fmt.Sprintf("record %s: the event reached %d of %d queues", hdr.RecordID(), sent, want))
	}
	return sent, nil
}
