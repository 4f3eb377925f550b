#!/usr/bin/env bash
# `make bench`: the worker's throughput, latency and cost on a realistic workload
# (examples/bench), next to the broker-only baseline. Runs on a database,
# exchanges, queues and Redis prefix of its own, removed afterwards.
# Figures, not gates: it exits non-zero only when a guarantee breaks (a unique
# message replied to twice or never) or the bench cannot run.
#
#   N=20000               messages published for the drain (10% exact copies)
#   WORKERS=1             `worker run` processes
#   CONCURRENCY=          worker.concurrency and amqp.prefetch (default: worker.toml's, 1024)
#   RESPONDER_DELAY_MS=0  > 0: answer through the http responder, a local stub that
#                         waits this long per answer (at most 60000)
#   PACED_SECONDS=10      the latency phase: fresh messages at half the drain rate
#                         for this long (0 skips it)
#   PACED_RATE=           messages/s of the latency phase instead of half the drain rate
#   SKIP_BASELINE=        1 skips the broker-only baseline
#
# Prints one table, then a `RESULT key=value ...` line (scripts/scaling.sh reads it).
# The workers' logs go to $CARGO_TARGET_DIR/bench/ (default target/bench/).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --release --bin worker --example bench
# Private copies: another checkout sharing CARGO_TARGET_DIR may rebuild
# release/worker from its own sources while this run is going.
bin="$target/bench/bin"
mkdir -p "$bin"
cp "$target/release/worker" "$target/release/examples/bench" "$bin/"
source scripts/isolated.sh bench
if [ -n "${CONCURRENCY:-}" ]; then
  export WORKER__WORKER__CONCURRENCY="$CONCURRENCY" WORKER__AMQP__PREFETCH="$CONCURRENCY"
fi
"$bin/worker" migrate >/dev/null
args=(run --worker "$bin/worker" --n "${N:-20000}" --workers "${WORKERS:-1}"
      --responder-delay-ms "${RESPONDER_DELAY_MS:-0}" --paced-seconds "${PACED_SECONDS:-10}"
      --paced-rate "${PACED_RATE:-0}"
      --log-dir "$target/bench")
case "${SKIP_BASELINE:-}" in ""|0|false|no) ;; *) args+=(--skip-baseline) ;; esac
"$bin/bench" "${args[@]}"
