#!/usr/bin/env bash
# make demo: the whole job end to end on the local three-region stand-in.
#   1. bring the stand-in up (us-east-1, eu-west-1, ap-southeast-2)
#   2. start a replicator daemon in every region (envdr run --region R)
#   3. seal DEMO_FILES sample files in us-east-1 with --enqueue; wait until every queue drains;
#      print a per-region summary and the KMS calls
#   4. lose eu-west-1 and open every file through each surviving region alone
#   5. restore eu-west-1 and open through it again
#   6. lose the home region us-east-1: seal on (seal falls over by itself), open what was sealed
#      during the outage in each surviving region alone; then plain `envdr open` without
#      --region (it falls over too, naming the region that served), status and verify, which
#      say what they skipped; restore it
#   7. a game day: keep sealing while us-east-1 is lost; RPO, RTO and catch-up in a report
#   and tear down (if this script started the stand-in)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${DEMO_FILES:-200}"
CFG=local/envdr.yaml
E="bin/envdr --config $CFG"
# Each role on its own credentials, as deployed: the stand-in's profiles (local/credentials)
# carry the IAM policies `envdr policy render` generates, and every call is authorized.
export AWS_SHARED_CREDENTIALS_FILE=local/credentials
PRODUCER="env AWS_PROFILE=envdr-producer $E"
DAEMON="env AWS_PROFILE=envdr-daemon $E"
OPERATOR="env AWS_PROFILE=envdr-operator $E"
DIR=local/demo
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

