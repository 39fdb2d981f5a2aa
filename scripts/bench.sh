#!/usr/bin/env bash
# make bench / make bench-short: envdr's figures, measured side by side in one run (docs/BENCH.md).
#   1. envelope library vs raw AES-256-GCM   (go test -bench ./envelope/)
#   2. envdr seal/open vs age on one file      (512 MiB, to a pipe and to /dev/null; wall, CPU and peak
#                                              RSS via envdr-bench measure), and durable to a file vs
#                                              dd bs=4M conv=fsync of the same bytes
#   3. the replicator as a process             (2,000 envelopes, unthrottled and KMS limited to 200 req/s
#                                              with kms_rate 200); many daemons, one quota: 1, 2, 3
#                                              processes on one queue against KMS throttled at Q = 300
#                                              (and 60) req/s, kms_rate left unset; KMS calls per
#                                              envelope of each mode (mrk reencrypt / shared,
#                                              independent, verify sample:10%)
#   4. the decryptability SLO                (10,000 envelopes sealed at a steady 25/s in each of three
#                                              cases: 1 s replication lag with 500 ms jitter; KMS throttled
#                                              below the offered load; a region lost and restored; exact
#                                              per-envelope p50..p99.99 and max next to the daemon's
#                                              envdr_protection_seconds; envdr-bench slo; with
#                                              BENCH_SLO_CASES=lag,scrub also the lag case with the
#                                              daemon's scrubber at a 5% budget, and the ratio)
# then prints the summary table and writes it to $BENCH_DIR/summary.txt (the SLO's to slo.txt).
# BENCH_SHORT=1: tiny sizes (~1 minute), exercises the whole harness; figures are not meaningful.
# BENCH_ONLY=slo (make slo-bench): section 4 alone. BENCH_SKIP_SLO=1: without section 4.
# Orchestration only; the measuring is done by test/bench (bin/envdr-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

SHORT="${BENCH_SHORT:-0}"
AGE_VERSION="${AGE_VERSION:-v1.2.1}"
THROTTLE="${BENCH_THROTTLE:-200}"
QUOTA_PROCS="${BENCH_QUOTA_PROCS:-1 2 3}" # the curve: daemon processes on one queue
SAMPLE="${BENCH_VERIFY_SAMPLE:-10}"       # verify: sample:SAMPLE% among the modes
if [[ "$SHORT" == 1 ]]; then
  DIR="${BENCH_DIR:-.bench/short}"
  FILE_MIB="${BENCH_FILE_MIB:-16}"
  REPEAT="${BENCH_REPEAT:-1}"
  N="${BENCH_ENVELOPES:-100}"
  GOBENCH_FLAGS="${BENCH_GOFLAGS:--benchtime 20x -count 1}"
  TIMEOUT="${BENCH_REPLICATE_TIMEOUT:-3m}"
  QUOTAS="${BENCH_QUOTA_Q:-300}"
  QUOTA_N="${BENCH_QUOTA_ENVELOPES:-$N}"
  MODES_N="${BENCH_MODES_ENVELOPES:-30}"
  SLO_N="${BENCH_SLO_ENVELOPES:-300}"
  SLO_LOSS_FOR="${BENCH_SLO_LOSS_FOR:-10s}"
else
  DIR="${BENCH_DIR:-.bench}"
  FILE_MIB="${BENCH_FILE_MIB:-512}"
  REPEAT="${BENCH_REPEAT:-5}"
  N="${BENCH_ENVELOPES:-2000}"
  GOBENCH_FLAGS="${BENCH_GOFLAGS:--benchtime 1s -count 3}"
  TIMEOUT="${BENCH_REPLICATE_TIMEOUT:-20m}"
  # The curve at each quota: 300 req/s, where on a small machine the daemons' CPU may bound the
  # rate before the quota does, and a lower one (BENCH_QUOTA_LOW_Q, "" to skip) where the quota binds.
  QUOTAS="${BENCH_QUOTA_Q:-300} ${BENCH_QUOTA_LOW_Q-60}"
  QUOTA_N="${BENCH_QUOTA_ENVELOPES:-$N}"
  MODES_N="${BENCH_MODES_ENVELOPES:-300}"
  SLO_N="${BENCH_SLO_ENVELOPES:-10000}"
  SLO_LOSS_FOR="${BENCH_SLO_LOSS_FOR:-30s}"
