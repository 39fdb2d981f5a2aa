package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

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
			force    bool
			asJSON   bool
			timeout  time.Duration
		)
		cmd := &cobra.Command{
			Use:   "open [flags] IN|-|s3://bucket/key OUT|-",
			Short: "Decrypt an envelope, falling over between regions (through one region alone with --region)",
			Long: `open reads the envelope header, unwraps the data key with KMS, checks the key commitment, and
writes the plaintext. Each chunk is released only after it authenticates; truncation, reordering
and appended data are detected.

Without --region open falls over as seal does: it tries the region that sealed the envelope (its
header) first, then the others in seal order (seal_regions, else the config's order). It skips a
region that is unreachable, does not answer within --region-timeout, answers with a server error,
or holds no wrap of this data key yet, and says on stderr which region served and why the
others were skipped. In the sealing region the header's own wrap is used; elsewhere the region's
wrap from the record in its own table, else the header's wrap through its replica of a
multi-Region key. A failure that is a finding rather than an outage (access denied, a record or
wrap that does not match the header) stops it at once, naming region, key and record.

With --region R only region R's endpoints are used (no client for any other region is built):
R's wrap is taken from the record in R's table when it is there, else the header's own wrap when
R holds a replica of the header's multi-Region key; otherwise open fails naming R and the
missing wrap. This is how you prove a region can recover your data on its own.

IN s3://bucket/key streams the object down. Without --region it is read from the bucket's own
region first, then from each other region's bucket replica (regions[].bucket, the same key) in
seal order, skipping a replica whose region is out or that does not hold the object yet, and
stderr names the replica read; the data key then falls over as above. With --region R only R's
bucket replica and R's endpoints are used. A bucket that is no region's is read as named
(through --region's endpoint, else the home region's).

The header is not authenticated before the data key is known, so open only unwraps under a key of
the region in the config (the region's key, previous_keys, trusted_keys, or a multi-Region
replica of one of them); an envelope naming any other key, or none, is refused before any KMS
call, naming the key and region. --trust-any-key lifts that for one run (with a warning).

--context pairs must match the envelope's context exactly (envdr:id may be left out); a
mismatch names the keys that differ, before any KMS call. OUT is written to a temporary file and
put in place only on success. An existing OUT, or OUT being IN itself (under any name or link),
is refused before any KMS call, and binary plaintext is never written to a terminal: --force
overrides all three.

--output json prints {"id", "region", "wrap": {"region", "key_arn", "source"}, "bytes",
"output", "skipped": [{"region", "reason"}]} (docs/OUTPUT.md); --log-level debug logs each
region tried, the KMS call and any fall-over.

Exit status: 0 opened, 1 failed (nothing is left at OUT), 2 bad usage.`,
			Example: `  envdr --config local/envdr.yaml open report.pdf.envdr report.pdf
  envdr --config local/envdr.yaml open --region eu-west-1 --context app=billing report.pdf.envdr -
  envdr open --output json --region-timeout 2s backup.tar.envdr backup.tar | jq -r .region
  envdr open --region eu-west-1 s3://envdr-data-us-east-1/backups/2026-12-07.tar.envdr backup.tar`,
			Args: exactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				want, err := parseContextFlags(ctxPairs)
				if err != nil {
					return err
				}
				if want == nil && cmd.Flags().Changed("context") {
					want = map[string]string{}
				}
				if err := checkJobsFlag(jobs); err != nil {
					return err
				}
				if timeout <= 0 {
					return usageError("--region-timeout %s: use a positive duration such as 5s", timeout)
				}
				rules := outputRules{force: force, in: args[0], cmd: cmd.CommandPath()}
				if err := checkOutput(args[1], rules); err != nil {
					return err
				}
				if asJSON && args[1] == "-" {
					if cmd.Flags().Changed("output") || cmd.Flags().Changed("json") {
						return usageError("--output json prints the result on stdout, where OUT - writes the plaintext: name an OUT file")
					}
					asJSON = false // ENVDR_OUTPUT=json: stdout carries the data, so no result, as in text
				}
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				if _, ok := cfg.Region(region); region != "" && !ok {
					return usageError("--region %s is not configured (configured: %v)", region, cfg.RegionNames())
				}
				var (
					in     io.ReadCloser
					inSize int64 = -1
					fromS3 *s3Read
				)
				if regions.IsS3URI(args[0]) {
					uri, err := regions.ParseS3URI(args[0])
					if err != nil {
						return usageError("IN: %v", err)
					}
					fromS3, err = openS3Input(cmd.Context(), cfg, uri, region, anyKey, timeout, func(r, why string) {
						fmt.Fprintf(cmd.ErrOrStderr(), "envdr: region %s's replica skipped: %s\n", r, why)
					})
					if err != nil {
						return fmt.Errorf("open %s: %w", args[0], err)
					}
					in, inSize = fromS3.obj.Body, fromS3.obj.Size
					if region == "" {
						fmt.Fprintf(cmd.ErrOrStderr(), "envdr: %s read from region %s's replica s3://%s/%s\n", uri, fromS3.from.Region, fromS3.from.Bucket, uri.Key)
					}
				} else {
					f, err := openInput(args[0])
					if err != nil {
						return fmt.Errorf("input: %w", err)
					}
					in, inSize = f, inputSize(f)
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
				rd := &readers{cfg: cfg, hdr: hdr, anyKey: anyKey, timeout: timeout,
					onSkip: func(region string, why string) {
						fmt.Fprintf(cmd.ErrOrStderr(), "envdr: region %s skipped: %s\n", region, why)
					},
					onFallback: func(region string, first *envelope.Wrap, err error, used *envelope.Wrap) {
						fmt.Fprintf(cmd.ErrOrStderr(), "envdr: record %s: region %s: the %s wrap did not open (%v); opened with the %s wrap under %s\n",
							hdr.RecordID(), region, first.Source, err, used.Source, used.KeyARN)
					}}
				var got *unwrapped
				if region != "" {
					got, err = rd.unwrapIn(ctx, region, true)
				} else {
					got, err = rd.fallOver(ctx)
				}
				if err != nil {
					return fmt.Errorf("open %s (record %s): %w", args[0], hdr.RecordID(), err)
				}
				defer envelope.Wipe(got.dek)
				out, err := createOutput(args[1], rules)
				if err != nil {
					return err
				}
				out.preallocate(openedSize(hdr, inSize))
				if _, err := envelope.Open(ctx, out.w, src, heldDEK(got.dek), envelope.OpenOptions{Context: want, Wrap: got.wrap, Jobs: jobs}); err != nil {
					out.abort()
					return out.userError(fmt.Errorf("open %s (record %s) through region %s: %w", args[0], hdr.RecordID(), got.region, err))
				}
				if err := out.commit(); err != nil {
					return fmt.Errorf("open %s: output %s: %w", args[0], args[1], err)
				}
				if region == "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "envdr: record %s opened through region %s (%s)\n", hdr.RecordID(), got.region, got.why(hdr))
				}
				cliLog.Debug("open: done", zap.String("record", hdr.RecordID()), zap.String("region", got.region), zap.Int64("bytes", out.bytes()))
				if asJSON {
					res := openResult{ID: hdr.ID, Region: got.region, Wrap: got.result(hdr),
						Bytes: out.bytes(), Output: args[1], Skipped: append([]skippedRegion{}, got.skipped...)}
					if fromS3 != nil {
						res.Replica = &fromS3.from
						res.ReplicaSkipped = append([]skippedRegion{}, fromS3.skipped...)
					}
					return writeJSON(cmd.OutOrStdout(), res)
				}
				return nil
			},
		}
		cmd.Flags().StringVar(&region, "region", "", "open through this region alone (default: the sealing region, falling over in seal order)")
		cmd.Flags().StringArrayVar(&ctxPairs, "context", nil, "expected encryption context pair key=value (repeatable)")
		cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing OUT (even IN itself), and write binary plaintext to a terminal")
		cmd.Flags().DurationVar(&timeout, "region-timeout", 5*time.Second, "how long one region may take (record read and KMS Decrypt) before open falls over")
		addOutputFlag(cmd, &asJSON)
		addTrustAnyKeyFlag(cmd, &anyKey)
		addJobsFlag(cmd, &jobs)
		return cmd
	})
}

