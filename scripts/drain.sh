#!/usr/bin/env bash
# `make drain [N=10000]`: one `worker run` (release build) draining N messages,
# on its own database, exchanges, queues and Redis prefix, removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --release --bin worker --example drain
source scripts/isolated.sh drain
"$target/release/worker" migrate >/dev/null
"$target/release/examples/drain" "$target/release/worker" "$N"
