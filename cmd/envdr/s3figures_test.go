//go:build unix

package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/envdr/envdr/internal/loadavg"
	"github.com/envdr/envdr/internal/s3fixture"
	"github.com/envdr/envdr/localaws/iam"
	"github.com/envdr/envdr/localaws/localtest"
)

// TestS3Figures measures (make s3-figures; skipped otherwise) seal to s3:// and open from s3://
// against `aws s3 cp` of the same envelope bytes up and down, on the same stand-in, for
// docs/BENCH.md.
func TestS3Figures(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("ENVDR_S3_FIGURES_MIB"))
	if mib <= 0 {
		t.Skip("figures: set ENVDR_S3_FIGURES_MIB (make s3-figures)")
	}
	aws, err := exec.LookPath("aws")
	require.NoError(t, err, "the figures compare against the aws CLI (aws s3 cp)")
	// The stand-in's own S3 (SigV4, IAM, notifications, replication), as make s3-demo uses.
	env := localtest.NewWith(t, localtest.Options{S3: true})
	s3f := s3fixture.New(t, env)
	roles := newRoleConfigs(t, env, nil)
	envdr := func(args ...string) (string, string, int) {
		return runSplit(t, append([]string{"--config", roles.path(args...)}, args...)...)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.bin")
	f, err := os.Create(in)
	require.NoError(t, err)
	_, err = io.CopyN(f, zeroReader{}, int64(mib)<<20)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	bucket := s3f.Bucket("us-east-1")
	rc, _ := env.Config.Region("us-east-1")
	mbps := func(d time.Duration) float64 { return float64(mib) * (1 << 20) / 1e6 / d.Seconds() }
	mbpsCPU := func(d time.Duration) float64 { return float64(mib) * (1 << 20) / 1e6 / d.Seconds() }
	var awsCPU time.Duration
	// awsCp runs aws s3 cp as role: the producer uploads, the operator downloads (the rendered
	// roles: a producer may not read).
	awsCp := func(role string, args ...string) time.Duration {
		id, ok := env.IAM.Identity(role)
		require.True(t, ok, role)
		cmd := exec.Command(aws, append([]string{"--endpoint-url", rc.Endpoints.S3, "--region", "us-east-1", "s3", "cp", "--only-show-errors"}, args...)...)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "AWS_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "AWS_ACCESS_KEY_ID="+id.AccessKey, "AWS_SECRET_ACCESS_KEY="+id.SecretKey)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		awsCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		return time.Since(start)
	}
	for round := 0; round < 3; round++ {
		key := fmt.Sprintf("fig/%d.envdr", round)
		// The machine is shared: wall time says little, so the CPU time each side spent is
		// given too (this process's getrusage around the in-process envdr run, the aws
		// process's own).
		cpu0 := selfCPU()
		start := time.Now()
		_, stderr, code := envdr("seal", in, "s3://"+bucket+"/"+key)
		require.Equal(t, exitOK, code, stderr)
		seal, sealCPU := time.Since(start), selfCPU()-cpu0
		out := filepath.Join(dir, fmt.Sprintf("out-%d", round))
		cpu0 = selfCPU()
		start = time.Now()
		_, stderr, code = envdr("open", "s3://"+bucket+"/"+key, out)
		require.Equal(t, exitOK, code, stderr)
		open, openCPU := time.Since(start), selfCPU()-cpu0
		env := filepath.Join(dir, fmt.Sprintf("env-%d", round))
		down := awsCp(iam.RoleOperator, "s3://"+bucket+"/"+key, env) // the same envelope bytes, down ...
		downCPU := awsCPU
		up := awsCp(iam.RoleProducer, env, "s3://"+bucket+"/cp-"+key) // ... and up again
		t.Logf("round %d, %d MiB (%s): wall MB/s: envdr seal to s3:// %.0f, open from s3:// %.0f; aws s3 cp up %.0f, down %.0f. "+
			"MB per CPU-second: envdr seal %.0f, open %.0f; aws s3 cp up %.0f, down %.0f",
			round, mib, loadavg.String(), mbps(seal), mbps(open), mbps(up), mbps(down),
			mbpsCPU(sealCPU), mbpsCPU(openCPU), mbpsCPU(awsCPU), mbpsCPU(downCPU))
		require.NoError(t, os.Remove(out))
		require.NoError(t, os.Remove(env))
	}
}

// selfCPU is the CPU time (user and system) this process has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
