package recovery_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/localtest"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

// fixture is one test's stand-in, config and topology (every region).
type fixture struct {
	env  *localtest.Env
	cfg  *config.Config
	topo *regions.Topology
	home *replicate.Store
	// producer and daemon sign as those roles: the fixtures seal and wrap records as the
	// workloads that do it when deployed (the keys carry the rendered key policies, which let
	// the admin manage keys but not use them).
	producer, daemon *regions.Topology
}

// fastRegions shortens retries so tests with a region down do not wait on back-offs.
var fastRegions = regions.Options{BaseBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxCooldown: time.Second}

func setup(t testing.TB) *fixture { t.Helper(); return setupWith(t, localtest.Options{}) }

func setupWith(t testing.TB, o localtest.Options) *fixture {
	t.Helper()
	env := localtest.NewWith(t, o)
	cfg := *env.Config
	cfg.Regions = append([]config.Region(nil), env.Config.Regions...)
	cfg.Worker.Visibility = 6 * time.Second
	cfg.Worker.Concurrency = 8
	require.NoError(t, cfg.Validate())
	topo, err := regions.New(context.Background(), &cfg, fastRegions)
	require.NoError(t, err)
	home, err := topo.HomeRegion()
	require.NoError(t, err)
	producer, err := regions.New(context.Background(), env.ConfigAs(&cfg, iam.RoleProducer), fastRegions)
	require.NoError(t, err)
	daemon, err := regions.New(context.Background(), env.ConfigAs(&cfg, iam.RoleDaemon), fastRegions)
	require.NoError(t, err)
	return &fixture{env: env, cfg: &cfg, topo: topo, producer: producer, daemon: daemon,
		home: replicate.NewStore(cfg.Table, home.Name, home.DynamoDB(), cfg.RegionNames())}
}

// as is the fixture's config signed as role: the envdr command under test runs as the role that
// runs it when deployed (seal as the producer, run as the daemon, the reading commands as the
// operator, rewrap as its own role).
func (f *fixture) as(t testing.TB, role string) *config.Config {
	t.Helper()
	return f.env.ConfigAs(f.cfg, role)
}

// newRecord makes a record with real KMS wraps in the given regions: GenerateDataKey in the home
// region, ReEncrypt to each other region's replica key. The DEK is wiped at once.
func (f *fixture) newRecord(ctx context.Context, in ...string) (*envelope.Record, error) {
	home, err := f.producer.HomeRegion()
	if err != nil {
		return nil, err
	}
	rec, wrapped, arn, err := mintRecord(ctx, home, "drill-test")
	if err != nil {
		return nil, err
	}
	now := rec.CreatedAt
	for _, n := range in {
		if n == home.Name {
			rec.Regions[n] = &envelope.RegionWrap{KeyARN: arn, Wrapped: wrapped, WrappedAt: now}
			continue
		}
		r, err := f.daemon.Region(n)
		if err != nil {
			return nil, err
		}
		src, err := regions.ReplicaARN(arn, n)
		if err != nil {
			return nil, err
		}
		w, k, err := r.ReEncrypt(ctx, wrapped, src, "", rec.Context.Map())
		if err != nil {
			return nil, err
		}
		rec.Regions[n] = &envelope.RegionWrap{KeyARN: k, Wrapped: w, WrappedAt: now}
	}
	return rec, nil
}

// mintRecord makes a record without wraps under a fresh DEK from home (GenerateDataKey; the
// DEK is wiped at once), and returns it with the home region's wrap and its key ARN.
func mintRecord(ctx context.Context, home *regions.Region, app string) (rec *envelope.Record, wrapped []byte, arn string, err error) {
	id, err := envelope.NewID()
	if err != nil {
		return nil, nil, "", err
	}
	ec, err := envelope.NewContext(id, map[string]string{"app": app})
	if err != nil {
		return nil, nil, "", err
	}
	dek, wrapped, arn, err := home.GenerateDataKeyRaw(ctx, ec.Map())
	if err != nil {
		return nil, nil, "", err
	}
	com, err := envelope.Commitment(dek)
	envelope.Wipe(dek)
	if err != nil {
		return nil, nil, "", err
	}
	rec = &envelope.Record{ID: id, Context: ec, Commitment: com, SourceRegion: home.Name, SourceKeyARN: arn,
		CreatedAt: time.Now().UTC(), Regions: map[string]*envelope.RegionWrap{}}
	return rec, wrapped, arn, nil
}

// seed inserts n records wrapped in the given regions, concurrently, and returns their IDs.
func (f *fixture) seed(t testing.TB, n int, in ...string) []string {
	t.Helper()
	return f.seedWith(t, n, 16, in...)
}

func (f *fixture) seedWith(t testing.TB, n, writers int, in ...string) []string {
	t.Helper()
	ids := make([]string, n)
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(writers)
	for i := 0; i < n; i++ {
		g.Go(func() error {
			rec, err := f.newRecord(ctx, in...)
			if err != nil {
				return err
			}
			ids[i] = rec.ID
			_, err = f.home.Update(ctx, rec.ID, func(*envelope.Record) (*envelope.Record, error) { return rec.Clone(), nil })
			return err
		})
	}
	require.NoError(t, g.Wait())
	f.env.Settle() // every region's replica holds the records
	return ids
}

// sealed seals a small random file in the home region and returns its path and header.
func (f *fixture) sealed(t *testing.T) (string, *envelope.Header) {
	t.Helper()
	home, err := f.producer.HomeRegion()
	require.NoError(t, err)
	pt := make([]byte, 3000)
	_, _ = rand.Read(pt)
	var buf bytes.Buffer
	hdr, err := envelope.Seal(context.Background(), &buf, bytes.NewReader(pt), home, envelope.SealOptions{Context: map[string]string{"app": "drill-test"}})
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), hdr.RecordID()+".envdr")
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
	return path, hdr
}

// enqueue seals n envelopes and sends their events; it returns the record IDs.
func (f *fixture) enqueue(t *testing.T, n int) []string {
	t.Helper()
	home, err := f.producer.HomeRegion()
	require.NoError(t, err)
	var mu sync.Mutex
	var ids []string
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(8)
	for i := 0; i < n; i++ {
		g.Go(func() error {
			var buf bytes.Buffer
			hdr, err := envelope.Seal(ctx, &buf, bytes.NewReader([]byte("payload")), home, envelope.SealOptions{Context: map[string]string{"app": "drill-test"}})
			if err != nil {
				return err
			}
			ev, err := envelope.NewEvent(hdr, time.Now(), "")
			if err != nil {
				return err
			}
			body, err := envelope.EncodeEvent(ev)
			if err != nil {
				return err
			}
			if _, err := home.SQS().SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(f.cfg.QueueURL), MessageBody: aws.String(string(body))}); err != nil {
				return err
			}
			mu.Lock()
			ids = append(ids, hdr.RecordID())
			mu.Unlock()
			return nil
		})
	}
	require.NoError(t, g.Wait())
	return ids
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", within, what)
}

// wrapped reports whether every id's record holds a wrap in every region listed.
func (f *fixture) wrapped(ids []string, in ...string) bool {
	for _, id := range ids {
		rec, err := f.home.Get(context.Background(), id)
		if err != nil {
			return false
		}
		for _, n := range in {
			if !rec.Regions[n].HasWrap() {
				return false
			}
		}
	}
	return true
}
