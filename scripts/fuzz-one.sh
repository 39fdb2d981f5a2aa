#!/usr/bin/env bash
# fuzz-one.sh PKG TARGET FUZZTIME MINIMIZETIME: one fuzz run of TARGET that fails on a finding.
#
# Go's fuzzing coordinator can end a duration-bounded run with a bare "context deadline exceeded"
# when -fuzztime expires while a worker is still busy (a race in the toolchain, golang/go#75804
# and #51484): no input is written and nothing reproduces. Such a run is tried once more; any
# failure that wrote an input, printed a panic or a test error, or happens twice, fails.
set -uo pipefail
pkg=$1 target=$2 fuzztime=$3 minimize=$4
GO=${GO:-go}
dir="$pkg/testdata/fuzz/$target"
for try in 1 2; do
  before=$(ls "$dir" 2>/dev/null | wc -l)
  out=$($GO test "./$pkg/" -run '^$' -fuzz "^$target\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" 2>&1) && {
    echo "$out" | grep -E '^fuzz: elapsed' | tail -n 1
    exit 0
  }
  after=$(ls "$dir" 2>/dev/null | wc -l)
  if [[ $try == 1 && $after == "$before" ]] && grep -q 'context deadline exceeded' <<<"$out" &&
    ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' <<<"$out"; then
    echo "$target: the run ended on the fuzzing coordinator's deadline race (no input written; golang/go#75804); trying once more"
    continue
  fi
  echo "$out"
  echo "$pkg $target failed; the input (if any) is in $dir/"
  exit 1
done
