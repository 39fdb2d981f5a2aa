package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/recovery"
	"github.com/envdr/envdr/regions"
)

// reportWriter is a drill or game-day report: its three formats.
type reportWriter interface {
	WriteFiles(path string) ([]string, error)
	WriteMarkdown(io.Writer) error
	WriteHTML(io.Writer) error
	WriteJSON(io.Writer) error
}

// reportRegion is the region whose S3 endpoint writes a report to bucket: the bucket's own region
// unless it is avoid (the region a drill or game day loses), else the first other region in seal
// order. A drill never contacts the region it loses, not even to file its report.
func reportRegion(cfg *config.Config, bucket, avoid string) string {
	if r := uploadRegion(cfg, bucket); r != avoid {
		return r
	}
	for _, n := range cfg.SealOrder() {
		if n != avoid {
			return n
		}
	}
	return cfg.HomeRegion
}

// reportPart is one object of a report filed on S3: its key, content type and body.
type reportPart struct {
	key, ctype string
	write      func(io.Writer) error
}

// reportParts are the objects a --report s3://bucket/prefix writes for rep, JSON first (it sets
// the digest the others show); for rep nil (verify, which writes JSON alone) the JSON js.
func reportParts(prefix string, rep reportWriter, js []byte) []reportPart {
	md, html, jsKey := recovery.ReportPaths(prefix)
	if rep == nil {
		return []reportPart{{jsKey, "application/json", func(w io.Writer) error { _, err := w.Write(js); return err }}}
	}
	return []reportPart{{jsKey, "application/json", rep.WriteJSON}, {md, "text/markdown; charset=utf-8", rep.WriteMarkdown}, {html, "text/html; charset=utf-8", rep.WriteHTML}}
}

// checkReportTarget refuses, before a drill or game day starts, a --report whose files exist:
// PATH.md, PATH.html or PATH.json on disk, or, for --report s3://bucket/prefix, the objects
// prefix.md, prefix.html and prefix.json (HEAD through reportRegion); --force lifts it.
// jsonOnly (verify and merged verify reports) looks for PATH.json alone.
func checkReportTarget(ctx context.Context, cfg *config.Config, report string, force bool, cmd, avoid string, jsonOnly bool) error {
	if !regions.IsS3URI(report) {
		return checkReportPaths(report, force, cmd, jsonOnly)
	}
	u, err := regions.ParseS3URI(report)
	if err != nil {
		return usageError("--report: %v", err)
	}
	if force {
		return nil
	}
	r, err := onlyRegion(ctx, cfg, reportRegion(cfg, u.Bucket, avoid), false)
	if err != nil {
		return err
	}
	md, html, js := recovery.ReportPaths(u.Key)
	keys := []string{md, html, js}
	if jsonOnly {
		keys = []string{js}
	}
	for _, k := range keys {
		exists, err := r.Exists(ctx, u.Bucket, k)
		if err != nil && regions.IsAccessDenied(err) {
			// A role that may only write reports cannot look (S3 answers 403 without
			// s3:ListBucket); the conditional PUTs still refuse an existing report on S3.
			return nil
		}
		if err != nil {
			return fmt.Errorf("--report %s: %w", report, err)
		}
		if exists {
			return usageError("report object s3://%s/%s exists: refusing to overwrite it; choose another --report, or --force (see %s --help)", u.Bucket, k, cmd)
		}
	}
	return nil
}

// writeReport writes rep's three formats to report: files, or objects under s3://bucket/prefix
// (each a conditional PUT unless force, JSON first: it sets the digest the others show). It
// returns where they went.
func writeReport(ctx context.Context, cfg *config.Config, report string, force bool, avoid string, rep reportWriter) ([]string, error) {
	if !regions.IsS3URI(report) {
		return rep.WriteFiles(report)
	}
	return putReport(ctx, cfg, report, force, avoid, rep, nil)
}

// writeVerifyReport writes a verify report's JSON js to report: PATH.json, or the object
// prefix.json under s3://bucket/prefix (a conditional PUT unless force). It returns where.
func writeVerifyReport(ctx context.Context, cfg *config.Config, report string, force bool, js []byte) (string, error) {
	if !regions.IsS3URI(report) {
		return recovery.WriteVerifyReport(report, js)
	}
	out, err := putReport(ctx, cfg, report, force, "", nil, js)
	if err != nil {
		return "", err
	}
	return out[0], nil
}

