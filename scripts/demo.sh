#!/usr/bin/env bash
# `make demo`: the worker's main job end to end on local services.
# Starts the services that are not answering (installing them if needed), migrates,
# runs `worker run`, plays the demo (examples/demo.rs) against it, stops the
# worker with SIGTERM, prints its own tally, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-target}"  # where cargo builds

command -v cargo >/dev/null || { echo "demo: cargo not found (Rust >= 1.88 is required)" >&2; exit 1; }
LOG="$T/demo-worker.log"
worker_pid=

cleanup() {
  if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then kill -TERM "$worker_pid"; wait "$worker_pid" || true; fi
  scripts/services.sh stop
}
trap cleanup EXIT

echo "== building =="
cargo build --quiet --bin worker --example demo
scripts/services.sh ensure

echo "== worker migrate =="
$T/debug/worker --config worker.toml migrate

echo "== worker run (log: $LOG) =="
mkdir -p target
$T/debug/worker --config worker.toml run --worker-id demo-worker > "$LOG" 2>&1 &
worker_pid=$!

$T/debug/examples/demo worker.toml

echo
echo "== stopping the worker (SIGTERM) =="
kill -TERM "$worker_pid"
if wait "$worker_pid"; then status=0; else status=$?; fi
worker_pid=
echo "worker exited with status $status; its own tally:"
grep -E "worker stopped" "$LOG" | sed -E 's/\x1b\[[0-9;]*m//g; s/^.*INFO[^ ]* [^ ]*: //'
[ "$status" = 0 ]
