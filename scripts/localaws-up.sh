#!/usr/bin/env bash
# make local-up: install the pinned backends if needed, start the stand-in (bin/envdr-local) in the
# background (logs in local/logs/), and wait until it answers /readyz, i.e. until keys, queue
# and table exist and local/envdr.yaml is written. Idempotent: a ready stand-in is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${ENVDR_LOCAL_BASE_PORT:-24660}"
ADMIN="http://127.0.0.1:$BASE"
PIDF=local/serve.pid
start=$SECONDS

bash scripts/localaws-install.sh
go build -buildvcs=auto -o bin/envdr ./cmd/envdr
# The stand-in is its own command (cmd/envdr-local, Linux only); envdr only drives its admin endpoint.
go build -buildvcs=auto -o bin/envdr-local ./cmd/envdr-local

alive() { [[ -f $PIDF ]] && kill -0 "$(cat "$PIDF")" 2>/dev/null; }
ready() { bin/envdr local ready --admin "$ADMIN" >/dev/null 2>&1; }

if alive && ready; then
  echo "local-up: already running (local/envdr.yaml, admin $ADMIN)"
  exit 0
fi
if ! alive && ready && [[ -f local/envdr.yaml ]]; then
  # e.g. `envdr-local` run by hand in another terminal; make local-down will not stop it.
  echo "local-up: a stand-in not started by make is already serving (admin $ADMIN)"
  exit 0
fi
# A serve that is alive but not ready (or a stale pid file) is restarted from scratch.
bash scripts/localaws-down.sh >/dev/null

mkdir -p local/logs
# Own session: the stand-in outlives this shell and is not hit by a Ctrl-C meant for make.
SETSID=""
command -v setsid >/dev/null && SETSID=setsid
ENVDR_LOCAL_BASE_PORT="$BASE" $SETSID bin/envdr-local --dir local --base-port "$BASE" \
  >local/logs/serve.log 2>&1 </dev/null &
echo $! >"$PIDF"

deadline=$((SECONDS + ${ENVDR_LOCAL_UP_TIMEOUT:-120}))
until ready; do
  if ! alive; then
    echo "local-up: envdr-local exited; local/logs/serve.log:" >&2
    tail -n 20 local/logs/serve.log >&2
    rm -f "$PIDF"
    exit 1
  fi
  if ((SECONDS > deadline)); then
    echo "local-up: not ready after ${ENVDR_LOCAL_UP_TIMEOUT:-120}s; local/logs/serve.log:" >&2
    tail -n 20 local/logs/serve.log >&2
    bash scripts/localaws-down.sh >/dev/null
    exit 1
  fi
  sleep 0.2
done
echo "local-up: ready in $((SECONDS - start))s: local/envdr.yaml (admin $ADMIN, logs local/logs/)"
