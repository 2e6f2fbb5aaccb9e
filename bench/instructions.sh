#!/usr/bin/env bash
# User-space instructions per request, counted by callgrind: a number that does not move with
# the machine's noise, so that a change of a few percent in the proxy's own work can be seen
# (wall-clock benchmarks on a shared machine cannot tell 5 % apart). Two scenarios of
# bench/proxy.sh: a trivial route, and 1,000 routes + API key + rate limit + quota. For each:
# the proxy runs under callgrind with counting off, takes a warm-up, then counts while wrk sends
# DURATION of keep-alive requests over 8 connections; instructions ÷ requests is printed, and
# the function-level profile is kept (`callgrind_annotate FILE`).
#
# What it does not see: the kernel (two reads and two writes per request, most of the cost),
# and the real price of instructions (a cache miss counts as one). Callgrind runs without the
# CPU's SHA extensions (the key's digest costs ~3,500 instructions here, far less natively) and
# counts `rep movsb` copies per byte; compare builds with it, not with nginx.
#
# usage: bench/instructions.sh   (env: DURATION=6s ROUTES=1000, TOLLBRIDGE_BIN=path to measure
#                                 a given build, PROFILES=dir to keep the callgrind files in)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6s}
ROUTES=${ROUTES:-1000}
BACKEND_PORT=18080
PROXY_PORT=18100
ADMIN_PORT=18200
KEY_HEADER='x-api-key: bench-key-0123456789'

for tool in nginx wrk valgrind callgrind_control python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install nginx-light wrk valgrind)"; exit 1; }
done
source bench/lib.sh
profiles=${PROFILES:-$work}
mkdir -p "$profiles"

nginx_conf backend "$(backend_server $BACKEND_PORT)"
nginx -c "$work/backend/nginx.conf" -p "$work/backend" & pids+=($!)
wait_http "http://127.0.0.1:$BACKEND_PORT/"

# count NAME LABEL URL [wrk args]: prints the table row of one scenario.
count() {
  local name=$1 label=$2 url=$3; shift 3
  local out="$profiles/callgrind.$name"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$bin" run -f "$work/$name" --admin-address "127.0.0.1:$ADMIN_PORT" --worker-threads 1 \
    2>"$work/$name.log" &
  local proxy=$!
  pids+=("$proxy")
  for _ in $(seq 1 600); do curl -fs -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" && break; sleep 0.2; done
  wrk -t1 -c8 -d2s "$@" "$url" >/dev/null
  callgrind_control -i on "$proxy" >/dev/null
  local result
  result=$(wrk -t1 -c8 -d"$DURATION" "$@" "$url")
  callgrind_control -i off "$proxy" >/dev/null
  callgrind_control -d "$proxy" >/dev/null
  kill "$proxy"
  wait "$proxy" 2>/dev/null || true
  grep -q "Non-2xx" <<<"$result" && { echo "$name: non-2xx answers"; exit 1; }
  local requests instructions
  requests=$(awk '/requests in/ {print $1}' <<<"$result")
  instructions=$(cat "$out".* | awk '/^(summary|totals):/ {print $2}' | sort -n | tail -1)
  echo "| $label | $requests | $((instructions / requests)) |"
}

python3 bench/gen-routes.py "$work/trivial" "$PROXY_PORT" "$BACKEND_PORT" 1 >/dev/null
python3 bench/gen-routes.py "$work/keyed" "$PROXY_PORT" "$BACKEND_PORT" "$ROUTES" --keys >/dev/null
echo "| scenario | requests counted | instructions per request |"
echo "|---|---:|---:|"
count trivial "trivial route" "http://127.0.0.1:$PROXY_PORT/svc0"
count keyed "$ROUTES routes + key + quota" "http://127.0.0.1:$PROXY_PORT/svc$((ROUTES / 2))/x" -H "$KEY_HEADER"
[ -z "${PROFILES:-}" ] || echo "profiles: $profiles/callgrind.{trivial,keyed}.* (callgrind_annotate FILE)"
