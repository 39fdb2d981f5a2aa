//go:build unix

package regions_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/localaws"
	"github.com/envdr/envdr/localaws/localtest"
	"github.com/envdr/envdr/regions"
)

// cannedGetItem answers every request with the GetItem reply of a record's region item, so a
// call runs the SDK's whole chain (serialize, sign, deserialize) and no network.
type cannedGetItem struct{ body []byte }

func (c cannedGetItem) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/x-amz-json-1.0"}},
		Body: io.NopCloser(bytes.NewReader(c.body)), ContentLength: int64(len(c.body))}, nil
}

// BenchmarkCallCPU is the client's CPU for one AWS call, as the daemon's clients are built
// (regions.New: ownBodies, the per-attempt timeout, the retryer): "sdk" answers in process (the
// SDK's middleware, signing and JSON alone), "loopback" sends the same GetItem to DynamoDB Local
// of `make local-up`, another process, over loopback HTTP (adding net/http's connection
// goroutines, the syscalls and the runtime's wake-ups). cpu-ns/op is this process's getrusage,
// so the server's CPU is not in it. Every call the daemon makes (KMS, DynamoDB, SQS) is such a
// JSON call: docs/BENCH.md, "The daemon's CPU as shipped", uses the two figures for its floor.
//
//	ENVDR_REQUIRE_LOCAL=1 go test -run '^$' -bench BenchmarkCallCPU -benchtime 3000x -count 3 ./regions/
func BenchmarkCallCPU(b *testing.B) {
	defer debug.SetGCPercent(debug.SetGCPercent(400)) // the daemon's GOGC (cmd/envdr tuneGC)
	backends := localtest.RequireBackends(b)
	b.Setenv("AWS_PROFILE", "") // the config's local credentials sign, whatever the machine's AWS config
	b.Setenv("AWS_ACCESS_KEY_ID", "")
	const region = "us-east-1"
	table := fmt.Sprintf("envdr-callcpu-%d", time.Now().UnixNano())
	ctx := context.Background()

	// The table straight on DynamoDB Local (no stand-in proxy: its CPU would be this process's).
	admin := dynamodb.NewFromConfig(localaws.AWSConfig(region, config.Endpoints{DynamoDB: backends.DynamoDB},
		localaws.AccessKey, localaws.SecretKey))
	_, err := admin.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: ddbtypes.KeyTypeHash}},
		BillingMode:          ddbtypes.BillingModePayPerRequest,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = admin.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	if err := dynamodb.NewTableExistsWaiter(admin).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, time.Minute); err != nil {
		b.Fatal(err)
	}
	// A region item as the daemon writes them (docs/FORMAT.md): its wrap is a KMS ciphertext.
	item := map[string]ddbtypes.AttributeValue{
		"id":          &ddbtypes.AttributeValueMemberS{Value: "callcpu-0001#" + region},
		"record":      &ddbtypes.AttributeValueMemberS{Value: "callcpu-0001"},
		"region":      &ddbtypes.AttributeValueMemberS{Value: region},
		"version":     &ddbtypes.AttributeValueMemberN{Value: "2"},
		"key_arn":     &ddbtypes.AttributeValueMemberS{Value: mrkUS},
		"wrapped_dek": &ddbtypes.AttributeValueMemberB{Value: bytes.Repeat([]byte{7}, 184)},
		"wrapped_at":  &ddbtypes.AttributeValueMemberS{Value: "2026-12-07T22:00:00.123456789Z"},
		"verified_at": &ddbtypes.AttributeValueMemberS{Value: "2026-12-07T22:00:00.456789012Z"},
	}
	if _, err := admin.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
		b.Fatal(err)
	}
	in := &dynamodb.GetItemInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true),
		Key: map[string]ddbtypes.AttributeValue{"id": item["id"]}}
	live := topologyFor(b, region, backends.DynamoDB, nil)
	reply, err := rawReply(ctx, live, in)
	if err != nil {
		b.Fatal(err)
	}

	for _, v := range []struct {
		name string
		topo *regions.Topology
	}{
		{"sdk", topologyFor(b, region, "http://127.0.0.1:1", cannedGetItem{body: reply})},
		{"loopback", live},
	} {
		b.Run(v.name, func(b *testing.B) {
			r, err := v.topo.Region(region)
			if err != nil {
				b.Fatal(err)
			}
			call := func() error {
				out, err := r.DynamoDB().GetItem(ctx, in)
				if err == nil && out.Item == nil {
					err = fmt.Errorf("GetItem %s: no item", table)
				}
				return err
			}
			for range 100 { // connections, the SDK's caches: not charged to the first variant
				if err := call(); err != nil {
					b.Fatal(err)
				}
			}
			b.SetParallelism(8) // the daemon has tens of calls in flight
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// topologyFor is one region's clients as regions.New builds them, with DynamoDB at endpoint;
// hc, if set, is the HTTP client under them.
func topologyFor(b *testing.B, region, endpoint string, hc aws.HTTPClient) *regions.Topology {
	b.Helper()
	cfg := &config.Config{HomeRegion: region, Table: "envdr-callcpu",
		Local:   &config.Local{AccessKey: localaws.AccessKey, SecretKey: localaws.SecretKey},
		Regions: []config.Region{{Name: region, Key: mrkUS, Mode: config.ModeMRK, Endpoints: config.Endpoints{DynamoDB: endpoint}}}}
	cfg.WithDefaults()
	topo, err := regions.New(context.Background(), cfg, regions.Options{HTTPClient: hc})
	if err != nil {
		b.Fatal(err)
	}
	return topo
}

// rawReply is DynamoDB Local's HTTP body for in, for the canned variant to answer with.
func rawReply(ctx context.Context, topo *regions.Topology, in *dynamodb.GetItemInput) ([]byte, error) {
	r, err := topo.Region(topo.Home)
	if err != nil {
		return nil, err
	}
	var body []byte
	_, err = r.DynamoDB().GetItem(ctx, in, func(o *dynamodb.Options) {
		o.HTTPClient = captureBody{next: o.HTTPClient, body: &body}
	})
	return body, err
}

type captureBody struct {
	next aws.HTTPClient
	body *[]byte
}

func (c captureBody) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.next.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if *c.body, err = io.ReadAll(resp.Body); err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(*c.body))
	return resp, nil
}

func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
