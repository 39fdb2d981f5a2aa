package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/spf13/cobra"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/regions"
)

func init() {
	register(func() *cobra.Command {
		var (
			ctxPairs  []string
			id        string
			enqueue   bool
			chunkSize int
			dataURI   string
			jobs      int
		)
		cmd := &cobra.Command{
			Use:   "seal [flags] IN|- OUT|-",
			Short: "Encrypt a file or stream under a fresh data key from the home region's KMS key",
			Long: `seal asks the home region's KMS key for a fresh 256-bit data key (GenerateDataKey), bound to the
encryption context: your --context pairs plus the reserved envdr:id = the envelope ID. It writes
the envelope: a header (ID, context, key commitment, the wrapped data key), which every chunk
authenticates, and the data as AES-256-GCM chunks. The plaintext data key is wiped; only the wrapped one is stored.

With --enqueue it then puts a replication event on the queue, so envdr run wraps the same data
key in every other region. seal prints the envelope ID on stdout (unless OUT is -).

OUT is written to a temporary file and renamed into place only on success.`,
			Example: `  envdr --config local/envdr.yaml seal --context app=billing --context tenant=42 report.pdf report.pdf.envdr
  tar c data/ | envdr seal --enqueue - - > data.tar.envdr
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
				topo, err := regions.New(ctx, cfg, regions.Options{})
				if err != nil {
					return err
				}
				home, err := topo.HomeRegion()
				if err != nil {
					return err
				}
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
				hdr, err := envelope.Seal(ctx, out.w, in, home, envelope.SealOptions{
					ID: id, Context: userCtx, ChunkSize: chunkSize, HomeRegion: home.Name, Jobs: jobs})
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
					if err := sendEvent(ctx, home, cfg.QueueURL, hdr, dataURI); err != nil {
						return fmt.Errorf("record %s sealed to %s, but enqueueing its replication event failed (re-run with the same --id to retry): %w", hdr.RecordID(), args[1], err)
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
		f.BoolVar(&enqueue, "enqueue", false, "send a replication event to queue_url after sealing")
		f.IntVar(&chunkSize, "chunk-size", 0, fmt.Sprintf("plaintext bytes per chunk (default %d)", envelope.DefaultChunkSize))
		addJobsFlag(cmd, &jobs)
		f.StringVar(&dataURI, "data-uri", "", "where the envelope will live, recorded in the event (default: file:// of OUT)")
		return cmd
	})
}

// sendEvent puts the replication event of a sealed header on the queue.
func sendEvent(ctx context.Context, home *regions.Region, queueURL string, hdr *envelope.Header, dataURI string) error {
	if queueURL == "" {
		return usageError("queue_url is not set in the config; --enqueue needs it")
	}
	ev, err := envelope.NewEvent(hdr, time.Now(), dataURI)
	if err != nil {
		return err
	}
	body, err := envelope.EncodeEvent(ev)
	if err != nil {
		return err
	}
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = home.SQS().SendMessage(c, &sqs.SendMessageInput{QueueUrl: aws.String(queueURL), MessageBody: aws.String(string(body))})
	if err != nil {
		return fmt.Errorf("region %s: SendMessage to %s: %w", home.Name, queueURL, err)
	}
	return nil
}
