#!/usr/bin/env bash
# `make bench-context`: how long building a message's context takes (cold, Redis,
# warm), on a database and Redis prefix of its own, removed afterwards.
# Figures, not gates.
#   BENCH_ITERATIONS  context-building iterations (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --release --bin worker --example bench_context
source scripts/isolated.sh bench
"$target/release/worker" migrate >/dev/null
"$target/release/examples/bench_context" "${BENCH_ITERATIONS:-300}"
