#!/usr/bin/env bash
# make demo: the whole job end to end on the local three-region stand-in.
#   1. bring the stand-in up (us-east-1, eu-west-1, ap-southeast-2)
#   2. seal DEMO_FILES sample files in us-east-1 with --enqueue
#   3. run the replicator until the queue drains; print a per-region summary
#   4. lose eu-west-1 and open every file through each surviving region alone
#   5. restore eu-west-1, open through it again, and tear down (if this script started the stand-in)
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
cleanup() {
  bin/envdr local up eu-west-1 >/dev/null 2>&1 || true
  if [[ $started == 1 ]]; then make -s local-down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

say "1. local three-region AWS stand-in"
make -s build
make -s local-up
$E local status

say "2. as envdr-producer: seal $N sample files in us-east-1 (GenerateDataKey) and enqueue their replication events"
rm -rf "$DIR" && mkdir -p "$DIR/in" "$DIR/sealed" "$DIR/out"
for i in $(seq -w 1 "$N"); do
  head -c $((1024 + RANDOM % 8192)) /dev/urandom >"$DIR/in/sample-$i.bin"
done
t0=$(date +%s.%N)
ls "$DIR/in" | xargs -P 4 -I{} $PRODUCER seal --enqueue --context app=demo --context file={} "$DIR/in/{}" "$DIR/sealed/{}.envdr" >/dev/null
t1=$(date +%s.%N)
printf 'sealed %d files in %.1fs\n' "$N" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"
$E inspect "$DIR/sealed/sample-$(printf "%0${#N}d" 1).bin.envdr" | head -12

say "3. envdr run as envdr-daemon: wrap every data key in every region, verify each region alone, until the queue drains"
$E local counters --reset >/dev/null
t0=$(date +%s.%N)
$DAEMON run --drain --wait-time 1s --admin-addr 127.0.0.1:0 --log-level warn
t1=$(date +%s.%N)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')
printf 'daemon drained the queue in %.1fs (%.0f events/s, including start-up)\n' "$secs" "$(awk -v n="$N" -v s="$secs" 'BEGIN{print n/s}')"
$OPERATOR status
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
say "demo complete"