fi
ONLY="${BENCH_ONLY:-}"
case "$ONLY" in "" | slo) ;; *) echo "bench: BENCH_ONLY=$ONLY: use slo or leave it unset" >&2; exit 2 ;; esac
SLO_RATE="${BENCH_SLO_RATE:-25}"
SLO_CASES="${BENCH_SLO_CASES:-lag,quota,loss}"
SLO_CONCURRENCY="${BENCH_SLO_CONCURRENCY:-128}"
read -r -a QUOTA_LIST <<<"$QUOTAS"
DATA=".bench/data-${FILE_MIB}MiB.bin" # shared by full and short runs; reused when present
TOOLS="${BENCH_TOOLS:-.tools/bin}" # where the pinned age is installed
ENVDR=bin/envdr
BENCH=bin/envdr-bench
LOCAL_PORT="${BENCH_LOCAL_BASE_PORT:-24760}"
failed=()

step() { printf '\n== bench: %s\n' "$*"; }

step "build"
go build -buildvcs=auto -o "$ENVDR" ./cmd/envdr
go build -buildvcs=auto -o bin/envdr-local ./cmd/envdr-local
go build -o "$BENCH" ./test/bench
if [[ $ONLY != slo ]] && [[ ! -x $TOOLS/age || ! -x $TOOLS/age-keygen || "$($TOOLS/age --version 2>/dev/null)" != "$AGE_VERSION" ]]; then
  echo "installing filippo.io/age/cmd/...@$AGE_VERSION into $TOOLS"
  mkdir -p "$TOOLS"
  GOBIN="$(cd "$TOOLS" && pwd)" go install "filippo.io/age/cmd/...@$AGE_VERSION"
fi
[[ $ONLY == slo ]] || echo "age $($TOOLS/age --version)"

step "private stand-in (.bench/local, base port $LOCAL_PORT; stopped at exit)"
# A stand-in of its own: the shared one (make local-up) is torn down and has regions lost by
# other users' tests and drills at any time. Same binary and backends, other ports and dir.
bash scripts/localaws-install.sh
LOCAL=.bench/local
ADMIN="http://127.0.0.1:$LOCAL_PORT"
stop_standin() {
  local pid
  pid="$(cat "$LOCAL/serve.pid" 2>/dev/null)" || return 0
  # Only our own serve, never a process that reused the pid.
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "envdr-local --dir $LOCAL"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$LOCAL/serve.pid"
}
W="$DIR/work"
cleanup() { rm -rf "$W"; stop_standin; }
trap cleanup EXIT
stop_standin # a leftover of an interrupted run
mkdir -p "$LOCAL"
SETSID=""
command -v setsid >/dev/null && SETSID=setsid
$SETSID bin/envdr-local --dir "$LOCAL" --base-port "$LOCAL_PORT" --tools .tools/localaws \
  >"$LOCAL/serve.log" 2>&1 </dev/null &
echo $! >"$LOCAL/serve.pid"
deadline=$((SECONDS + 120))
until "$ENVDR" local ready --admin "$ADMIN" >/dev/null 2>&1; do
  if ! kill -0 "$(cat "$LOCAL/serve.pid")" 2>/dev/null || ((SECONDS > deadline)); then
    echo "bench: the private stand-in did not come up; $LOCAL/serve.log:" >&2
    tail -n 20 "$LOCAL/serve.log" >&2
    exit 1
  fi
  sleep 0.2
done
CONFIG="$LOCAL/envdr.yaml"
# seal runs as the producer and open as the operator: the stand-in's keys carry the rendered
# key policies, which let the admin manage them but not use them.
export AWS_SHARED_CREDENTIALS_FILE="$LOCAL/credentials"
export ENVDR_LOCAL_BACKENDS="$LOCAL/backends.json"
echo "ready: $CONFIG"

