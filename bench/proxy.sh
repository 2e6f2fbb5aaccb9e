#!/usr/bin/env bash
# Reverse-proxy benchmark, tollbridge and nginx side by side in one run.
#
# One backend (nginx returning a small fixed body) and the load generator (wrk) share core 1;
# every proxy under test runs on core 0 (all started once, idle while another is measured).
# ROUNDS rounds, each measuring every target in turn, so drift of the machine hits them all:
#   - keep-alive throughput: wrk, CONNECTIONS connections, DURATION (after a 2 s warm-up), and
#     the p99 of that saturated run;
#   - latency at a fixed offered rate (RATE req/s over 16 connections): p50, p99;
#   - a new connection per request (`Connection: close`): throughput.
# Then TLS (TLS 1.3, one ECDSA P-256 certificate for both), ROUNDS rounds of nginx (`ssl`,
# `http2`) and tollbridge (trivial route) in turn: HTTPS keep-alive throughput (wrk, HTTP/1.1,
# CONNECTIONS connections) and HTTP/2 over TLS (h2load, 4 connections × 16 streams = 64
# streams, ALPN h2).
# Then, once: the memory (RSS) of nginx and of tollbridge (trivial route) holding IDLE idle
# keep-alive client connections, each of which has made one request.
# Targets: nginx (one worker, upstream keep-alive pool, access log off); a second, identical
# nginx (the machine's noise floor: its ratio to the first should be 1.00); tollbridge with one
# route; tollbridge with ROUTES routes, an API key, a rate limit and a quota on every request.
# Every run is printed, then the median of each column.
#
# usage: bench/proxy.sh   (env: ROUNDS=7 DURATION=10s CONNECTIONS=64 RATE=5000 ROUTES=1000
#                          IDLE=10000, TOLLBRIDGE_BIN=path to measure a given build;
#                          ROUNDS=0: the idle-connection memory only; CEILING=1: also
#                          bench/ceiling, a bare tokio proxy, as the shape's upper bound;
#                          URING=1: also bench/ceiling-uring, the same proxy on io_uring;
#                          REDIS=1: also the key + quota scenario counting in a redis-server
#                          on core 1, beside wrk and the backend)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
RATE=${RATE:-5000}
ROUTES=${ROUTES:-1000}
IDLE=${IDLE:-10000}
BACKEND_PORT=18080
NGINX_PORT=18081
TWIN_PORT=18083
TB_PORT=18082
MANY_PORT=18084
NGINX_TLS_PORT=18443
TB_TLS_PORT=18444
CEILING_PORT=18085
URING_PORT=18087
SHARED_PORT=18086
REDIS_PORT=18379
KEY_HEADER='x-api-key: bench-key-0123456789'

for tool in nginx wrk h2load openssl taskset python3 curl; do
  command -v "$tool" >/dev/null ||
    { echo "missing $tool (apt-get install nginx-light wrk nghttp2-client openssl util-linux)"; exit 1; }
done
source bench/lib.sh
ulimit -n "$(ulimit -Hn)" # 10,000 idle connections need as many descriptors


openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench.local \
  -addext subjectAltName=DNS:bench.local,IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

proxy_conf() { # port
  local location='location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }'
  echo "upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 256; }
  server { listen 127.0.0.1:$1; $location }"
  [ "$1" != "$NGINX_PORT" ] || echo "server { listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.3;
    keepalive_requests 1000000; http2_max_requests 1000000; $location }"
}

nginx_conf backend "$(backend_server $BACKEND_PORT)"
nginx_conf proxy "$(proxy_conf $NGINX_PORT)"
nginx_conf twin "$(proxy_conf $TWIN_PORT)"

taskset -c 1 nginx -c "$work/backend/nginx.conf" -p "$work/backend" & pids+=($!)
wait_http "http://127.0.0.1:$BACKEND_PORT/"
taskset -c 0 nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" & pids+=($!)
taskset -c 0 nginx -c "$work/twin/nginx.conf" -p "$work/twin" & pids+=($!)

