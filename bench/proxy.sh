#!/usr/bin/env bash
# Reverse-proxy benchmark, tollbridge and nginx side by side in one run.
#
# One backend (nginx returning a small fixed body) and the load generator (wrk) share core 1;
# the proxy under test runs alone on core 0. Each proxy is measured the same way:
#   1. throughput: wrk, keep-alive, CONNECTIONS connections, DURATION;
#   2. latency at a fixed offered rate (RATE req/s) with --latency percentiles.
# Scenarios: nginx trivial route; tollbridge trivial route; tollbridge with ROUTES routes,
# an API key, a rate limit and a quota on every request.
#
# usage: bench/proxy.sh            (env: DURATION=10s CONNECTIONS=64 RATE=5000 ROUTES=1000)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
RATE=${RATE:-5000}
ROUTES=${ROUTES:-1000}
BACKEND_PORT=18080
NGINX_PORT=18081
TB_PORT=18082
ADMIN_PORT=18090

for tool in nginx wrk taskset python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install nginx-light wrk util-linux)"; exit 1; }
done
source bench/lib.sh

nginx_conf() { # name, body
  mkdir -p "$work/$1"
  cat > "$work/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  $2
}
CONF
}

nginx_conf backend "server { listen 127.0.0.1:$BACKEND_PORT; location / { return 200 'hello from the backend\n'; } }"
nginx_conf proxy "upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 256; }
  server { listen 127.0.0.1:$NGINX_PORT; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"

taskset -c 1 nginx -c "$work/backend/nginx.conf" -p "$work/backend" & pids+=($!)

wait_http "http://127.0.0.1:$BACKEND_PORT/"

# run_wrk LABEL URL [HEADER] -> prints "rps p99_ms fixed_p50_ms fixed_p99_ms"
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; printf "%.3f", v}'; }
measure() {
  local url=$1; shift
  local args=("$@")
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s "${args[@]}" "$url" >/dev/null  # warm up
  local out; out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${args[@]}" "$url")
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local p99; p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
  local fixed; fixed=$(RATE=$RATE CONNECTIONS=16 taskset -c 1 wrk -t1 -c16 -d"$DURATION" --latency -s bench/fixed-rate.lua "${args[@]}" "$url")
  local f50; f50=$(awk '$1=="50%" {print $2}' <<<"$fixed" | to_ms)
  local f99; f99=$(awk '$1=="99%" {print $2}' <<<"$fixed" | to_ms)
  local frps; frps=$(awk '/Requests\/sec/ {print $2}' <<<"$fixed")
  local errors; errors=$(grep -E "Non-2xx|Socket errors" <<<"$out$fixed" | tr '\n' ' ' || true)
  echo "$rps $p99 $frps $f50 $f99 ${errors:-none}"
}

results=()
# nginx proxy
taskset -c 0 nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" & pids+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/"
results+=("nginx trivial|$(measure "http://127.0.0.1:$NGINX_PORT/")")
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

run_tollbridge() { # config dir
  taskset -c 0 "$bin" run -f "$1" --admin-address "127.0.0.1:$ADMIN_PORT" --worker-threads 1 \
    --max-connections 20000 2>"$work/tollbridge.log" & pids+=($!)
  wait_http "http://127.0.0.1:$ADMIN_PORT/readyz"
}

python3 bench/gen-routes.py "$work/trivial" "$TB_PORT" "$BACKEND_PORT" 1
run_tollbridge "$work/trivial"
results+=("tollbridge trivial|$(measure "http://127.0.0.1:$TB_PORT/svc0")")
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

python3 bench/gen-routes.py "$work/many" "$TB_PORT" "$BACKEND_PORT" "$ROUTES" --keys
run_tollbridge "$work/many"
results+=("tollbridge $ROUTES routes + key + quota|$(measure "http://127.0.0.1:$TB_PORT/svc$((ROUTES / 2))/x" -H 'x-api-key: bench-key-0123456789')")
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

nginx_rps=$(cut -d'|' -f2 <<<"${results[0]}" | awk '{print $1}')
nginx_p99=$(cut -d'|' -f2 <<<"${results[0]}" | awk '{print $5}')
echo
echo "proxy pinned to core 0; wrk and backend on core 1; $CONNECTIONS connections; $DURATION per run; fixed rate $RATE req/s"
printf '| %-40s | %10s | %8s | %12s | %14s | %14s | %14s |\n' scenario "req/s" "× nginx" "p99 (max)" "fixed: req/s" "fixed: p50 ms" "fixed: p99 ms"
printf '|%s|\n' "------------------------------------------|------------|----------|--------------|----------------|----------------|----------------"
for r in "${results[@]}"; do
  label=${r%%|*}; read -r rps p99 frps f50 f99 errors <<<"${r#*|}"
  ratio=$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN {printf "%.2f", a/b}')
  printf '| %-40s | %10s | %8s | %9s ms | %14s | %14s | %11s ms |\n' "$label" "$rps" "$ratio" "$p99" "$frps" "$f50" "$f99"
  [ "$errors" != "none" ] && echo "  errors: $errors"
done
echo "(nginx fixed-rate p99: $nginx_p99 ms)"
