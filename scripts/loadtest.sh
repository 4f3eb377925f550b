#!/usr/bin/env bash
# The load tools (tools/loadtest), one subcommand each, on a database, exchanges,
# queues and Redis prefix of their own (scripts/isolated.sh), removed afterwards:
#
#   scripts/loadtest.sh bench            `make bench`: throughput, latency and cost on a
#                                        realistic workload, next to the broker-only baseline
#   scripts/loadtest.sh drain [N=10000]  `make drain`: one `worker run` draining N messages
#   scripts/loadtest.sh chaos [N=20000]  `make chaos`: the fault-injection suite. It kills
#                                        workers, flushes and restarts Redis, closes
#                                        RabbitMQ's connections and restarts PostgreSQL, so
#                                        run it alone, never beside the test suite.
#                                        With WORKER__REDIS__MODE=cluster (`make
#                                        chaos-short-fleet`) its Redis faults act on the
#                                        Redis Cluster of `scripts/services.sh fleet`.
#   scripts/loadtest.sh context          `make bench-context`: building a message's context,
#                                        cold / Redis / warm
#
# Figures, not gates: bench exits non-zero only when a guarantee breaks (a unique
# message replied to twice or never, a conversation's replies out of publish order)
# or it cannot run; chaos when its accounting does not add up, or (PACED_RATE) a
# conversation's replies come out of publish order.
#
# bench reads its settings from the environment:
#   N=20000               messages published for the drain (10% exact copies)
#   WORKERS=1             `worker run` processes
#   CONCURRENCY=          worker.concurrency and amqp.prefetch (default: worker.toml's, 1024)
#   RESPONDER_DELAY_MS=0  > 0: answer through the http responder, a local stub that
#                         waits this long per answer (at most 60000)
#   PACED_SECONDS=10      the latency phase: fresh messages at half the drain rate
#                         for this long (0 skips it)
#   PACED_RATE=           messages/s of the latency phase instead of half the drain rate
#   BURST=                K > 1: every customer sends bursts of K messages (distinct
#                         texts) instead of single questions (issue 15); the table adds
#                         the burst's last message -> its last reply
#   BURST_GAP_MS=20       between two messages of a burst
#   COALESCE_MS=          > 0: the workers coalesce bursts within this many ms
#                         (turns.coalesce_ms; COALESCE_MAX_MS: turns.coalesce_max_ms)
#   SKIP_BASELINE=        1 skips the broker-only baseline
#   GROWN=                N: run on a database already holding N `messages` rows of
#                         other conversations (years of many tenants' traffic), copied
#                         from a template that scripts/grow.sh grows once per N and
#                         schema (10 million: ~15 min and ~8 GB the first time, then
#                         ~1 min to copy per run); the bench's own seeding and
#                         workload are the same as on an empty database
# It prints one table, then a `RESULT key=value ...` line (scripts/scaling.sh reads
# it); the workers' logs go to $CARGO_TARGET_DIR/bench/ (default target/bench/).
#
# chaos reads BURST, BURST_GAP_MS and COALESCE_MS too (customers send bursts, the
# workers coalesce them), and PACED_RATE: > 0 publishes the messages at that rate
# while the fleet runs instead of all before it starts.
#
# context reads BENCH_ITERATIONS (context-building iterations, default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
command="${1:-}"
shift || true
case "$command" in
  bench|drain|chaos|context) ;;
  *) echo "usage: scripts/loadtest.sh bench|drain [N]|chaos [N]|context" >&2; exit 2 ;;
esac
# chaos restarts the services: start them first if they are not answering (the
# Redis Cluster and PgBouncer too when it runs through them: make chaos-short-fleet).
if [ "$command" = chaos ]; then
  if [ "${WORKER__REDIS__MODE:-}" = cluster ]; then scripts/services.sh fleet; else scripts/services.sh ensure; fi
fi
target="${CARGO_TARGET_DIR:-target}"
# Burst coalescing for every tenant of the run (the workers' default; off unless set).
if [ -n "${COALESCE_MS:-}" ]; then export WORKER__TURNS__COALESCE_MS="$COALESCE_MS"; fi
if [ -n "${COALESCE_MAX_MS:-}" ]; then export WORKER__TURNS__COALESCE_MAX_MS="$COALESCE_MAX_MS"; fi
cargo build --quiet --release -p chat-worker --bin worker -p chat-worker-loadtest --bin loadtest
# Private copies: another checkout sharing CARGO_TARGET_DIR may rebuild
# release/worker from its own sources while this run is going.
bin="$target/loadtest/$command"
mkdir -p "$bin"
cp "$target/release/worker" "$target/release/loadtest" "$bin/"
# The run's name: the isolated names start with it (bench and context share one).
case "$command" in context) name=bench ;; *) name="$command" ;; esac
source scripts/isolated.sh "$name"
if [ "$command" = bench ] && [ -n "${GROWN:-}" ]; then
  template=$(scripts/grow.sh "$GROWN" "$bin/worker")
  # FILE_COPY copies the template's files after a checkpoint; the default
  # (WAL_LOG) would write all of its gigabytes through the WAL and the buffer
  # cache first. The run's database is dropped at exit like any other.
  copying=$SECONDS
  psql "${base_db%/*}/postgres" -XAtq -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE chat_worker_$run TEMPLATE $template STRATEGY FILE_COPY"
  echo "database: a copy of $template ($GROWN messages rows; copied in $(( SECONDS - copying )) s)"
fi
case "$command" in
  bench)
    if [ -n "${CONCURRENCY:-}" ]; then
      export WORKER__WORKER__CONCURRENCY="$CONCURRENCY" WORKER__AMQP__PREFETCH="$CONCURRENCY"
    fi
    # FLOOD=N: the two-tenant flood, on 2 workers unless WORKERS says.
    workers="${WORKERS:-1}"
    if [ "${FLOOD:-0}" != 0 ] && [ -z "${WORKERS:-}" ]; then workers=2; fi
    args=(bench run --worker "$bin/worker" --n "${N:-20000}" --workers "$workers"
          --responder-delay-ms "${RESPONDER_DELAY_MS:-0}" --paced-seconds "${PACED_SECONDS:-10}"
          --paced-rate "${PACED_RATE:-0}" --burst "${BURST:-0}" --burst-gap-ms "${BURST_GAP_MS:-20}"
          --flood "${FLOOD:-0}" --log-dir "$target/bench")
    case "${SKIP_BASELINE:-}" in ""|0|false|no) ;; *) args+=(--skip-baseline) ;; esac
    ;;
  drain) args=(drain "$bin/worker" "${1:-10000}") ;;
  chaos)
    # Quicker retries than production, so faults are ridden out within the run.
    export WORKER__WORKER__RETRY_BASE_DELAY_MS="${WORKER__WORKER__RETRY_BASE_DELAY_MS:-500}"
    export WORKER__WORKER__MAX_ATTEMPTS="${WORKER__WORKER__MAX_ATTEMPTS:-8}"
    export WORKER__REDIS__LIVENESS_TTL_SECS="${WORKER__REDIS__LIVENESS_TTL_SECS:-3}"
    args=(chaos "$bin/worker" "${1:-20000}" --burst "${BURST:-0}" --burst-gap-ms "${BURST_GAP_MS:-20}"
          --paced-rate "${PACED_RATE:-0}")
    ;;
  context) args=(context "${BENCH_ITERATIONS:-300}") ;;
esac
"$bin/worker" migrate >/dev/null
"$bin/loadtest" "${args[@]}"
