#!/usr/bin/env bash
# `make bench`: the benchmarks, on a database and Redis prefix of their own,
# removed afterwards. Figures, not gates.
#   BENCH_ITERATIONS  context-building iterations (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --bin worker --example bench_context
source scripts/isolated.sh bench
target/release/worker migrate >/dev/null
target/release/examples/bench_context "${BENCH_ITERATIONS:-300}"
