package regions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/smithy-go"

	"github.com/envdr/envdr/envelope"
)

// Failover is a key generator that asks regions for a data key in order, falling over to the
// next when one is unreachable, does not answer within Timeout (a blackholed endpoint), or
// answers with a server error. Any other failure (access denied, a disabled key, a bad context)
// is a finding about the setup, not an outage, and stops it at once: sealing elsewhere would
// hide it. The DataKey it returns names the region that made it, which the header records.
type Failover struct {
	Topology *Topology
	// Order lists the regions to try (config SealOrder, or one region for seal --region).
	Order []string
	// Timeout bounds each region's try.
	Timeout time.Duration
	// OnFailover, optional, is told about each region left behind and why.
	OnFailover func(region string, err error)
}

var _ envelope.KeyGenerator = (*Failover)(nil)

// ErrNoSealingRegion: every region in the order failed.
var ErrNoSealingRegion = errors.New("no region could make a data key")

// GenerateDataKey implements envelope.KeyGenerator.
func (f *Failover) GenerateDataKey(ctx context.Context, ec envelope.Context) (*envelope.DataKey, error) {
	var errs []error
	for i, name := range f.Order {
		r, err := f.Topology.Region(name)
		if err != nil {
			return nil, err
		}
		tctx, cancel := context.WithTimeout(ctx, f.Timeout)
		dk, err := r.GenerateDataKey(tctx, ec)
		timedOut := tctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			return dk, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if timedOut {
			err = &Error{Region: name, Op: "GenerateDataKey", KeyARN: r.KeyARN,
				Err: fmt.Errorf("%w: no answer within %s", ErrRegionUnavailable, f.Timeout)}
		}
		if !outage(err) {
			return nil, err
		}
		errs = append(errs, err)
		if f.OnFailover != nil && i+1 < len(f.Order) {
			f.OnFailover(name, err)
		}
	}
	return nil, fmt.Errorf("%w (tried %v): %w", ErrNoSealingRegion, f.Order, errors.Join(errs...))
}

// IsOutage reports a failure that another region may not have (see outage): the readers'
// fall-over (envdr open) skips a region on it, as seal does.
func IsOutage(err error) bool { return outage(err) }

// outage reports a failure that another region may not have: the endpoint unreachable or
// silent, a server error, or throttling that outlasted the retries.
func outage(err error) bool {
	if errors.Is(err, ErrRegionUnavailable) || errors.Is(err, ErrThrottled) || errors.Is(err, context.DeadlineExceeded) || isConnError(err) {
		return true
	}
	var apie smithy.APIError
	if errors.As(err, &apie) && apie.ErrorFault() == smithy.FaultServer {
		return true
	}
	var re interface{ HTTPStatusCode() int }
	return errors.As(err, &re) && re.HTTPStatusCode() >= 500
}
