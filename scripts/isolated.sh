# Sourced by loadtest.sh: gives one run its own database, exchanges,
# queues and Redis prefix (through the WORKER__* environment), and removes them
# when the run exits. Sets $run.
#
# Through the fleet (`make chaos-short-fleet`: DATABASE_URL on PgBouncer,
# DATABASE_LISTEN_URL direct, WORKER__REDIS__MODE=cluster with REDIS_URL a list of
# seeds), both database URLs are pointed at the run's database, the database is
# dropped over the direct one, and the run's keys are removed from every primary.
run="${1:-run}$(date +%s)"
base_db="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/worker}"
export WORKER__DATABASE__URL="${base_db%/*}/chat_worker_$run?sslmode=disable"  # no TLS on loopback
# Where the run's database is created, dropped and inspected: PostgreSQL itself,
# not a pooler in front of it.
admin_db="${DATABASE_LISTEN_URL:-$base_db}"
if [ -n "${DATABASE_LISTEN_URL:-}" ]; then
  export DATABASE_LISTEN_URL="${admin_db%/*}/chat_worker_$run?sslmode=disable"
fi
export WORKER__AMQP__INBOUND_EXCHANGE="$run.chat.inbound"
export WORKER__AMQP__OUTBOUND_EXCHANGE="$run.chat.outbound"
export WORKER__AMQP__INBOUND_QUEUE="$run.worker.inbound"
export WORKER__AMQP__DEAD_QUEUE="$run.worker.dead"
export WORKER__AMQP__RETRY_QUEUE_PREFIX="$run.worker.retry"
export WORKER__REDIS__KEY_PREFIX="$run:"
export WORKER__ADMIN__ADDR="${WORKER__ADMIN__ADDR:-127.0.0.1:0}"  # several workers on one host
export WORKER_LOG="${WORKER_LOG:-warn,lapin=off}"

# host and port of every primary of the cluster the first seed of REDIS_URL is in.
cluster_primaries() {
  local seed="${REDIS_URL%%,*}"
  seed="${seed#*://}"; seed="${seed##*@}"; seed="${seed%%/*}"
  redis-cli -h "${seed%:*}" -p "${seed##*:}" cluster nodes 2>/dev/null | tr -d '\r' |
    awk '$3 ~ /master/ && $3 !~ /fail/ { split($2, a, "@"); sub(/:/, " ", a[1]); print a[1] }'
}

cleanup_isolated() {
  psql "${admin_db%/*}/postgres" -qc "DROP DATABASE IF EXISTS chat_worker_$run WITH (FORCE)" >/dev/null 2>&1 || true
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
  if [ "${WORKER__REDIS__MODE:-}" = cluster ]; then
    # Each primary holds its own keys; one DEL per key, since a DEL of several
    # keys in different slots is refused (CROSSSLOT).
    local host port
    while read -r host port; do
      redis-cli -h "$host" -p "$port" --scan --pattern "$run:*" 2>/dev/null | sed 's/^/DEL /' |
        redis-cli -h "$host" -p "$port" >/dev/null 2>&1 || true
    done < <(cluster_primaries)
  else
    redis-cli --scan --pattern "$run:*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
  fi
}
trap cleanup_isolated EXIT
