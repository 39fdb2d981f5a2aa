#!/usr/bin/env bash
# make local-down: stop the stand-in, bin/envdr-local (it stops fauxqs and DynamoDB Local; they also die
# with it through their parent-death signal). Idempotent: nothing running is fine.
set -euo pipefail
cd "$(dirname "$0")/.."
PIDF=local/serve.pid
[[ -f $PIDF ]] || exit 0
pid="$(cat "$PIDF")"
# Only signal our own stand-in, never a process that reused the pid ("local serve": one started
# by an envdr from before the stand-in became its own command).
if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE 'envdr-local|local serve'; then
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "local-down: serve $pid ignored SIGTERM for 15s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  echo "local-down: stopped"
fi
rm -f "$PIDF" local/backends.json