run_tollbridge() { # config dir, admin port, extra arguments
  taskset -c 0 "$bin" run -f "$1" --admin-address "127.0.0.1:$2" --worker-threads 1 \
    --max-connections 20000 "${@:3}" 2>"$1.log" & pids+=($!)
  wait_http "http://127.0.0.1:$2/readyz"
}
python3 bench/gen-routes.py "$work/trivial" "$TB_PORT" "$BACKEND_PORT" 1 --tls "$TB_TLS_PORT" "$work/cert.pem" "$work/key.pem"
python3 bench/gen-routes.py "$work/many" "$MANY_PORT" "$BACKEND_PORT" "$ROUTES" --keys
run_tollbridge "$work/trivial" 18090
run_tollbridge "$work/many" 18091
for port in $NGINX_PORT $TWIN_PORT; do wait_http "http://127.0.0.1:$port/"; done

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; printf "%.3f", v}'; }
failures() { grep -E "Non-2xx|Socket errors" <<<"$1" | tr '\n' ' ' || true; }

# measure URL [wrk args]: "rps p99 fixed_p50 fixed_p99 close_rps", errors to stderr.
measure() {
  local url=$1; shift
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s "$@" "$url" >/dev/null
  local out fixed close
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
  fixed=$(RATE=$RATE CONNECTIONS=16 taskset -c 1 wrk -t1 -c16 -d"$DURATION" --latency -s bench/fixed-rate.lua "$@" "$url")
  close=$(taskset -c 1 wrk -t1 -c16 -d"$DURATION" -H 'Connection: close' "$@" "$url")
  local errors; errors="$(failures "$out")$(failures "$fixed")"
  [ -z "$errors" ] || echo "  errors at $url: $errors" >&2
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)" \
    "$(awk '$1=="50%" {print $2}' <<<"$fixed" | to_ms)" \
    "$(awk '$1=="99%" {print $2}' <<<"$fixed" | to_ms)" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$close")"
}

labels=("nginx" "nginx (twin: noise floor)" "tollbridge, trivial route" "tollbridge, $ROUTES routes + key + quota")
urls=("http://127.0.0.1:$NGINX_PORT/" "http://127.0.0.1:$TWIN_PORT/" "http://127.0.0.1:$TB_PORT/svc0" "http://127.0.0.1:$MANY_PORT/svc$((ROUTES / 2))/x")
keyed=(0 0 0 1) # whether the target's requests carry the API key
if [ "${REDIS:-0}" = 1 ]; then
  taskset -c 1 redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$work" --logfile "$work/redis.log" & pids+=($!)
  python3 bench/gen-routes.py "$work/shared" "$SHARED_PORT" "$BACKEND_PORT" "$ROUTES" --keys
  run_tollbridge "$work/shared" 18092 --counter-store "redis://127.0.0.1:$REDIS_PORT"
  labels+=("tollbridge, $ROUTES routes + key + quota, counters in Redis")
  urls+=("http://127.0.0.1:$SHARED_PORT/svc$((ROUTES / 2))/x")
  keyed+=(1)
fi
if [ "${CEILING:-0}" = 1 ]; then
  cargo build --release -q --manifest-path bench/ceiling/Cargo.toml
  taskset -c 0 "$CARGO_TARGET_DIR/release/proxy-ceiling" "127.0.0.1:$CEILING_PORT" "127.0.0.1:$BACKEND_PORT" & pids+=($!)
  wait_http "http://127.0.0.1:$CEILING_PORT/"
  labels+=("bench/ceiling (no HTTP library, no features)")
  urls+=("http://127.0.0.1:$CEILING_PORT/")
  keyed+=(0)
fi
if [ "${URING:-0}" = 1 ]; then
  cargo build --release -q --manifest-path bench/ceiling-uring/Cargo.toml
  taskset -c 0 "$CARGO_TARGET_DIR/release/proxy-ceiling-uring" "127.0.0.1:$URING_PORT" "127.0.0.1:$BACKEND_PORT" & pids+=($!)
  wait_http "http://127.0.0.1:$URING_PORT/"
  labels+=("bench/ceiling-uring (the same on io_uring)")
  urls+=("http://127.0.0.1:$URING_PORT/")
  keyed+=(0)
fi
results="$work/results"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!labels[@]}"; do
    args=()
    [ "${keyed[$i]}" = 1 ] && args=(-H "$KEY_HEADER")
    echo "$round|$i|$(measure "${urls[$i]}" "${args[@]}")" >>"$results"
  done
  echo "round $round of $ROUNDS done" >&2
