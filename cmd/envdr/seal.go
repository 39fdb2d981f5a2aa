package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

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
		)
		cmd := &cobra.Command{
			Use:   "seal [flags] IN|- OUT|-",
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

OUT is written to a temporary file and renamed into place only on success.`,
			Example: `  envdr --config local/envdr.yaml seal --context app=billing --context tenant=42 report.pdf report.pdf.envdr
  tar c data/ | envdr seal --enqueue - - > data.tar.envdr
  envdr seal --region eu-west-1 --enqueue invoice.json invoice.json.envdr   # eu-west-1's key only
  envdr seal --id invoice-2026-11-001 --enqueue invoice.json invoice.json.envdr`,
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
						fmt.Fprintf(cmd.ErrOrStderr(), "envdr: region %s cannot seal now (%v); falling over to the next region\n", r, err)
					}}
				in, err := openInput(args[0])
				if err != nil {
					return fmt.Errorf("input: %w", err)
				}
				defer in.Close()
				out, err := createOutput(args[1])
				if err != nil {
					return fmt.Errorf("output: %w", err)
				}
				if err := checkJobsFlag(jobs); err != nil {
					return err
				}
				if n := inputSize(in); n >= 0 {
					out.preallocateAfterFirst(sealedPayloadSize(n, chunkSize))
				}
				hdr, err := envelope.Seal(ctx, out.w, in, keys, envelope.SealOptions{
					ID: id, Context: userCtx, ChunkSize: chunkSize, Jobs: jobs})
				if err != nil {
					out.abort()
					return fmt.Errorf("seal %s: %w", args[0], err)
				}
				if err := out.commit(); err != nil {
					return fmt.Errorf("output %s: %w", args[1], err)
				}
				if enqueue {
					if dataURI == "" && args[1] != "-" {
						if abs, err := filepath.Abs(args[1]); err == nil {
							dataURI = "file://" + abs
						}
					}
					warn := func(msg string) { fmt.Fprintf(cmd.ErrOrStderr(), "envdr: %s\n", msg) }
					if _, err := replicate.Enqueue(ctx, topo, hdr, dataURI, warn); err != nil {
						if errors.Is(err, replicate.ErrNoQueue) {
							err = usageError("%v; --enqueue needs one", err)
						}
						return fmt.Errorf("record %s sealed to %s in region %s, but enqueueing its replication event failed (re-run with the same --id to retry): %w", hdr.RecordID(), args[1], hdr.HomeRegion, err)
					}
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
		f.StringVar(&dataURI, "data-uri", "", "where the envelope will live, recorded in the event (default: file:// of OUT)")
		return cmd
	})
}
