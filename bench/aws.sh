#!/usr/bin/env bash
# AWS provider benchmark against moto's server: write calls and wall time to provision 100
# and 300 routes on an HTTP API, a no-op resync and a one-route change, with the account's
# call limits (10 rps, burst 40) and without any (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/bench}
cargo build --release -q -p tollbridge-aws --example provision_bench
dir=$(mktemp -d)
trap 'scripts/moto stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
scripts/moto start "$dir" 2>/dev/null
. "$dir/env"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
for routes in 100 300; do
	for mode in unlimited limited; do
		curl -fsS -X POST "$TOLLBRIDGE_MOTO_URL/moto-api/reset" >/dev/null
		"$CARGO_TARGET_DIR/release/examples/provision_bench" "$TOLLBRIDGE_MOTO_URL" "$routes" "$mode"
	done
done