// putReport files a report's parts (reportParts) under s3://bucket/prefix through the bucket's
// region (reportRegion, never avoid).
func putReport(ctx context.Context, cfg *config.Config, report string, force bool, avoid string, rep reportWriter, js []byte) ([]string, error) {
	u, err := regions.ParseS3URI(report)
	if err != nil {
		return nil, usageError("--report: %v", err)
	}
	r, err := onlyRegion(ctx, cfg, reportRegion(cfg, u.Bucket, avoid), false)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range reportParts(u.Key, rep, js) {
		var buf bytes.Buffer
		if err := f.write(&buf); err != nil {
			return out, fmt.Errorf("report s3://%s/%s: %w", u.Bucket, f.key, err)
		}
		if err := r.Upload(ctx, u.Bucket, f.key, &buf, regions.UploadOptions{Overwrite: force, ContentType: f.ctype}); err != nil {
			return out, fmt.Errorf("report: %w", err)
		}
		out = append(out, "s3://"+u.Bucket+"/"+f.key)
	}
	return out, nil
}

// maxReportSize bounds what reportFiles.read reads: a report is kilobytes to megabytes (failures
// are listed one by one); anything far larger is not a report.
const maxReportSize = 256 << 20

// reportFiles reads reports from files or s3:// objects; it opens a bucket's region once, from
// the --config, when it first meets an s3:// path.
type reportFiles struct {
	cfg     *config.Config
	regions map[string]*regions.Region // bucket -> the region that reads it
	// denied: S3 answered a presence check 403 AccessDenied (missing, or not readable).
	denied bool
}

// read reads a report's JSON from a file or, for s3://bucket/key, from the bucket through its
// region (the config's regions[].bucket; else the home region).
func (f *reportFiles) read(ctx context.Context, path string) ([]byte, error) {
	if !regions.IsS3URI(path) {
		return os.ReadFile(path)
	}
	r, u, err := f.region(ctx, path)
	if err != nil {
		return nil, err
	}
	obj, err := r.GetObject(ctx, u.Bucket, u.Key, "")
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	defer obj.Body.Close()
	b, err := io.ReadAll(io.LimitReader(obj.Body, maxReportSize+1))
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	if len(b) > maxReportSize {
		return nil, fmt.Errorf("report %s: larger than %d MiB, not a report", path, maxReportSize>>20)
	}
	return b, nil
}

// present reports whether a report file or s3:// object exists (merge --wait).
func (f *reportFiles) present(ctx context.Context, path string) (bool, error) {
	if !regions.IsS3URI(path) {
		_, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return err == nil, err
	}
	r, u, err := f.region(ctx, path)
	if err != nil {
		return false, err
	}
	ok, err := r.Exists(ctx, u.Bucket, u.Key)
	if err != nil && regions.IsAccessDenied(err) {
		// Without s3:ListBucket, S3 answers a missing object 403, not 404: a shard still
		// running looks like that. Wait on; the message at the end says it was 403.
		f.denied = true
		return false, nil
	}
	return ok, err
}

// config is the --config, loaded once.
func (f *reportFiles) config() (*config.Config, error) {
	if f.cfg == nil {
		cfg, err := loadConfig()
		if err != nil {
			return nil, err
		}
		f.cfg = cfg
	}
	return f.cfg, nil
}

func (f *reportFiles) region(ctx context.Context, path string) (*regions.Region, regions.S3URI, error) {
	u, err := regions.ParseS3URI(path)
	if err != nil {
		return nil, u, usageError("%v", err)
	}
	if r, ok := f.regions[u.Bucket]; ok {
		return r, u, nil
	}
	cfg, err := f.config()
	if err != nil {
		return nil, u, err
	}
	r, err := onlyRegion(ctx, cfg, reportRegion(cfg, u.Bucket, ""), false)
	if err != nil {
		return nil, u, err
	}
	if f.regions == nil {
		f.regions = map[string]*regions.Region{}
	}
	f.regions[u.Bucket] = r
	return r, u, nil
}

// readFailure is err as a failure (exit 1), unless it already carries its exit code (a bad
// s3:// URI or --config is a usage error, exit 2).
func readFailure(err error) error {
	var e *exitError
	if errors.As(err, &e) {
		return err
	}
	return withCode(exitFailure, err)
}
