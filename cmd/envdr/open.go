package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/envdr/envdr/envelope"
	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
	"github.com/envdr/envdr/replicate"
)

func init() {
	register(func() *cobra.Command {
		var (
			region   string
			ctxPairs []string
			anyKey   bool
			jobs     int
		)
		cmd := &cobra.Command{
			Use:   "open [flags] IN|- OUT|-",
			Short: "Decrypt an envelope, through one region alone with --region",
			Long: `open reads the envelope header, unwraps the data key with KMS, checks the key commitment, and
writes the plaintext. Each chunk is released only after it authenticates; truncation, reordering
and appended data are detected.

With --region R only region R's endpoints are used (no client for any other region is built):
R's wrap is taken from the record in R's table when it is there, else the header's own wrap when
R holds a replica of the header's multi-Region key; otherwise open fails naming R and the
missing wrap. This is how you prove a region can recover your data on its own.

The header is not authenticated before the data key is known, so open only unwraps under a key of
the region in the config (the region's key, previous_keys, trusted_keys, or a multi-Region
replica of one of them); an envelope naming any other key, or none, is refused before any KMS
call, naming the key and region. --trust-any-key lifts that for one run (with a warning).

--context pairs must match the envelope's context exactly (envdr:id may be left out); a
mismatch names the keys that differ, before any KMS call. OUT is written to a temporary file and
renamed into place only on success.`,
			Example: `  envdr --config local/envdr.yaml open report.pdf.envdr report.pdf
  envdr --config local/envdr.yaml open --region eu-west-1 --context app=billing report.pdf.envdr -`,
			Args: exactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				want, err := parseContextFlags(ctxPairs)
				if err != nil {
					return err
				}
				if want == nil && cmd.Flags().Changed("context") {
					want = map[string]string{}
				}
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				if _, ok := cfg.Region(region); region != "" && !ok {
					return usageError("--region %s is not configured (configured: %v)", region, cfg.RegionNames())
				}
				in, err := openInput(args[0])
				if err != nil {
					return fmt.Errorf("input: %w", err)
				}
				defer in.Close()
				hdr, src, err := readHeaderKeep(in)
				if err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				if want != nil {
					if err := hdr.Context.Compare(want); err != nil {
						return fmt.Errorf("record %s: %w", hdr.RecordID(), err)
					}
				}
				ctx := cmd.Context()
				r, wraps, err := chooseWrap(ctx, cfg, hdr, region, anyKey)
				if err != nil {
					return err
				}
				var wrap *envelope.Wrap
				if len(wraps) > 0 {
					wrap = wraps[0]
				}
				if err := checkJobsFlag(jobs); err != nil {
					return err
				}
				out, err := createOutput(args[1])
				if err != nil {
					return fmt.Errorf("output: %w", err)
				}
				out.preallocate(openedSize(hdr, inputSize(in)))
				used := func(w *envelope.Wrap, failed []error) {
					if len(failed) > 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "envdr: record %s: region %s: the %s wrap did not open (%v); opened with the %s wrap under %s\n",
							hdr.RecordID(), r.Name, wraps[0].Source, failed[0], w.Source, w.KeyARN)
					}
				}
				var fallbacks []*envelope.Wrap
				if len(wraps) > 1 {
					fallbacks = wraps[1:]
				}
				if _, err := envelope.Open(ctx, out.w, src, r, envelope.OpenOptions{Context: want, Wrap: wrap, Fallbacks: fallbacks, Used: used, Jobs: jobs}); err != nil {
					out.abort()
					return fmt.Errorf("open %s (record %s) through region %s: %w", args[0], hdr.RecordID(), r.Name, err)
				}
				if err := out.commit(); err != nil {
					return fmt.Errorf("output %s: %w", args[1], err)
				}
				return nil
			},
		}
		cmd.Flags().StringVar(&region, "region", "", "open through this region alone (default: the envelope's home region)")
		cmd.Flags().StringArrayVar(&ctxPairs, "context", nil, "expected encryption context pair key=value (repeatable)")
		addTrustAnyKeyFlag(cmd, &anyKey)
		addJobsFlag(cmd, &jobs)
		return cmd
	})
}

// onlyRegion builds a topology with clients for region alone (a configured region: the caller
// checks, naming --region or the envelope's home region as the case may be).
func onlyRegion(ctx context.Context, cfg *config.Config, region string, anyKey bool) (*regions.Region, error) {
	var exclude []string
	for _, n := range cfg.RegionNames() {
		if n != region {
			exclude = append(exclude, n)
		}
	}
	topo, err := regions.New(ctx, cfg, regions.Options{Exclude: exclude, TrustAnyKey: anyKey})
	if err != nil {
		return nil, err
	}
	return topo.Region(region)
}

// chooseWrap picks the region and the wraps that open uses, in the order to try them. With no
// region, the header's own wrap in the header's home region. With a region R: R's wrap from the
// record in R's table, then the header's wrap through R's replica of a multi-Region key (or in
// the home region itself), so a record wrap that fails its commitment falls back to the
// envelope's own (issue 20, finding 4).
func chooseWrap(ctx context.Context, cfg *config.Config, hdr *envelope.Header, region string, anyKey bool) (*regions.Region, []*envelope.Wrap, error) {
	explicit := region != ""
	if !explicit {
		region = hdr.HomeRegion
		if _, ok := cfg.Region(region); !ok {
			return nil, nil, fmt.Errorf("record %s: the envelope's home region %s is not configured (configured: %v); add it, or open through a configured region with --region",
				hdr.RecordID(), region, cfg.RegionNames())
		}
	}
	r, err := onlyRegion(ctx, cfg, region, anyKey)
	if err != nil {
		return nil, nil, err
	}
	if !explicit {
		return r, nil, nil
	}
	id := hdr.RecordID()
	store := replicate.NewStore(cfg.Table, r.Name, r.DynamoDB(), cfg.RegionNames())
	rec, recErr := store.Get(ctx, id)
	if recErr == nil && (!rec.Context.Equal(hdr.Context) || !bytes.Equal(rec.Commitment, hdr.Commitment)) {
		// A record that disagrees with the authenticated header was tampered with (or belongs to
		// another envelope): refuse it rather than trust its wrap.
		return nil, nil, fmt.Errorf("region %s: record %s: %w: the record's context or key commitment differs from the envelope header's",
			region, id, envelope.ErrRecordConflict)
	}
	var wraps []*envelope.Wrap
	if recErr == nil {
		if w := rec.Wrap(r.Name); w != nil && len(w.Wrapped) > 0 {
			w.Source = "record"
			wraps = append(wraps, w)
		}
	}
	if hw := recovery.HeaderWrapIn(cfg, hdr, region); hw != nil {
		wraps = append(wraps, hw)
	}
	if len(wraps) > 0 {
		return r, wraps, nil
	}
	why := "the record has no wrap for it"
	if recErr != nil {
		why = recErr.Error()
		if errors.Is(recErr, replicate.ErrRecordNotFound) {
			why = "no record in its table (not replicated yet?)"
		}
	}
	return nil, nil, fmt.Errorf("region %s: record %s: no wrap of the data key for this region (%s), and the header's key %s is not a multi-Region key with a replica here",
		region, id, why, hdr.KeyARN)
}
