#!/usr/bin/env bash
# `make bench`: the benchmarks, on a database and Redis prefix of their own,
# removed afterwards. Figures, not gates.
#   BENCH_ITERATIONS  context-building iterations (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --bin worker --example bench_context

run="bench$(date +%s)"
base_db="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/worker}"
export WORKER__DATABASE__URL="${base_db%/*}/chat_worker_$run"
export WORKER__REDIS__KEY_PREFIX="$run:"
export WORKER_LOG="${WORKER_LOG:-warn}"

cleanup() {
  psql "${base_db%/*}/postgres" -qc "DROP DATABASE IF EXISTS chat_worker_$run WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "$run:*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup EXIT

target/release/worker migrate >/dev/null
target/release/examples/bench_context "${BENCH_ITERATIONS:-300}"