// openResult is open's --output json result (docs/OUTPUT.md).
type openResult struct {
	ID      string          `json:"id"`
	Region  string          `json:"region"` // the region whose KMS unwrapped the data key
	Wrap    wrapUsed        `json:"wrap"`
	Bytes   int64           `json:"bytes"`  // plaintext bytes written
	Output  string          `json:"output"` // OUT as given ("-": stdout)
	Skipped []skippedRegion `json:"skipped"`
	// Replica is the bucket replica an s3:// IN was read from, and ReplicaSkipped the replicas
	// fallen over from (absent for a file).
	Replica        *s3Replica      `json:"replica,omitempty"`
	ReplicaSkipped []skippedRegion `json:"replica_skipped,omitempty"`
}

// wrapUsed names the wrap of the data key that was unwrapped.
type wrapUsed struct {
	Region string `json:"region"`
	KeyARN string `json:"key_arn"`
	// Source is "header" (the envelope's own wrap, or it through a multi-Region replica key)
	// or "record" (the region's wrap in the records table).
	Source string `json:"source"`
}

// skippedRegion is a region open fell over from, and why.
type skippedRegion struct {
	Region string `json:"region"`
	Reason string `json:"reason"`
}

// heldDEK is an Unwrapper that hands out a data key already unwrapped (and its commitment
// checked) by the region that served; envelope.Open checks the commitment again.
type heldDEK []byte

