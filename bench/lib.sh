# Shared setup of the benchmark scripts (sourced, not run): a release build in its own target
# dir, a work dir, and cleanup of every process started with `pids+=($!)`.

# A target dir of its own, so a benchmark build never waits on a debug build's lock.
# TOLLBRIDGE_BIN=path: measure that binary instead (to compare two builds in turn).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/bench}
if [ -n "${TOLLBRIDGE_BIN:-}" ]; then
  bin=$TOLLBRIDGE_BIN
else
  cargo build --release -q -p tollbridge
  bin=$CARGO_TARGET_DIR/release/tollbridge
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# wait_http URL: waits (at most 30 s) until URL answers 2xx.
wait_http() { for _ in $(seq 1 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1"; exit 1; }

# nginx_conf NAME HTTP-BLOCK: an nginx config in $work/NAME (one worker, access log off,
# keep-alive without a request limit) holding HTTP-BLOCK.
nginx_conf() {
  mkdir -p "$work/$1"
  cat >"$work/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 19000; }
http {
  access_log off;
  keepalive_requests 1000000;
  $2
}
CONF
}

# backend_server PORT: the benchmarks' backend, answering 200 with a 23-byte body.
backend_server() { echo "server { listen 127.0.0.1:$1; location / { return 200 'hello from the backend\n'; } }"; }
