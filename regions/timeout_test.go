package regions_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// hangKMS answers Decrypt like fakeKMS, except that while hang is set it never answers
// (a blackholed endpoint): the call returns only when its context ends.
type hangKMS struct {
	*fakeKMS
	hang    atomic.Bool
	reached atomic.Int64
}

func (h *hangKMS) Decrypt(ctx context.Context, in *kms.DecryptInput, o ...func(*kms.Options)) (*kms.DecryptOutput, error) {
	h.reached.Add(1)
	if h.hang.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return h.fakeKMS.Decrypt(ctx, in, o...)
}

func timeoutRegion(t *testing.T, k regions.KMSAPI, ep config.Endpoints) *regions.Region {
	t.Helper()
	return regions.NewRegionForTest(config.Region{Name: "eu-west-1", Key: mrkEU, Mode: config.ModeMRK, KMSRate: 1000, Endpoints: ep}, k,
		regions.Options{Attempts: 3, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, UnhealthyAfter: 2,
			MaxCooldown: 200 * time.Millisecond, KMSTimeout: 100 * time.Millisecond, DynamoDBTimeout: 100 * time.Millisecond})
}

// A KMS that never answers fails each attempt in KMSTimeout, as an unreachable region: marked
// unhealthy, later calls deferred at once. Once its cool-down passes exactly one call probes it
// while the others stay deferred; when it answers again the region is healthy.
func TestBlackholedKMSTimesOutAndIsDeferredWithOneProbe(t *testing.T) {
	t.Parallel()
	h := &hangKMS{fakeKMS: &fakeKMS{}}
	h.hang.Store(true)
	r := timeoutRegion(t, h, config.Endpoints{})
	ctx := context.Background()

	for i := 1; i <= 2; i++ {
		start := time.Now()
		_, err := r.DecryptRaw(ctx, []byte("w"), mrkEU, nil)
		elapsed := time.Since(start)
		require.ErrorIs(t, err, regions.ErrRegionUnavailable)
		var te *regions.TimeoutError
		require.ErrorAs(t, err, &te)
		require.Equal(t, "kms", te.Service)
		require.Contains(t, err.Error(), "region eu-west-1: Decrypt")
		require.EqualValues(t, i, h.reached.Load(), "a timed-out attempt is not retried within the call")
		require.Less(t, elapsed, 5*time.Second, "bounded by the per-attempt timeout, not the HTTP client's 30 s")
		require.True(t, regions.IsConnError(err))
	}
	require.False(t, r.Healthy(), "two timeouts in a row mark it unhealthy")

	// Cooling down: deferred without a call.
	_, err := r.DecryptRaw(ctx, []byte("w"), mrkEU, nil)
	require.ErrorIs(t, err, regions.ErrRegionUnavailable)
	require.EqualValues(t, 2, h.reached.Load())

	// After the cool-down, eight callers at once: one probe reaches KMS, seven are deferred.
	time.Sleep(600 * time.Millisecond)
	var wg sync.WaitGroup
	var deferred atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.DecryptRaw(ctx, []byte("w"), mrkEU, nil); errors.Is(err, regions.ErrRegionUnavailable) {
				deferred.Add(1)
			}
		}()
	}
	wg.Wait()
	require.EqualValues(t, 3, h.reached.Load(), "a single probe while unhealthy")
	require.EqualValues(t, 8, deferred.Load())

	h.hang.Store(false)
	require.Eventually(t, func() bool {
		_, err := r.DecryptRaw(ctx, []byte("w"), mrkEU, nil)
		return err == nil
	}, 3*time.Second, 20*time.Millisecond)
	require.True(t, r.Healthy())
}

