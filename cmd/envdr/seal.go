package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

func init() {
	register(func() *cobra.Command {
		var (
			ctxPairs  []string
			id        string
			enqueue   bool
			chunkSize int
			dataURI   string
			region    string
			timeout   time.Duration
			jobs      int
			force     bool
			asJSON    bool
		)
		cmd := &cobra.Command{
			Use:   "seal [flags] IN|- OUT|-|s3://bucket/key",
			Short: "Encrypt a file or stream under a fresh data key from a region's KMS key (home first, falling over)",
			Long: `seal asks a region's KMS key for a fresh 256-bit data key (GenerateDataKey), bound to the
encryption context: your --context pairs plus the reserved envdr:id = the envelope ID. It writes
the envelope: a header (ID, sealing region, context, key commitment, the wrapped data key), which
every chunk authenticates, and the data as AES-256-GCM chunks. The plaintext data key is wiped;
only the wrapped one is stored.

Which region: --region R seals with R's key and no other. Without it, seal tries the regions in
seal order (seal_regions, default home_region and then the others as listed) and falls over to
the next when one is unreachable, does not answer within --region-timeout, or answers with a
server error, saying so on stderr. open works whichever region sealed.

With --enqueue it then puts a replication event on the sealing region's queue (regions[].queue_url,
or queue_url for the home region), so envdr run wraps the same data key in every other region. In
mrk mode it also sends a copy to the next region's queue in seal order (enqueue_copies, default 2;
1 in independent mode), delayed by enqueue_copy_delay: if the sealing region is lost right after
the seal, another region still has the event and can wrap and verify the data key through its
own replica key. seal prints the envelope ID on stdout (unless OUT is -).

OUT s3://bucket/key streams the envelope up as an S3 multipart upload in constant memory (about
60 MiB held whatever the size: 8 MiB parts, 4 in flight), through the S3 endpoint of the region whose bucket
it is (regions[].bucket; else the home region's); a failed seal aborts the upload and leaves no
object. An existing object is refused (HEAD first, and the upload is conditional: If-None-Match)
unless --force. With --enqueue the event's data_uri is the s3:// URI. A bucket that notifies
envdr run needs no --enqueue at all (docs/OPERATIONS.md, "Envelopes in S3").

OUT is written to a temporary file and put in place only on success. An existing OUT, or OUT
being IN itself (under any name or link), is refused before anything is read, and a binary
envelope is never written to a terminal: --force overrides all three.

--output json prints {"id", "region", "key_arn", "bytes", "plaintext_bytes", "output",
"queues": [{"region", "queue_url"}]} (docs/OUTPUT.md); --log-level debug logs each region tried,
the KMS call and any fall-over.

Exit status: 0 sealed (and enqueued), 1 failed (nothing is left at OUT), 2 bad usage.`,
			Example: `  envdr --config local/envdr.yaml seal --context app=billing --context tenant=42 report.pdf report.pdf.envdr
  tar c data/ | envdr seal --enqueue - - > data.tar.envdr
  envdr seal --region eu-west-1 --enqueue invoice.json invoice.json.envdr   # eu-west-1's key only
  envdr seal --id invoice-2026-11-001 --enqueue invoice.json invoice.json.envdr
  envdr seal --context app=billing backup.tar s3://envdr-data-us-east-1/backups/2026-12-07.tar.envdr`,
			Args: exactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				userCtx, err := parseContextFlags(ctxPairs)
				if err != nil {
					return err
				}
				if id != "" {
					if err := envelope.ValidateID(id); err != nil {
						return usageError("--id %q: %v", id, err)
					}
				}
				if err := checkSealContext(id, userCtx); err != nil {
					return err
				}
				rules := outputRules{force: force, in: args[0], binary: true, cmd: cmd.CommandPath()}
				var s3Out *regions.S3URI
				if regions.IsS3URI(args[1]) {
					u, err := regions.ParseS3URI(args[1])
					if err != nil {
						return usageError("OUT: %v", err)
					}
					s3Out = &u
				} else if err := checkOutput(args[1], rules); err != nil {
					return err
				}
				if asJSON && args[1] == "-" {
					if cmd.Flags().Changed("output") || cmd.Flags().Changed("json") {
						return usageError("--output json prints the result on stdout, where OUT - writes the envelope: name an OUT file")
					}
					asJSON = false // ENVDR_OUTPUT=json: stdout carries the data, so no result, as in text
				}
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				ctx := cmd.Context()
				if timeout <= 0 {
					return usageError("--region-timeout %s: use a positive duration such as 5s", timeout)
				}
				order := cfg.SealOrder()
				if region != "" {
					if _, ok := cfg.Region(region); !ok {
						return usageError("--region %s: not among the configured regions %v", region, cfg.RegionNames())
					}
					order = []string{region}
				}
				topo, err := regions.New(ctx, cfg, regions.Options{})
				if err != nil {
					return err
				}
				keys := &regions.Failover{Topology: topo, Order: order, Timeout: timeout,
					OnFailover: func(r string, err error) {
						cliLog.Debug("seal: falling over", zap.String("region", r), zap.Error(err))
						fmt.Fprintf(cmd.ErrOrStderr(), "envdr: region %s cannot seal now (%v); falling over to the next region\n", r, err)
					}}
				cliLog.Debug("seal: KMS GenerateDataKey, regions in this order", zap.Strings("order", order), zap.Duration("region_timeout", timeout))
				if err := checkJobsFlag(jobs); err != nil {
					return err
				}
				var upR *regions.Region
				if s3Out != nil {
					if upR, err = topo.Region(uploadRegion(cfg, s3Out.Bucket)); err != nil {
						return err
					}
					if err := checkS3Output(ctx, upR, *s3Out, force, cmd.CommandPath()); err != nil {
						return err
					}
				}
				in, err := openInput(args[0])
				if err != nil {
					return fmt.Errorf("input: %w", err)
				}
				defer in.Close()
				var (
					out   *output
					s3o   *s3Output
					sink  io.Writer
					abort func(error)
				)
				if s3Out != nil {
					s3o = startS3Output(ctx, upR, *s3Out, force)
					sink, abort = s3o.count, s3o.abort
				} else {
					if out, err = createOutput(args[1], rules); err != nil {
						return err
					}
					if n := inputSize(in); n >= 0 {
						out.preallocateAfterFirst(sealedPayloadSize(n, chunkSize))
					}
					sink, abort = out.w, func(error) { out.abort() }
				}
				counted := &countingReader{r: in}
				started := time.Now()
				hdr, err := envelope.Seal(ctx, sink, counted, keys, envelope.SealOptions{
					ID: id, Context: userCtx, ChunkSize: chunkSize, Jobs: jobs})
				if err != nil {
					abort(err)
					if out != nil {
						err = out.userError(err)
					}
					return fmt.Errorf("seal %s: %w", args[0], err)
				}
				cliLog.Debug("seal: data key made and data sealed", zap.String("record", hdr.RecordID()), zap.String("region", hdr.HomeRegion),
					zap.String("key_arn", hdr.KeyARN), zap.Int64("plaintext_bytes", counted.n), zap.Duration("took", time.Since(started)))
				var written int64
				if s3o != nil {
					if err := s3o.commit(); err != nil {
						return fmt.Errorf("seal %s (record %s): output %s: %w", args[0], hdr.RecordID(), args[1], err)
					}
					written = s3o.count.n
				} else {
					if err := out.commit(); err != nil {
						return fmt.Errorf("seal %s: output %s: %w", args[0], args[1], err)
					}
					written = out.bytes()
				}
				res := sealResult{ID: hdr.ID, Region: hdr.HomeRegion, KeyARN: hdr.KeyARN, Bytes: written, PlaintextBytes: counted.n,
					Output: args[1], Queues: []replicate.Queued{}}
				if enqueue {
					if dataURI == "" && s3Out != nil {
						dataURI = s3Out.String()
					}
					if dataURI == "" && args[1] != "-" {
						if abs, err := filepath.Abs(args[1]); err == nil {
							dataURI = "file://" + abs
						}
					}
					warn := func(msg string) { fmt.Fprintf(cmd.ErrOrStderr(), "envdr: %s\n", msg) }
					queued, err := replicate.EnqueueQueues(ctx, topo, hdr, dataURI, warn)
					if err != nil {
						if errors.Is(err, replicate.ErrNoQueue) {
							err = usageError("%v; --enqueue needs one", err)
						}
						return fmt.Errorf("record %s sealed to %s in region %s, but enqueueing its replication event failed (re-run with the same --id and --force to retry): %w", hdr.RecordID(), args[1], hdr.HomeRegion, err)
					}
					res.Queues = queued
					cliLog.Debug("seal: replication event enqueued", zap.String("record", hdr.RecordID()), zap.Any("queues", queued))
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), res)
				}
				if args[1] != "-" {
					fmt.Fprintln(cmd.OutOrStdout(), hdr.ID)
				}
				return nil
			},
		}
		f := cmd.Flags()
		f.StringArrayVar(&ctxPairs, "context", nil, "encryption context pair key=value (repeatable); envdr:id is added")
		f.StringVar(&id, "id", "", "envelope ID (default: 32 random hex digits); letters, digits and . _ : - only")
		f.BoolVar(&enqueue, "enqueue", false, "send the replication event to the sealing region's queue (and, in mrk mode, a copy to the next region's)")
		f.StringVar(&region, "region", "", "seal with this region's key only (default: seal order, falling over)")
		f.DurationVar(&timeout, "region-timeout", 5*time.Second, "how long one region may take to make a data key before seal falls over")
		f.IntVar(&chunkSize, "chunk-size", 0, fmt.Sprintf("plaintext bytes per chunk (default %d)", envelope.DefaultChunkSize))
		addJobsFlag(cmd, &jobs)
		f.BoolVar(&force, "force", false, "overwrite an existing OUT (even IN itself), and write the envelope to a terminal")
		addOutputFlag(cmd, &asJSON)
		f.StringVar(&dataURI, "data-uri", "", "where the envelope will live, recorded in the event (default: OUT's s3:// URI, or file:// of OUT)")
		return cmd
	})
}

// sealResult is seal's --output json result (docs/OUTPUT.md).
type sealResult struct {
	ID             string             `json:"id"`
	Region         string             `json:"region"`  // the region whose key made the data key
	KeyARN         string             `json:"key_arn"` // that key
	Bytes          int64              `json:"bytes"`   // envelope bytes written
	PlaintextBytes int64              `json:"plaintext_bytes"`
	Output         string             `json:"output"` // OUT as given ("-": stdout)
	Queues         []replicate.Queued `json:"queues"` // queues the replication event went to (--enqueue)
}

// checkSealContext checks the --context pairs (and --id) as the envelope will, before any KMS
// call: a reserved envdr: key or a pair over the limits is a usage error, not a KMS failure.
func checkSealContext(id string, user map[string]string) error {
	if id == "" {
		id = "0"
	}
	if _, err := envelope.NewContext(id, user); err != nil {
		return usageError("--context: %v", err)
	}
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
