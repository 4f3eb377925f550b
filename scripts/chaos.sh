#!/usr/bin/env bash
# `make chaos [N=20000]`: the fault-injection suite (examples/chaos.rs). It kills
# workers, flushes and restarts Redis, closes RabbitMQ's connections and restarts
# PostgreSQL, so run it alone, never beside the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-20000}"
scripts/services.sh ensure
target="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --release --bin worker --example chaos
source scripts/isolated.sh chaos
# Quicker retries than production, so faults are ridden out within the run.
export WORKER__WORKER__RETRY_BASE_DELAY_MS="${WORKER__WORKER__RETRY_BASE_DELAY_MS:-500}"
export WORKER__WORKER__MAX_ATTEMPTS="${WORKER__WORKER__MAX_ATTEMPTS:-8}"
export WORKER__REDIS__LIVENESS_TTL_SECS="${WORKER__REDIS__LIVENESS_TTL_SECS:-3}"
"$target/release/worker" migrate >/dev/null
"$target/release/examples/chaos" "$target/release/worker" "$N"
