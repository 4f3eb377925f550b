# Sourced by loadtest.sh: gives one run its own database, exchanges,
# queues and Redis prefix (through the WORKER__* environment), and removes them
# when the run exits. Sets $run.
run="${1:-run}$(date +%s)"
base_db="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/worker}"
export WORKER__DATABASE__URL="${base_db%/*}/chat_worker_$run?sslmode=disable"  # no TLS on loopback
export WORKER__AMQP__INBOUND_EXCHANGE="$run.chat.inbound"
export WORKER__AMQP__OUTBOUND_EXCHANGE="$run.chat.outbound"
export WORKER__AMQP__INBOUND_QUEUE="$run.worker.inbound"
export WORKER__AMQP__DEAD_QUEUE="$run.worker.dead"
export WORKER__AMQP__RETRY_QUEUE_PREFIX="$run.worker.retry"
export WORKER__REDIS__KEY_PREFIX="$run:"
export WORKER__ADMIN__ADDR="${WORKER__ADMIN__ADDR:-127.0.0.1:0}"  # several workers on one host
export WORKER_LOG="${WORKER_LOG:-warn,lapin=off}"

cleanup_isolated() {
  psql "${base_db%/*}/postgres" -qc "DROP DATABASE IF EXISTS chat_worker_$run WITH (FORCE)" >/dev/null 2>&1 || true
  # Every queue named after the run (the worker's, and any a harness declared),
  # found in one listing: rabbitmqctl takes about a second per call.
  if command -v rabbitmqctl >/dev/null; then
    local q queues
    queues=$(rabbitmqctl -q list_queues --no-table-headers name 2>/dev/null || true)
    for q in $queues; do
      [[ "$q" == "$run."* ]] || continue
      rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
    done
  fi
  redis-cli --scan --pattern "$run:*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup_isolated EXIT