func (h heldDEK) Unwrap(context.Context, []byte, string, envelope.Context) ([]byte, error) {
	return bytes.Clone(h), nil
}

// unwrapped is a data key and where it came from.
type unwrapped struct {
	dek     []byte
	region  string
	wrap    *envelope.Wrap
	skipped []skippedRegion
}

func (u *unwrapped) result(hdr *envelope.Header) wrapUsed {
	src := u.wrap.Source
	if src == "" {
		src = "record"
		if bytes.Equal(u.wrap.Wrapped, hdr.WrappedDEK) {
			src = "header"
		}
	}
	return wrapUsed{Region: u.wrap.Region, KeyARN: u.wrap.KeyARN, Source: src}
}

// why says, for the stderr line, which wrap served and why earlier regions did not.
func (u *unwrapped) why(hdr *envelope.Header) string {
	w := u.result(hdr)
	s := "the record's wrap under " + w.KeyARN
	if w.Source == "header" {
		s = "the header's wrap under " + w.KeyARN
	}
	if u.region == hdr.HomeRegion {
		s = "the sealing region; " + s
	}
	if n := len(u.skipped); n > 0 {
		s += fmt.Sprintf("; %d region(s) skipped", n)
	}
	return s
}

// readers finds a region that can unwrap an envelope's data key: the per-region step (unwrapIn)
// and the fall-over around it (fallOver).
type readers struct {
	cfg     *config.Config
	hdr     *envelope.Header
	anyKey  bool
	timeout time.Duration
	onSkip  func(region, why string)
	// onFallback, optional, is told when a region's first wrap failed and a later one opened.
	onFallback func(region string, first *envelope.Wrap, err error, used *envelope.Wrap)
}

// order is the fall-over order: the sealing region (the header's), then seal order.
func (rd *readers) order() []string {
	var order []string
	if _, ok := rd.cfg.Region(rd.hdr.HomeRegion); ok {
		order = append(order, rd.hdr.HomeRegion)
	} else {
		// A config without that region (or an edited header, which the chunks will catch):
		// the configured regions may still hold a wrap of the data key.
		cliLog.Debug("open: the sealing region is not configured; trying the seal order", zap.String("region", rd.hdr.HomeRegion), zap.String("record", rd.hdr.RecordID()))
	}
	for _, n := range rd.cfg.SealOrder() {
		if !slices.Contains(order, n) {
			order = append(order, n)
		}
	}
	return order
}

// fallOver tries the regions in order and returns the first data key one of them unwraps. A
// region is skipped when it is out (unreachable, silent past the timeout, 5xx) or holds no wrap
// of this data key; any other failure is a finding and is returned at once.
func (rd *readers) fallOver(ctx context.Context) (*unwrapped, error) {
	order := rd.order()
	if len(order) == 0 {
		return nil, fmt.Errorf("record %s: no configured region to open it through", rd.hdr.RecordID())
	}
	var (
		skipped []skippedRegion
		errs    []error
	)
	for i, name := range order {
		tctx, cancel := context.WithTimeout(ctx, rd.timeout)
		got, err := rd.unwrapIn(tctx, name, false)
		timedOut := tctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			got.skipped = skipped
			return got, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var why string
		switch {
		case timedOut:
			why = fmt.Sprintf("no answer within --region-timeout %s", rd.timeout)
			err = fmt.Errorf("region %s: %w: no answer within %s", name, regions.ErrRegionUnavailable, rd.timeout)
		case regions.IsConnError(err):
			why = "unreachable (" + trimReason(err) + ")"
		case regions.IsOutage(err):
			why = "server error or throttled (" + trimReason(err) + ")"
		case errors.Is(err, errNoWrapHere):
			why = "no wrap of this data key here (" + trimReason(err) + ")"
		default:
			cliLog.Debug("open: region failed; not an outage, not falling over", zap.String("region", name), zap.Error(err))
			return nil, err
		}
		cliLog.Debug("open: falling over", zap.String("region", name), zap.String("record", rd.hdr.RecordID()), zap.Error(err))
		skipped = append(skipped, skippedRegion{Region: name, Reason: why})
		errs = append(errs, err)
		if i+1 < len(order) && rd.onSkip != nil {
			rd.onSkip(name, why)
		}
	}
	return nil, fmt.Errorf("record %s: %w (tried %v): %w", rd.hdr.RecordID(), errNoReadingRegion, order, errors.Join(errs...))
}

