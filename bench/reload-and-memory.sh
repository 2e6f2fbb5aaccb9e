#!/usr/bin/env bash
# Memory and reload time of `tollbridge run` with many routes (default 10,000), plus a check that
# reloads under load fail no request.
#
# usage: bench/reload-and-memory.sh   (env: ROUTES=10000 RELOADS=5 IDLE_REWRITES=3)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUTES=${ROUTES:-10000}
RELOADS=${RELOADS:-5}
IDLE_REWRITES=${IDLE_REWRITES:-3}
PORT=18182
BACKEND_PORT=18180
ADMIN_PORT=18190

source bench/lib.sh

"$bin" echo --listen "127.0.0.1:$BACKEND_PORT" 2>/dev/null & pids+=($!)
python3 bench/gen-routes.py "$work/config" "$PORT" "$BACKEND_PORT" "$ROUTES" --keys
"$bin" run -f "$work/config" --admin-address "127.0.0.1:$ADMIN_PORT" --poll-interval-ms 100 \
  --log-format json 2>"$work/log" & pid=$!; pids+=($pid)
wait_http "http://127.0.0.1:$ADMIN_PORT/readyz"

rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "routes: $ROUTES"
echo "RSS after load: $((rss_kib / 1024)) MiB"

# Rewrites the file with a label of value $1 on every route: every document changes.
relabel() {
  sed -E "s/^metadata: \{(labels: \{rewrite: [a-z0-9]+\}, )?name: svc/metadata: {labels: {rewrite: $1}, name: svc/" \
    "$work/config/bench.yaml" >"$work/edited.yaml"
  mv "$work/edited.yaml" "$work/config/bench.yaml"
}

# Rewrites with no load: a whole file-to-serving reload on idle cores.
for i in $(seq 1 "$IDLE_REWRITES"); do
  relabel "idle$i"
  sleep 2
done

# Reloads under load: wrk hits one route while the file is edited RELOADS times (each edit adds
# an HTTPRoute), then rewritten once with every route changed (a label on each).
url="http://127.0.0.1:$PORT/svc$((ROUTES / 2))/x"
wrk -t1 -c16 -d$((RELOADS * 2 + 4))s -H 'x-api-key: bench-key-0123456789' "$url" >"$work/wrk" &
wrk_pid=$!
sleep 1
for i in $(seq 1 "$RELOADS"); do
  cat >> "$work/config/bench.yaml" <<EOF
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: added$i}
spec:
  parentRefs: [{name: bench}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /added$i}
    backendRefs:
    - {name: backend, port: 80}
EOF
  sleep 2
done
relabel loaded
sleep 2
wait "$wrk_pid"
echo "load during reloads: $(awk '/Requests\/sec/ {print $2}' "$work/wrk") req/s; $(grep -E 'requests in' "$work/wrk" | xargs)"
grep -E "Non-2xx|Socket errors" "$work/wrk" || echo "failed requests during reloads: 0"
echo "reload timings (ms): start-up, $IDLE_REWRITES idle rewrites changing every route, then under load"\
  "$RELOADS edits adding a route and one rewrite changing every route:"
grep '"configuration applied"' "$work/log" | python3 -c '
import json, sys
for line in sys.stdin:
    f = json.loads(line)["fields"]
    print("  load %5d  translate %5d  apply %5d  routes %d" % (f["load_ms"], f["translate_ms"], f["apply_ms"], f["routes"]))'
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "RSS after reloads: $((rss_kib / 1024)) MiB"
