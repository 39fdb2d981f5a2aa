package main

import (
	"bytes"
	"context"
	"fmt"
	"io"

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

// checkReportTarget refuses, before a drill or game day starts, a --report whose files exist:
// PATH.md, PATH.html or PATH.json on disk, or, for --report s3://bucket/prefix, the objects
// prefix.md, prefix.html and prefix.json (HEAD through reportRegion); --force lifts it.
func checkReportTarget(ctx context.Context, cfg *config.Config, report string, force bool, cmd, avoid string) error {
	if !regions.IsS3URI(report) {
		return checkReportPaths(report, force, cmd)
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
	for _, k := range []string{md, html, js} {
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
	u, err := regions.ParseS3URI(report)
	if err != nil {
		return nil, usageError("--report: %v", err)
	}
	r, err := onlyRegion(ctx, cfg, reportRegion(cfg, u.Bucket, avoid), false)
	if err != nil {
		return nil, err
	}
	md, html, js := recovery.ReportPaths(u.Key)
	var out []string
	for _, f := range []struct {
		key, ctype string
		write      func(io.Writer) error
	}{{js, "application/json", rep.WriteJSON}, {md, "text/markdown; charset=utf-8", rep.WriteMarkdown}, {html, "text/html; charset=utf-8", rep.WriteHTML}} {
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