done

# measure_tls URL: "https_rps h2_rps"
measure_tls() {
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s "$1" >/dev/null
  local https h2
  https=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "$1")
  h2=$(taskset -c 1 h2load -c4 -m16 -t1 --warm-up-time=2 -D "${DURATION%s}" "$1")
  local errors; errors="$(failures "$https")$(grep -E "^requests:" <<<"$h2" | grep -v " 0 failed" || true)"
  [ -z "$errors" ] || echo "  errors at $1: $errors" >&2
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$https")" "$(awk '/^finished in/ {print $4}' <<<"$h2")"
}
tls_labels=("nginx (ssl, http2)" "tollbridge, trivial route")
tls_urls=("https://127.0.0.1:$NGINX_TLS_PORT/" "https://127.0.0.1:$TB_TLS_PORT/svc0")
tls_results="$work/tls-results"
: >"$tls_results"
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!tls_labels[@]}"; do
    echo "$round|$i|$(measure_tls "${tls_urls[$i]}")" >>"$tls_results"
  done
  echo "TLS round $round of $ROUNDS done" >&2
done

if [ "$ROUNDS" -gt 0 ]; then
echo
echo "proxies pinned to core 0; wrk and backend on core 1; $CONNECTIONS connections; $DURATION per run;"
echo "fixed rate $RATE req/s over 16 connections; Connection: close over 16 connections; $ROUNDS rounds"
python3 bench/tables.py plain "$results" "${labels[@]}"
echo
echo "TLS 1.3: HTTPS keep-alive (wrk, HTTP/1.1, $CONNECTIONS connections) and HTTP/2 over TLS (h2load, 4 connections × 16 streams)"
python3 bench/tables.py tls "$tls_results" "${tls_labels[@]}"
fi

# rss_kib PID [FIELD]: resident memory (VmRSS, or FIELD of /proc/PID/status) of PID and its
# children (nginx's master and worker), in KiB.
rss_kib() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk -v f="${2:-VmRSS}:" '$1 == f {print $2}' "/proc/$p/status")))
  done
  echo "$total"
}
# idle_rss PID PORT PATH: "before after anonymous_after" in KiB around IDLE idle connections.
# RSS counts the pages of the program's file that are mapped too, which depend on the page
# cache (a binary just built or copied has more of them mapped): the anonymous part does not.
idle_rss() {
  local before after
  before=$(rss_kib "$1")
  coproc IDLER { taskset -c 1 python3 bench/idle-connections.py "$2" "$3" "$IDLE"; }
  local ready; read -r ready <&"${IDLER[0]}"
  [ "${ready% *}" = ready ] || { echo "idle connections failed: $ready" >&2; exit 1; }
  sleep 1
  after=$(rss_kib "$1")
  anonymous=$(rss_kib "$1" RssAnon)
  exec {IDLER[1]}>&-
  wait "$IDLER_PID" || true
  echo "$before $after $anonymous"
}
read -r nginx_before nginx_after nginx_anon <<<"$(idle_rss "${pids[1]}" $NGINX_PORT /)"
sleep 2
read -r tb_before tb_after tb_anon <<<"$(idle_rss "${pids[3]}" $TB_PORT /svc0)"
echo
echo "$IDLE idle keep-alive connections (one request each):"
echo "| target | RSS before | RSS with the connections | per connection | anonymous RSS with them |"
echo "|---|---:|---:|---:|---:|"
for t in "nginx $nginx_before $nginx_after $nginx_anon" "tollbridge $tb_before $tb_after $tb_anon"; do
  read -r name before after anon <<<"$t"
  printf '| %s | %d MiB | %d MiB | %.1f KiB | %d MiB |\n' "$name" $((before / 1024)) $((after / 1024)) \
    "$(awk -v a="$after" -v b="$before" -v n="$IDLE" 'BEGIN {print (a - b) / n}')" $((anon / 1024))
done
echo "tollbridge anonymous RSS ÷ nginx's: $(awk -v a="$tb_anon" -v b="$nginx_anon" 'BEGIN {printf "%.2f", a / b}')"
echo "tollbridge RSS ÷ nginx RSS with the connections: $(awk -v a="$tb_after" -v b="$nginx_after" 'BEGIN {printf "%.2f", a / b}')"
