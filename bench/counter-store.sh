#!/usr/bin/env bash
# Counters in Redis against in-process counters, side by side in one run: the 1,000 routes +
# API key + rate limit + quota scenario of bench/proxy.sh, served by two tollbridge processes on
# core 0 (one counting in its own memory, one in a redis-server), nginx as the backend, wrk and
# the redis-server on core 1. ROUNDS interleaved rounds, each measuring both:
#   - keep-alive throughput: wrk, 64 connections, DURATION (after a 2 s warm-up);
#   - latency at a fixed offered rate (RATE req/s over 16 connections): p50, p99.
# Prints every round, the medians of the per-round ratio and of the latency added, and what the
# store spent per decision (INFO commandstats: microseconds per EVALSHA, the script's commands
# included).
#
# usage: bench/counter-store.sh   (env: ROUNDS=7 DURATION=10s RATE=5000 ROUTES=1000,
#                                  TOLLBRIDGE_BIN=path to measure a given build)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-10s}
RATE=${RATE:-5000}
ROUTES=${ROUTES:-1000}
BACKEND_PORT=18080
LOCAL_PORT=18084
SHARED_PORT=18086
REDIS_PORT=18379
KEY_HEADER='x-api-key: bench-key-0123456789'

for tool in nginx wrk redis-server redis-cli taskset python3 curl; do
  command -v "$tool" >/dev/null ||
    { echo "missing $tool (apt-get install nginx-light wrk redis-server util-linux)"; exit 1; }
done
source bench/lib.sh

nginx_conf backend "$(backend_server $BACKEND_PORT)"
taskset -c 1 nginx -c "$work/backend/nginx.conf" -p "$work/backend" & pids+=($!)
wait_http "http://127.0.0.1:$BACKEND_PORT/"
taskset -c 1 redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
  --dir "$work" --logfile "$work/redis.log" & pids+=($!)

run_tollbridge() { # config dir, listener port, admin port, extra arguments
  python3 bench/gen-routes.py "$1" "$2" "$BACKEND_PORT" "$ROUTES" --keys
  taskset -c 0 "$bin" run -f "$1" --admin-address "127.0.0.1:$3" --worker-threads 1 "${@:4}" 2>"$1.log" &
  pids+=($!)
  wait_http "http://127.0.0.1:$3/readyz"
}
run_tollbridge "$work/local" "$LOCAL_PORT" 18091
run_tollbridge "$work/shared" "$SHARED_PORT" 18092 --counter-store "redis://127.0.0.1:$REDIS_PORT"

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; printf "%.3f", v}'; }

# histogram ADMIN_PORT: "le count" per bucket of the store's decision-duration histogram.
histogram() {
  curl -fs "http://127.0.0.1:$1/metrics" |
    awk -F'le="' '/^tollbridge_counter_store_decision_duration_seconds_bucket/ {split($2, a, "\""); n=split($0, f, " "); print a[1], f[n]}'
}
: >"$work/histograms"

# measure PORT [ADMIN_PORT]: "rps fixed_p50 fixed_p99"; with ADMIN_PORT, the decisions of the
# fixed-rate run are added to $work/histograms.
measure() {
  local url="http://127.0.0.1:$1/svc$((ROUTES / 2))/x" out fixed
  taskset -c 1 wrk -t1 -c64 -d2s -H "$KEY_HEADER" "$url" >/dev/null
  out=$(taskset -c 1 wrk -t1 -c64 -d"$DURATION" -H "$KEY_HEADER" "$url")
  [ -z "${2:-}" ] || histogram "$2" >"$work/before"
  fixed=$(RATE=$RATE CONNECTIONS=16 taskset -c 1 wrk -t1 -c16 -d"$DURATION" --latency \
    -s bench/fixed-rate.lua -H "$KEY_HEADER" "$url")
  if [ -n "${2:-}" ]; then
    histogram "$2" | paste -d' ' "$work/before" - | awk '{print $1, $4 - $2}' >>"$work/histograms"
  fi
  if grep -qE "Non-2xx|Socket errors" <<<"$out$fixed"; then echo "errors at $url" >&2; fi
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1=="50%" {print $2}' <<<"$fixed" | to_ms)" "$(awk '$1=="99%" {print $2}' <<<"$fixed" | to_ms)"
}

redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
echo "| round | in-process req/s | Redis req/s | ratio | p50 in-process | p50 Redis | p99 in-process | p99 Redis |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
: >"$work/rounds"
for round in $(seq 1 "$ROUNDS"); do
  read -r l_rps l_p50 l_p99 <<<"$(measure $LOCAL_PORT)"
  read -r s_rps s_p50 s_p99 <<<"$(measure $SHARED_PORT 18092)"
  echo "$l_rps $s_rps $l_p50 $s_p50 $l_p99 $s_p99" >>"$work/rounds"
  printf '| %d | %.0f | %.0f | %.2f | %s ms | %s ms | %s ms | %s ms |\n' "$round" "$l_rps" "$s_rps" \
    "$(awk -v a="$s_rps" -v b="$l_rps" 'BEGIN {print a / b}')" "$l_p50" "$s_p50" "$l_p99" "$s_p99"
done
python3 - "$work/rounds" <<'PY'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
median = lambda values: statistics.median(values)
print()
print(f"Redis ÷ in-process throughput, median of the rounds: {median([r[1] / r[0] for r in rows]):.2f}")
print(f"p50 added at the fixed rate, median: {median([r[3] - r[2] for r in rows]):.3f} ms")
print(f"p99 added at the fixed rate, median: {median([r[5] - r[4] for r in rows]):.3f} ms")
PY
echo "store time per decision: $(redis-cli -p "$REDIS_PORT" info commandstats | grep -o 'cmdstat_evalsha:.*usec_per_call=[0-9.]*' | sed 's/.*usec_per_call=//') µs per EVALSHA"
echo
echo "the Redis replica's decisions at the fixed rate, by how long the store took to answer"
echo "(its decision-duration histogram, counted over the fixed-rate runs only):"
python3 - "$work/histograms" <<'PY'
import sys
totals = {}
for line in open(sys.argv[1]):
    le, count = line.split()
    totals[le] = totals.get(le, 0) + float(count)
total = totals.get("+Inf", 0)
print("| at most | share of decisions |")
print("|---:|---:|")
for le, count in totals.items():
    bound = le if le == "+Inf" else f"{float(le) * 1000:.2f} ms"
    print(f"| {bound} | {count / total:.4f} |" if total else f"| {bound} | - |")
PY