// errNoReadingRegion: every region in the fall-over order failed.
var errNoReadingRegion = errors.New("no region could open it")

// trimReason is the heart of an error for a one-line reason: the call that failed and its
// cause (the network error, the HTTP status), rather than the whole chain of context that the
// final error carries anyway.
func trimReason(err error) string {
	op, s := "", err.Error()
	var re *regions.Error
	var he interface{ HTTPStatusCode() int }
	switch {
	case errors.As(err, &re) && re.Err != nil:
		op, s = re.Op+": ", re.Err.Error()
		if errors.As(err, &he) && he.HTTPStatusCode() >= 500 {
			s = fmt.Sprintf("HTTP %d", he.HTTPStatusCode())
		}
	case errors.As(err, &he) && he.HTTPStatusCode() >= 500:
		s = fmt.Sprintf("HTTP %d", he.HTTPStatusCode())
	}
	// The cause is at the end of an SDK error's message ("... dial tcp ...: connection refused").
	if len(s) > 100 {
		s = "…" + s[len(s)-100:]
	}
	return op + s
}

// unwrapIn unwraps the data key through region alone (explicit: the user chose it with --region;
// otherwise, in the sealing region the header's own wrap serves) and checks its commitment. The
// region's wraps are tried in chooseWrap's order (its record's, then the header's): a wrap that
// does not open or fails the commitment falls back to the next, said on stderr (onFallback). A
// region that is out fails at once, for the fall-over to move on.
func (rd *readers) unwrapIn(ctx context.Context, region string, explicit bool) (*unwrapped, error) {
	choose := region
	if !explicit && region == rd.hdr.HomeRegion {
		choose = "" // the sealing region: its header wrap, no table read
	}
	cliLog.Debug("open: trying region", zap.String("region", region), zap.String("record", rd.hdr.RecordID()))
	r, wraps, err := chooseWrap(ctx, rd.cfg, rd.hdr, choose, rd.anyKey)
	if err != nil {
		return nil, err
	}
	if len(wraps) == 0 {
		w := rd.hdr.Wrap()
		w.Source = "header"
		wraps = []*envelope.Wrap{w}
	}
	var failed []error
	for _, w := range wraps {
		cliLog.Debug("open: KMS Decrypt", zap.String("region", r.Name), zap.String("key_arn", w.KeyARN), zap.String("wrap", w.Source), zap.String("record", rd.hdr.RecordID()))
		dek, err := rd.unwrapChecked(ctx, r, w)
		if err == nil {
			if len(failed) > 0 && rd.onFallback != nil {
				rd.onFallback(r.Name, wraps[0], failed[0], w)
			}
			return &unwrapped{dek: dek, region: r.Name, wrap: w}, nil
		}
		failed = append(failed, err)
		if regions.IsOutage(err) || ctx.Err() != nil {
			break
		}
	}
	return nil, failed[0]
}

// unwrapChecked unwraps one wrap through r and checks the key commitment.
func (rd *readers) unwrapChecked(ctx context.Context, r *regions.Region, w *envelope.Wrap) ([]byte, error) {
	dek, err := r.Unwrap(ctx, w.Wrapped, w.KeyARN, rd.hdr.Context)
	if err != nil {
		return nil, &envelope.KeyError{Op: "unwrap", ID: rd.hdr.RecordID(), Region: r.Name, KeyARN: w.KeyARN, Err: err}
	}
	if err := envelope.VerifyCommitment(dek, rd.hdr); err != nil {
		envelope.Wipe(dek)
		return nil, &envelope.KeyError{Op: "unwrap", ID: rd.hdr.RecordID(), Region: r.Name, KeyARN: w.KeyARN, Err: err}
	}
	return dek, nil
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
	return nil, nil, fmt.Errorf("region %s: record %s: %w (%s), and the header's key %s is not a multi-Region key with a replica here",
		region, id, errNoWrapHere, why, hdr.KeyARN)
}

// errNoWrapHere: a region holds no wrap of the data key (yet); open falls over from it.
var errNoWrapHere = errors.New("no wrap of the data key for this region")