mkdir -p "$DIR"
rm -f "$DIR"/{envelope-bench.txt,cli.jsonl,cli-check.txt,replicate.json,replicate.log,replicate-c16.json,replicate-c16.log,replicate.cpu.pprof,replicate-pprof.txt,replicate-throttled.json,replicate-throttled.log,summary.txt,summary.json}
rm -f "$DIR"/quota-q*-p*.{json,log} "$DIR"/mode-*.{json,log}
rm -f "$DIR"/slo.{json,txt} "$DIR"/slo-*.{json,log,csv}

if [[ $ONLY != slo ]]; then
# 1. Envelope library.
step "1/3 envelope library: go test -run '^\$' -bench . -benchmem $GOBENCH_FLAGS ./envelope/"
# shellcheck disable=SC2086 # GOBENCH_FLAGS is a flag list
if ! go test -run '^$' -bench . -benchmem $GOBENCH_FLAGS ./envelope/ 2>&1 | tee "$DIR/envelope-bench.txt"; then
  failed+=("envelope benchmarks")
fi

# 2. CLI vs age and dd.
step "2/3 envdr seal/open vs age (to a pipe, to /dev/null) and, durable, vs dd conv=fsync, on ${FILE_MIB} MiB; $REPEAT round(s)"
if [[ ! -f $DATA || $(stat -c %s "$DATA") -ne $((FILE_MIB << 20)) ]]; then
  echo "generating $DATA"
  head -c "$((FILE_MIB << 20))" /dev/urandom >"$DATA.tmp" && mv "$DATA.tmp" "$DATA"
fi
BYTES=$(stat -c %s "$DATA")
KEY="$DIR/age.key"
[[ -f $KEY ]] || $TOOLS/age-keygen -o "$KEY" 2>/dev/null
RCPT=$($TOOLS/age-keygen -y "$KEY")
mkdir -p "$W"
cat "$DATA" >/dev/null # warm the page cache for everyone alike
round=0
measure() { "$BENCH" measure --out "$DIR/cli.jsonl" --bytes "$BYTES" --round "$round" --label "$@"; }
cli_ok=ok
# The inputs of the open runs, sealed once (untimed), and open's output checked once with cmp.
if env AWS_PROFILE=envdr-producer "$ENVDR" --config "$CONFIG" seal --context bench=cli "$DATA" "$W/data.envdr" >/dev/null &&
  env AWS_PROFILE=envdr-operator "$ENVDR" --config "$CONFIG" open "$W/data.envdr" "$W/data.envdr.out" && cmp "$DATA" "$W/data.envdr.out" &&
  env AWS_PROFILE=envdr-operator "$ENVDR" --config "$CONFIG" open --jobs 1 "$W/data.envdr" - | cmp - "$DATA" &&
  $TOOLS/age -r "$RCPT" -o "$W/data.age" "$DATA" && $TOOLS/age -d -i "$KEY" "$W/data.age" | cmp - "$DATA"; then :; else
  cli_ok="FAIL: sealing the inputs, or an output differing from the input (cmp)"
