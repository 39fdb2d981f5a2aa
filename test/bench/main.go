// Command envdr-bench is the engine of `make bench` (scripts/bench.sh orchestrates; see
// docs/BENCH.md). It has three subcommands:
//
//	envdr-bench measure --label L --bytes N --out FILE -- CMD ARGS...
//	    run CMD as a child and append one JSON line to FILE: wall time, user and system CPU, peak
//	    RSS (the child's rusage; no /usr/bin/time needed) and the exit status.
//	envdr-bench replicate --envdr bin/envdr --n 2000 [--throttle 200] --out FILE
//	    start an isolated three-region stand-in in this process (its own KMS, endpoints, queue,
//	    DLQ and table, in front of the SQS and DynamoDB backends found through local/backends.json
//	    or ENVDR_LOCAL_BACKENDS: scripts/bench.sh points it at its private stand-in), seal
//	    and enqueue N envelopes, run `envdr run --drain` as a child process against it, and
//	    measure events/s, KMS calls per envelope, daemon CPU per envelope; then check every
//	    record in every region and the DLQ.
//	envdr-bench summary --dir .bench
//	    read what the steps above wrote and print the summary table (also to DIR/summary.txt).
//	envdr-bench slo --envdr bin/envdr --n 10000 --rate 25 --dir .bench
//	    the decryptability SLO (make slo-bench): per-envelope protection times under a steady
//	    offered load with 1 s of replication lag, with the KMS throttled below the load, and
//	    with a region lost and restored; exact quantiles next to envdr_protection_seconds's.
//	    --cases lag,scrub: the lag case with and without the daemon's scrubber spending its
//	    budget (scrub: {budget: 5%}), and the ratio of their quantiles.
//
// Timings live here, in a benchmark program, never in tests.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "measure":
		err = runMeasure(os.Args[2:])
	case "replicate":
		err = runReplicate(os.Args[2:])
	case "summary":
		err = runSummary(os.Args[2:])
	case "slo":
		err = runSLO(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "envdr-bench: unknown subcommand %q\n", os.Args[1])
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "envdr-bench: error: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  envdr-bench measure --label L [--bytes N] --out FILE -- CMD ARGS...
  envdr-bench replicate --envdr bin/envdr [--n 2000] [--throttle RPS] [--concurrency C] --out FILE
  envdr-bench summary [--dir .bench] [--short] [--strict]
  envdr-bench slo --envdr bin/envdr [--n 10000] [--rate 25] [--cases lag,quota,loss,scrub] [--dir .bench]
`)
	os.Exit(2)
}
