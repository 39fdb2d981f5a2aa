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
	sent, err := EnqueueQueues(ctx, topo, hdr, dataURI, warn)
	return len(sent), err
}

// Queued is one queue that took an event.
type Queued struct {
	Region   string `json:"region"`
	QueueURL string `json:"queue_url"`
}

// EnqueueQueues is Enqueue returning which queues took the event (seal's JSON result lists them).
func EnqueueQueues(ctx context.Context, topo *regions.Topology, hdr *envelope.Header, dataURI string, warn func(string)) ([]Queued, error) {
	cfg := topo.Config()
	ev, err := envelope.NewEvent(hdr, time.Now(), dataURI)
	if err != nil {
		return nil, err
	}
	body, err := envelope.EncodeEvent(ev)
	if err != nil {
		return nil, err
	}
	order := cfg.SealOrder()
	start := slices.Index(order, hdr.HomeRegion)
	if start < 0 {
		order, start = append([]string{hdr.HomeRegion}, order...), 0
	}
	want := cfg.Copies(hdr.HomeRegion)
	var queued []Queued
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
		if len(queued) > 0 {
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
		if queued = append(queued, Queued{Region: name, QueueURL: q}); len(queued) == want {
			break
		}
	}
	switch {
	case len(queued) == 0 && len(errs) == 0:
		return nil, ErrNoQueue
	case len(queued) == 0:
		return nil, errors.Join(errs...)
	case len(queued) < want && warn != nil:
		warn(fmt.Sprintf("record %s: the event reached %d of %d queues", hdr.RecordID(), len(queued), want))
	}
	return queued, nil
}
