package replicate

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/regions"
)

// The daemon reads another region's replica only for that region's item under the record's
// header (its verification, and the ack's re-read, I1): its store there asks for those 2 items
// per record, not 1 + regions. Its own region's store reads whole records, which it merges and
// writes (docs/BENCH.md, "The daemon's CPU as shipped").
func TestPipelineReadsOnlyTheirOwnItemInOtherReplicas(t *testing.T) {
	// Local credentials, and none chosen in the environment: regions.New then reads no AWS
	// config of this machine.
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	cfg := &config.Config{HomeRegion: "us-east-1", Table: "envdr-records",
		Local: &config.Local{AccessKey: "AKIDPIPELINETEST", SecretKey: "secret"}}
	for _, n := range []string{"us-east-1", "eu-west-1", "ap-southeast-2"} {
		cfg.Regions = append(cfg.Regions, config.Region{Name: n, Mode: config.ModeMRK,
			Key:       "arn:aws:kms:" + n + ":111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
			Endpoints: config.Endpoints{KMS: "http://127.0.0.1:1", DynamoDB: "http://127.0.0.1:1", SQS: "http://127.0.0.1:1"}})
	}
	cfg.WithDefaults()
	topo, err := regions.New(context.Background(), cfg, regions.Options{}) // builds clients, calls nothing
	require.NoError(t, err)
	for _, self := range cfg.RegionNames() {
		p, err := NewPipeline(topo, self, nil, nil, nil)
		require.NoError(t, err)
		require.Same(t, p.stores[self], p.home)
		require.ElementsMatch(t, cfg.RegionNames(), p.home.names, "this region's store reads whole records")
		for name, s := range p.stores {
			if name == self {
				continue
			}
			require.Equal(t, []string{name}, s.names, "daemon in %s: the store of %s reads the header and %s's item", self, name, name)
			require.Equal(t, 50, s.maxBatchRecords(), "2 keys a record: 50 records a batch call")
		}
	}
}