fi
rm -f "$W/data.envdr.out"
# Rounds: every command once per round, so each ratio can be taken within a round (the same
# machine load for both sides) as well as best against best.
#   pipe:      stdout is a pipe to cat (what a shell pipeline gives the tool); envdr with its
#              default --jobs (GOMAXPROCS) and with --jobs 1 (the sequential path); and
#              `cat FILE | cat`, the time the pipe itself takes to carry the bytes
#   /dev/null: the tools' own speed, as in earlier runs
#   durable:   envdr writes a file, fsyncs it, renames it into place and fsyncs the directory;
#              dd bs=4M conv=fsync copies the same bytes to a file and fsyncs it
for ((round = 1; round <= REPEAT; round++)); do
  echo "-- round $round of $REPEAT"
  measure cat-pipe -- cat "$DATA" | cat >/dev/null || cli_ok="FAIL: cat" # the pipe's own floor on this machine
  measure envdr-seal-pipe -- env AWS_PROFILE=envdr-producer "$ENVDR" --config "$CONFIG" seal --context bench=cli "$DATA" - | cat >/dev/null || cli_ok="FAIL: envdr seal"
  measure age-seal-pipe -- $TOOLS/age -r "$RCPT" "$DATA" | cat >/dev/null || cli_ok="FAIL: age seal"
  measure envdr-open-pipe -- env AWS_PROFILE=envdr-operator "$ENVDR" --config "$CONFIG" open "$W/data.envdr" - | cat >/dev/null || cli_ok="FAIL: envdr open"
  measure age-open-pipe -- $TOOLS/age -d -i "$KEY" "$W/data.age" | cat >/dev/null || cli_ok="FAIL: age open"
  measure envdr-seal-pipe-j1 -- env AWS_PROFILE=envdr-producer "$ENVDR" --config "$CONFIG" seal --jobs 1 --context bench=cli "$DATA" - | cat >/dev/null || cli_ok="FAIL: envdr seal --jobs 1"
  measure envdr-open-pipe-j1 -- env AWS_PROFILE=envdr-operator "$ENVDR" --config "$CONFIG" open --jobs 1 "$W/data.envdr" - | cat >/dev/null || cli_ok="FAIL: envdr open --jobs 1"
  measure envdr-seal -- env AWS_PROFILE=envdr-producer "$ENVDR" --config "$CONFIG" seal --context bench=cli "$DATA" - >/dev/null || cli_ok="FAIL: envdr seal"
  measure age-seal -- $TOOLS/age -r "$RCPT" "$DATA" >/dev/null || cli_ok="FAIL: age seal"
  measure envdr-open -- env AWS_PROFILE=envdr-operator "$ENVDR" --config "$CONFIG" open "$W/data.envdr" - >/dev/null || cli_ok="FAIL: envdr open"
  measure age-open -- $TOOLS/age -d -i "$KEY" "$W/data.age" >/dev/null || cli_ok="FAIL: age open"
  measure dd-fsync -- dd if="$DATA" of="$W/dd.out" bs=4M conv=fsync status=none || cli_ok="FAIL: dd"
  rm -f "$W/dd.out"
  measure envdr-seal-file -- env AWS_PROFILE=envdr-producer "$ENVDR" --config "$CONFIG" seal --context bench=cli "$DATA" "$W/seal.envdr" >/dev/null || cli_ok="FAIL: envdr seal to a file"
  rm -f "$W/seal.envdr"
  measure envdr-open-file -- env AWS_PROFILE=envdr-operator "$ENVDR" --config "$CONFIG" open "$W/data.envdr" "$W/open.out" || cli_ok="FAIL: envdr open to a file"
  rm -f "$W/open.out"
done
rm -rf "$W"
echo "$cli_ok" >"$DIR/cli-check.txt"
[[ $cli_ok == ok ]] || failed+=("CLI vs age and dd: $cli_ok")

# 3. Replicator.
if [[ "${BENCH_SKIP_REPLICATE:-0}" == 1 ]]; then
  echo "BENCH_SKIP_REPLICATE=1: section 3 left out" >&2
else
# The lean daemon (issue 14): CPU per envelope and events/s at concurrency 64 (the default) and
# 16, the first with a pprof CPU profile of the daemon (its top functions are printed here and
# kept in $DIR/replicate.cpu.pprof: go tool pprof bin/envdr $DIR/replicate.cpu.pprof).
step "3/3 replicator: $N envelopes, envdr run --drain as a process (unthrottled), concurrency ${BENCH_CONCURRENCY:-64}, CPU profile"
"$BENCH" replicate --envdr "$ENVDR" --n "$N" --timeout "$TIMEOUT" --concurrency "${BENCH_CONCURRENCY:-64}" \
  --cpu-profile "$DIR/replicate.cpu.pprof" --out "$DIR/replicate.json" || failed+=("replicator (unthrottled)")
if [[ -s $DIR/replicate.cpu.pprof ]]; then
  go tool pprof -top -nodecount=25 "$ENVDR" "$DIR/replicate.cpu.pprof" 2>/dev/null | tee "$DIR/replicate-pprof.txt" | sed -n '1,32p' || true
