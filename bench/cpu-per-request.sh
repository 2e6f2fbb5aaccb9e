#!/usr/bin/env bash
# CPU time per request, user and system, of nginx and tollbridge proxying the same backend:
# where throughput says "slower", this says whether the difference is the proxy's own code
# (user) or the kernel's work for its sockets (system). The setup of bench/proxy.sh (proxies on
# core 0; wrk and an nginx backend on core 1; 64 keep-alive connections), ROUNDS interleaved
# rounds; the CPU each proxy process used while wrk ran DURATION, from /proc/PID/stat, divided
# by the requests wrk completed. TOLLBRIDGE_BIN may name several builds (space-separated) to
# compare them in the same run.
#
# usage: bench/cpu-per-request.sh   (env: ROUNDS=5 DURATION=5s ROUTES=1000, TOLLBRIDGE_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
ROUTES=${ROUTES:-1000}
BACKEND_PORT=18080
NGINX_PORT=18081
KEY_HEADER='x-api-key: bench-key-0123456789'

for tool in nginx wrk taskset python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install nginx-light wrk util-linux)"; exit 1; }
done
builds=${TOLLBRIDGE_BIN:-}
source bench/lib.sh
[ -n "$builds" ] || builds=$bin

nginx_conf backend "$(backend_server $BACKEND_PORT)"
nginx_conf proxy "upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 256; }
  server { listen 127.0.0.1:$NGINX_PORT; location / { proxy_pass http://backend; proxy_http_version 1.1;
  proxy_set_header Connection \"\"; } }"
taskset -c 1 nginx -c "$work/backend/nginx.conf" -p "$work/backend" & pids+=($!)
taskset -c 0 nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" & pids+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/"
# The proxy's worker: the nginx process whose parent is the master started above.
worker=$(pgrep -P "$(cat "$work/proxy/nginx.pid")" | head -1)

labels=("nginx"); urls=("http://127.0.0.1:$NGINX_PORT/"); procs=("$worker"); keyed=(0)
port=18100
admin=18200
n=0
for build in $builds; do
  python3 bench/gen-routes.py "$work/trivial$n" "$port" "$BACKEND_PORT" 1 >/dev/null
  python3 bench/gen-routes.py "$work/keyed$n" $((port + 1)) "$BACKEND_PORT" "$ROUTES" --keys >/dev/null
  for kind in trivial keyed; do
    config=$work/$kind$n
    taskset -c 0 "$build" run -f "$config" --admin-address "127.0.0.1:$admin" --worker-threads 1 \
      --max-connections 20000 2>"$config.log" & pids+=($!)
    procs+=($!)
    wait_http "http://127.0.0.1:$admin/readyz"
    admin=$((admin + 1))
  done
  labels+=("$(basename "$build"), trivial route" "$(basename "$build"), $ROUTES routes + key + quota")
  urls+=("http://127.0.0.1:$port/svc0" "http://127.0.0.1:$((port + 1))/svc$((ROUTES / 2))/x")
  keyed+=(0 1)
  port=$((port + 2))
  n=$((n + 1))
done

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; } # user and system ticks
echo "| round | target | req/s | user µs/request | system µs/request | total µs/request |"
echo "|---|---|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!labels[@]}"; do
    args=()
    [ "${keyed[$i]}" = 1 ] && args=(-H "$KEY_HEADER")
    taskset -c 1 wrk -t1 -c64 -d1s "${args[@]}" "${urls[$i]}" >/dev/null
    read -r user0 system0 < <(cpu "${procs[$i]}")
    out=$(taskset -c 1 wrk -t1 -c64 -d"$DURATION" "${args[@]}" "${urls[$i]}")
    read -r user1 system1 < <(cpu "${procs[$i]}")
    grep -q "Non-2xx" <<<"$out" && echo "  non-2xx answers from ${labels[$i]}" >&2
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v round="$round" -v label="${labels[$i]}" -v r="$requests" -v u=$((user1 - user0)) \
      -v s=$((system1 - system0)) -v t="$ticks" -v d="${DURATION%s}" 'BEGIN {
        printf "| %d | %s | %.0f | %.2f | %.2f | %.2f |\n", round, label, r / d, u / t / r * 1e6, s / t / r * 1e6, (u + s) / t / r * 1e6
      }'
  done
done
