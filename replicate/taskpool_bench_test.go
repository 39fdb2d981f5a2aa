//go:build unix

package replicate

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"golang.org/x/sync/errgroup"
)

// cannedSQS answers every request with GetQueueUrl's JSON reply, so a call runs the SDK's whole
// middleware chain (serialize, sign, retry, deserialize) with no network: what the task pool is
// there for is the stack that chain needs, not the wire.
type cannedSQS struct{}

func (cannedSQS) Do(*http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: 200,
		Header:     http.Header{"Content-Type": {"application/x-amz-json-1.0"}},
		Body:       io.NopCloser(bytes.NewReader([]byte(`{"QueueUrl":"http://sqs.local/000000000000/envdr-events"}`))),
	}, nil
}

func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkTaskPoolFanOut compares the daemon's taskGroup (errgroup, each task's stack grown
// once first) with plain errgroup on the daemon's shape of work: many events at once, each fanning out one SDK call per region (3). Besides
// ns/op it reports cpu-ns/op from getrusage, which a busy machine disturbs less than wall time;
// the ratio between the variants in one run is the figure (docs/BENCH.md, "ants or errgroup":
// it also compared taskGroup on an ants pool, which is why the pool is gone).
func BenchmarkTaskPoolFanOut(b *testing.B) {
	const regions = 3
	client := sqs.NewFromConfig(aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDBENCH", "secret", ""),
		HTTPClient:   cannedSQS{},
		BaseEndpoint: aws.String("http://sqs.local"),
	})
	call := func(ctx context.Context) error {
		_, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String("envdr-events")})
		return err
	}
	type group interface {
		Go(func() error)
		Wait() error
	}
	variants := []struct {
		name string
		new  func(context.Context) (group, context.Context)
	}{
		{"errgroup", func(ctx context.Context) (group, context.Context) { return errgroup.WithContext(ctx) }},
		{"taskGroup", func(ctx context.Context) (group, context.Context) { return newTaskGroup(ctx) }},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(16) // the daemon works on tens of events at once
			fanOut := func() error {
				g, ctx := v.new(context.Background())
				for range regions {
					g.Go(func() error { return call(ctx) })
				}
				return g.Wait()
			}
			// Warm up untimed (the client's first calls, the pool's first goroutines), so a
			// short run does not charge one-time costs to whichever variant runs first.
			b.StopTimer()
			for range 200 {
				if err := fanOut(); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
			cpu0 := cpuTime(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := fanOut(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