// A caller's own cancellation is not a timeout and says nothing about the region.
func TestCancelledCallDoesNotMarkRegion(t *testing.T) {
	t.Parallel()
	h := &hangKMS{fakeKMS: &fakeKMS{}}
	h.hang.Store(true)
	r := timeoutRegion(t, h, config.Endpoints{})
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := r.DecryptRaw(ctx, []byte("w"), mrkEU, nil)
		cancel()
		require.Error(t, err)
		var te *regions.TimeoutError
		require.False(t, errors.As(err, &te), "%v", err)
	}
	require.True(t, r.Healthy())
}

// A 5xx whose code the KMS client does not model (a generic API error) is retried.
func TestUnmodelledServerErrorIsRetried(t *testing.T) {
	t.Parallel()
	f := &fakeKMS{fail: func(n int64) error {
		if n == 1 {
			return &smithy.OperationError{ServiceID: "KMS", OperationName: "Decrypt", Err: &awshttp.ResponseError{
				ResponseError: &smithyhttp.ResponseError{
					Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 503}},
					Err:      &smithy.GenericAPIError{Code: "ServiceUnavailable", Message: "try again"},
				}}}
		}
		return nil
	}}
	r := timeoutRegion(t, f, config.Endpoints{})
	_, err := r.DecryptRaw(context.Background(), []byte("w"), mrkEU, nil)
	require.NoError(t, err)
	require.EqualValues(t, 2, f.calls.Load())
}

// DynamoDB calls get a per-attempt timeout too, reported as a TimeoutError and not retried by
// the SDK; Region.Call counts them toward the region's health and then defers at once.
func TestBlackholedDynamoDBTimesOutAndRegionCallDefers(t *testing.T) {
	t.Parallel()
	var reached atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		select { // a blackhole: read, never answer
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	r := timeoutRegion(t, &fakeKMS{}, config.Endpoints{DynamoDB: srv.URL})
	get := func(ctx context.Context) error {
		_, err := r.DynamoDB().GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("t"),
			Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "x"}}})
		return err
	}
	ctx := context.Background()
	for i := 1; i <= 2; i++ {
		err := r.Call(ctx, "GetItem", get)
		var te *regions.TimeoutError
		require.ErrorAs(t, err, &te, "call %d", i)
		require.Equal(t, "dynamodb", te.Service)
		require.ErrorIs(t, err, regions.ErrRegionUnavailable)
		require.EqualValues(t, i, reached.Load(), "one attempt per call: a timeout is not retried")
	}
	require.False(t, r.Healthy())
	err := r.Call(ctx, "GetItem", get)
	require.ErrorIs(t, err, regions.ErrRegionUnavailable)
	require.ErrorContains(t, err, "marked unhealthy")
	require.EqualValues(t, 2, reached.Load(), "deferred without a request")
}

// Calls that were in flight together when a region went silent time out together; only the
// first marks the region and starts the cool-down, the others must not lengthen it (else one
// burst would push it to MaxCooldown and the region's return would go unnoticed that long).
func TestBurstOfTimeoutsDoesNotEscalateCooldown(t *testing.T) {
	t.Parallel()
	h := &hangKMS{fakeKMS: &fakeKMS{}}
	h.hang.Store(true)
	r := regions.NewRegionForTest(config.Region{Name: "eu-west-1", Key: mrkEU, Mode: config.ModeMRK, KMSRate: 1000}, h,
		regions.Options{Attempts: 3, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, UnhealthyAfter: 3,
			MaxCooldown: time.Minute, KMSTimeout: 100 * time.Millisecond})
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = r.DecryptRaw(ctx, []byte("w"), mrkEU, nil)
		}()
	}
	wg.Wait()
	require.EqualValues(t, 12, h.reached.Load())
	require.False(t, r.Healthy())
	h.hang.Store(false)
	// The first cool-down is 0.5 s; a probe then finds the region answering again.
	require.Eventually(t, func() bool {
		_, err := r.DecryptRaw(ctx, []byte("w"), mrkEU, nil)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "the region must be probed within the first cool-down, not MaxCooldown")
	require.True(t, r.Healthy())
}