fi
step "3/3 replicator: $N envelopes, unthrottled, concurrency 16"
"$BENCH" replicate --envdr "$ENVDR" --n "$N" --timeout "$TIMEOUT" --concurrency 16 \
  --out "$DIR/replicate-c16.json" || failed+=("replicator (unthrottled, concurrency 16)")
step "3/3 replicator: $N envelopes, each region's KMS limited to $THROTTLE req/s, kms_rate $THROTTLE"
"$BENCH" replicate --envdr "$ENVDR" --n "$N" --timeout "$TIMEOUT" --throttle "$THROTTLE" ${BENCH_CONCURRENCY:+--concurrency "$BENCH_CONCURRENCY"} \
  --out "$DIR/replicate-throttled.json" || failed+=("replicator (throttled)")
# Many daemons, one quota: none is told its share (kms_rate left out of the config, so the
# default 1000 applies); every process's limiter has to find it.
for q in "${QUOTA_LIST[@]}"; do
  for p in $QUOTA_PROCS; do
    step "3/3 many daemons, one quota: $p process(es) on one queue, $QUOTA_N envelopes, KMS limited to $q req/s, kms_rate unset"
    "$BENCH" replicate --envdr "$ENVDR" --n "$QUOTA_N" --timeout "$TIMEOUT" --throttle "$q" --kms-rate default --procs "$p" \
      ${BENCH_CONCURRENCY:+--concurrency "$BENCH_CONCURRENCY"} --out "$DIR/quota-q$q-p$p.json" || failed+=("replicator ($p processes, Q=$q)")
  done
done
# KMS calls per envelope of each mode: short unthrottled runs (the counts do not depend on load).
modes=(
  "mrk-reencrypt --mode mrk --mrk-wrap reencrypt"
  "mrk-shared --mode mrk --mrk-wrap shared"
  "independent --mode independent"
  "sample$SAMPLE --mode mrk --mrk-wrap reencrypt --verify sample:$SAMPLE%"
)
for m in "${modes[@]}"; do
  read -r name flags <<<"$m"
  step "3/3 KMS calls per envelope, $name: $MODES_N envelopes, unthrottled"
  # shellcheck disable=SC2086 # flags is a flag list
  "$BENCH" replicate --envdr "$ENVDR" --n "$MODES_N" --timeout "$TIMEOUT" $flags --out "$DIR/mode-$name.json" ||
    failed+=("replicator (mode $name)")
done
fi

fi # sections 1-3

# 4. The decryptability SLO (issue 23): per-envelope protection times, exact and as the daemon's
# histogram says, in three cases, each on a fresh in-process stand-in.
if [[ "${BENCH_SKIP_SLO:-0}" == 1 ]]; then
  echo "BENCH_SKIP_SLO=1: section 4 left out" >&2
else
  step "4/4 decryptability SLO: $SLO_N envelopes at $SLO_RATE/s per case ($SLO_CASES), 1 s lag + 500 ms jitter, concurrency $SLO_CONCURRENCY; load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
  slo_start=$SECONDS
  "$BENCH" slo --envdr "$ENVDR" --n "$SLO_N" --rate "$SLO_RATE" --cases "$SLO_CASES" --concurrency "$SLO_CONCURRENCY" \
    --loss-for "$SLO_LOSS_FOR" --dir "$DIR" || failed+=("decryptability SLO")
  echo "(SLO: $((SECONDS - slo_start)) s; written to $DIR/slo.txt and $DIR/slo.json, per case slo-<case>.json, per envelope slo-<case>-envelopes.csv, daemon logs slo-<case>.log; load now $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"
fi

if [[ $ONLY != slo ]]; then
  SUMMARY_FLAGS=(--quota "${QUOTA_LIST[0]}")
  [[ "$SHORT" == 1 ]] && SUMMARY_FLAGS+=(--short)
  "$BENCH" summary --dir "$DIR" "${SUMMARY_FLAGS[@]}"
  echo "(written to $DIR/summary.txt and $DIR/summary.json; daemon logs in $DIR/replicate*.log)"
fi
if ((${#failed[@]})); then
  printf 'bench: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
