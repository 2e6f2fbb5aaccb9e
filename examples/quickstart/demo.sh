#!/usr/bin/env bash
# The quickstart, end to end: builds tollbridge, starts an echo backend and `tollbridge run`
# on this folder, then shows routing, an API key and a rate limit at work.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build -q -p tollbridge
bin=target/debug/tollbridge
"$bin" echo --listen 127.0.0.1:9090 >/dev/null 2>&1 &
echo_pid=$!
"$bin" run -f examples/quickstart --admin-address 127.0.0.1:9901 2>/tmp/tollbridge-quickstart.log &
run_pid=$!
trap 'kill "$run_pid" "$echo_pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:9901/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs http://127.0.0.1:9901/readyz >/dev/null || { echo "tollbridge did not become ready; see /tmp/tollbridge-quickstart.log"; exit 1; }

show() { printf '\n$ %s\n' "$*"; "$@" || true; }
show curl -s http://127.0.0.1:8080/public/hello
show curl -s -o /dev/null -w '%{http_code} (no API key)\n' http://127.0.0.1:8080/orders
show curl -s -i -H 'x-api-key: quickstart-demo-key-acme' http://127.0.0.1:8080/orders/42
printf '\n15 requests at once with the key (5/s, burst 10):\n'
for _ in $(seq 1 15); do
  curl -s -o /dev/null -w '%{http_code} ' -H 'x-api-key: quickstart-demo-key-acme' http://127.0.0.1:8080/orders
done
printf '\n\nStatus of every object: curl http://127.0.0.1:9901/status\n'
printf 'Metrics: curl http://127.0.0.1:9901/metrics\n'
