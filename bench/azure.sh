#!/usr/bin/env bash
# Azure provider benchmark against the API Management fake (providers/azure/tests/support):
# ARM calls and wall time to provision 100 routes, a no-op resync, a one-route change and a
# no-op resync that reads every policy (a policy audit), directly against the fake and through
# the Prism spec validator (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/bench}
scripts/prism install >/dev/null
cargo test --release -q -p tollbridge-azure --test apim_bench -- --ignored --nocapture 2>&1 | grep '^|'