started=0
if ! bin/envdr local ready >/dev/null 2>&1; then started=1; fi
daemons=()
cleanup() {
  for p in "${daemons[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${daemons[@]}"; do wait "$p" 2>/dev/null || true; done
  bin/envdr local up eu-west-1 >/dev/null 2>&1 || true
  bin/envdr local up us-east-1 >/dev/null 2>&1 || true
  if [[ $started == 1 ]]; then make -s local-down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
REGIONS="us-east-1 eu-west-1 ap-southeast-2"
# queued prints the events still in every region's queue (visible, in flight, delayed).
queued() {
  local n=0 r q
  for r in $REGIONS; do
    q=$($OPERATOR status --region "$r" --json --quiet 2>/dev/null | awk -F': ' '/"queued"/{gsub(/,/,"",$2); print $2}')
    n=$((n + ${q:-1}))
  done
  echo "$n"
}
wait_drained() { local i; for i in $(seq 1 600); do [[ $(queued) == 0 ]] && return 0; sleep 0.5; done; echo "queues did not drain" >&2; return 1; }

say "1. local three-region AWS stand-in"
make -s build
make -s local-up
$E local status
rm -rf "$DIR" && mkdir -p "$DIR/in" "$DIR/sealed" "$DIR/out"

say "2. as envdr-daemon: envdr run --region R in every region, one replicator daemon per region, each on its own queue and table replica"
for r in $REGIONS; do
  $DAEMON run --region "$r" --wait-time 1s --admin-addr 127.0.0.1:0 --log-level warn 2>"$DIR/daemon-$r.log" &
  daemons+=($!)
done
sleep 1
echo "daemons running: ${#daemons[@]} (logs in $DIR/daemon-*.log)"

say "3. as envdr-producer: seal $N sample files in us-east-1 (GenerateDataKey) with --enqueue; the daemons wrap every data key everywhere and verify each region alone"
$E local counters --reset >/dev/null
for i in $(seq -w 1 "$N"); do
  head -c $((1024 + RANDOM % 8192)) /dev/urandom >"$DIR/in/sample-$i.bin"
done
t0=$(date +%s.%N)
ls "$DIR/in" | xargs -P 4 -I{} $PRODUCER seal --enqueue --context app=demo --context file={} "$DIR/in/{}" "$DIR/sealed/{}.envdr" >/dev/null
t1=$(date +%s.%N)
printf 'sealed %d files in %.1fs\n' "$N" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"
$E inspect "$DIR/sealed/sample-$(printf "%0${#N}d" 1).bin.envdr" | head -12
wait_drained
t2=$(date +%s.%N)
printf 'every queue drained %.1fs after the first seal (the copies in the next region'"'"'s queue are delayed 2s, then acknowledged without KMS calls)\n' "$(awk -v a="$t0" -v b="$t2" 'BEGIN{print b-a}')"
$OPERATOR status --quiet
echo
echo "KMS calls during replication (the stand-in's counters):"
$E local counters

say "4. lose eu-west-1, then open every file through each surviving region alone (as envdr-operator)"
$E local down eu-west-1
if $OPERATOR open --region eu-west-1 "$DIR/sealed/$(ls "$DIR/sealed" | head -1)" "$DIR/out/should-not-exist" 2>"$DIR/err.txt"; then
  echo "unexpected: eu-west-1 answered while down" >&2; exit 1
fi
echo "as expected, eu-west-1 is gone: $(cat "$DIR/err.txt")"
for region in us-east-1 ap-southeast-2; do
  rm -rf "$DIR/out" && mkdir -p "$DIR/out"
  ls "$DIR/in" | xargs -P 4 -I{} $OPERATOR open --region "$region" "$DIR/sealed/{}.envdr" "$DIR/out/{}"
  ok=0
  for f in "$DIR"/in/*; do cmp -s "$f" "$DIR/out/$(basename "$f")" && ok=$((ok + 1)); done
  echo "$region alone: opened $ok/$N files, byte-identical to the originals"
  [[ $ok == "$N" ]]
done

say "5. restore eu-west-1"
$E local up eu-west-1
rm -rf "$DIR/out" && mkdir -p "$DIR/out"
ls "$DIR/in" | head -20 | xargs -P 4 -I{} $OPERATOR open --region eu-west-1 "$DIR/sealed/{}.envdr" "$DIR/out/{}"
echo "eu-west-1 alone: opened $(ls "$DIR/out" | wc -l)/20 files after it came back"

say "6. lose the home region us-east-1 and keep sealing: seal falls over to the next region by itself"
$E local down us-east-1
rm -rf "$DIR/in2" "$DIR/sealed2" && mkdir -p "$DIR/in2" "$DIR/sealed2"
for i in $(seq -w 1 20); do head -c $((1024 + RANDOM % 4096)) /dev/urandom >"$DIR/in2/outage-$i.bin"; done
$PRODUCER seal --enqueue --context app=demo "$DIR/in2/outage-01.bin" "$DIR/sealed2/outage-01.bin.envdr" >/dev/null
ls "$DIR/in2" | tail -n +2 | xargs -P 4 -I{} $PRODUCER seal --enqueue --context app=demo "$DIR/in2/{}" "$DIR/sealed2/{}.envdr" >/dev/null 2>&1
echo "sealed 20 files while us-east-1 was down; their header says: $($E inspect "$DIR/sealed2/outage-01.bin.envdr" 2>/dev/null | grep home_region | tr -d ' ,')"
for region in eu-west-1 ap-southeast-2; do
  ok=0
  for i in $(seq 1 120); do
    rm -rf "$DIR/out" && mkdir -p "$DIR/out"
    ls "$DIR/in2" | xargs -P 4 -I{} sh -c "$OPERATOR open --region $region $DIR/sealed2/{}.envdr $DIR/out/{} 2>/dev/null" || true
    ok=0
    for f in "$DIR"/in2/*; do cmp -s "$f" "$DIR/out/$(basename "$f")" && ok=$((ok + 1)); done
    [[ $ok == 20 ]] && break
    sleep 0.5
  done
  echo "$region alone, with us-east-1 down: opened $ok/20 files sealed during the outage"
  [[ $ok == 20 ]]
done
echo
echo "plain envdr open, no --region, with us-east-1 down: the sealing region first, then seal order"
first=$(ls "$DIR/in" | head -1)
rm -rf "$DIR/out" && mkdir -p "$DIR/out"
echo "\$ envdr open sealed/$first.envdr out/$first        # sealed in us-east-1 before the outage"
$OPERATOR open --region-timeout 2s "$DIR/sealed/$first.envdr" "$DIR/out/$first"
cmp "$DIR/in/$first" "$DIR/out/$first"
echo "\$ envdr open sealed2/outage-01.bin.envdr out/outage-01.bin   # sealed in eu-west-1 during it"
$OPERATOR open --region-timeout 2s "$DIR/sealed2/outage-01.bin.envdr" "$DIR/out/outage-01.bin"
cmp "$DIR/in2/outage-01.bin" "$DIR/out/outage-01.bin"
echo "\$ envdr status    # reads the first table replica that answers"
$OPERATOR status --quiet --region-timeout 2s
echo "\$ envdr verify --no-write    # skips the lost region, checks the others"
$OPERATOR verify --quiet --no-write --region-timeout 2s
$E local up us-east-1
wait_drained
echo "us-east-1 restored; every queue drained: the outage's files are wrapped and verified in us-east-1 too"

say "7. game day: keep sealing while us-east-1 is lost; measure RPO, RTO and the catch-up"
# The game day seals (a producer's rights) and proves each region opens alone (an operator's):
# it runs as its own role, envdr-gameday (the admin manages the keys but may not use them).
# --objects: what it seals during the loss goes into the sealing region's bucket with no event
# (the S3 data path): only the buckets' notifications and the S3 event source protect it.
env AWS_PROFILE=envdr-gameday $E gameday --lose us-east-1 --before 3s --during 8s --rate 4 --objects --report "$DIR/gameday"
say "demo complete"
