#!/usr/bin/env bash
# `make drain [N=10000]`: one `worker run` (release build) draining N messages,
# on its own database, exchanges, queues and Redis prefix, removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-target}"  # where cargo builds
N="${1:-10000}"
cargo build --quiet --release --bin worker --example drain
source scripts/isolated.sh drain
$T/release/worker migrate >/dev/null
$T/release/examples/drain $T/release/worker "$N"
