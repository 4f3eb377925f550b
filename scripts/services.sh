#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and RabbitMQ answer on their local ports, installing
# Debian's packages and starting what is missing. Remembers what it started, so
# `stop` stops only that.
#
#   scripts/services.sh ensure   # start what is not answering
#   scripts/services.sh fleet    # ensure, plus a 3-primary Redis Cluster on 7001-7003
#                                # and PgBouncer (transaction mode) on 6432 (`make test-fleet`)
#   scripts/services.sh stop     # stop what `ensure` and `fleet` started
#   scripts/services.sh cluster-flushall        # the chaos run's faults on that cluster:
#   scripts/services.sh cluster-restart [PORT]  # FLUSHALL every primary; restart one (7001)
#
# Ports follow CONTRACT §1's defaults: 5432, 6379, 5672.
set -euo pipefail

STATE_DIR="${SERVICES_STATE_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}"
STATE="$STATE_DIR/services-started"
mkdir -p "$STATE_DIR"

say() { printf 'services: %s\n' "$*" >&2; }

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; return 1; fi
}

APT_UPDATED=
install_if_missing() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  say "installing Debian package $2"
  if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

wait_for() { # port name
  for _ in $(seq 1 120); do answers "$1" && return 0; sleep 0.5; done
  say "$2 did not start answering on port $1"; return 1
}

start_postgres() {
  install_if_missing pg_ctlcluster postgresql
  local version; version=$(ls /etc/postgresql | sort -V | tail -n1)
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # The worker's default URL has no password: trust local TCP connections, as on
  # the development machines. Only done on a PostgreSQL this script starts.
  if ! grep -q 'chat-worker demo' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust # chat-worker demo\nhost all all ::1/128 trust # chat-worker demo' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
}

start_redis() {
  install_if_missing redis-server redis-server
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/chat-worker.log
}

start_rabbitmq() {
  install_if_missing rabbitmq-server rabbitmq-server
  as_root rabbitmq-server -detached
}

ensure() {
  touch "$STATE"
  local port name
  for entry in 5432:postgres 6379:redis 5672:rabbitmq; do
    port=${entry%%:*}; name=${entry#*:}
    if answers "$port"; then continue; fi
    say "$name is not answering on $port: starting it"
    "start_$name"
    wait_for "$port" "$name"
    grep -qx "$name" "$STATE" || echo "$name" >> "$STATE"
  done
  # RabbitMQ opens its port before it accepts logins; wait until it is fully up.
  if grep -qx rabbitmq "$STATE" && command -v rabbitmqctl >/dev/null; then
    as_root rabbitmqctl await_startup >/dev/null 2>&1 || true
  fi
}

# --- The fleet: a Redis Cluster and a PgBouncer, as production runs them ---------
#
# Machine-wide (like /var/lib/redis above), so that every checkout and CI's fresh
# clone find the same nodes.conf files: a node restarted by any of them rejoins.
FLEET_DIR="${FLEET_DIR:-/var/lib/chat-worker-fleet}"
CLUSTER_PORTS=(7001 7002 7003)
PGBOUNCER_PORT=6432

rcli() { redis-cli -h 127.0.0.1 -p "$@"; } # port command...

cluster_field() { # port field: one line of CLUSTER INFO, empty when the node does not answer
  rcli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

start_cluster_node() { # port
  local dir="$FLEET_DIR/redis-$1"
  as_root mkdir -p "$dir"
  # nodes-PORT.conf is the node's membership (its id, the others, its slots):
  # kept across restarts, it is what lets a restarted node rejoin. Its data is
  # not kept (no RDB, no AOF), as with the Redis on 6379. A node down for more
  # than the 5 s node timeout is marked failed; once it is back, the cluster says
  # ok again within 2 timeouts of that mark (15 s each by default: up to 30 s).
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port "$1" \
    --cluster-enabled yes --cluster-config-file "$dir/nodes-$1.conf" --cluster-node-timeout 5000 \
    --save "" --appendonly no --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >/dev/null
}

# Formed: every node says cluster_state:ok with all 16384 slots assigned and knows
# exactly our nodes, each a primary without a failure flag.
cluster_formed() {
  local port nodes
  for port in "${CLUSTER_PORTS[@]}"; do
    [ "$(cluster_field "$port" cluster_state)" = ok ] || return 1
    [ "$(cluster_field "$port" cluster_slots_assigned)" = 16384 ] || return 1
    [ "$(cluster_field "$port" cluster_known_nodes)" = "${#CLUSTER_PORTS[@]}" ] || return 1
  done
  # CLUSTER NODES: id, ip:port@cport, flags, primary, ping, pong, epoch, link, slots...
  nodes=$(rcli "${CLUSTER_PORTS[0]}" cluster nodes 2>/dev/null | tr -d '\r')
  for port in "${CLUSTER_PORTS[@]}"; do
    awk -v at="127.0.0.1:$port@" 'index($2, at) == 1 && $3 ~ /master/ && $3 !~ /fail/ && $8 == "connected" { found = 1 }
      END { exit !found }' <<<"$nodes" || return 1
  done
}

# A node that has never joined (or was reset): it knows only itself and holds no slot.
cluster_node_fresh() { # port
  [ "$(cluster_field "$1" cluster_known_nodes)" = 1 ] && [ "$(cluster_field "$1" cluster_slots_assigned)" = 0 ]
}

cluster_summary() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do
    say "  127.0.0.1:$port: state=$(cluster_field "$port" cluster_state) slots_assigned=$(cluster_field "$port" cluster_slots_assigned) known_nodes=$(cluster_field "$port" cluster_known_nodes)"
  done
}

wait_for_cluster() { # seconds
  for _ in $(seq 1 $(( $1 * 2 ))); do cluster_formed && return 0; sleep 0.5; done
  return 1
}

create_cluster() {
  local port hosts=()
  for port in "${CLUSTER_PORTS[@]}"; do hosts+=("127.0.0.1:$port"); done
  say "forming the Redis Cluster: ${hosts[*]} (3 primaries, no replicas)"
  redis-cli --cluster create "${hosts[@]}" --cluster-replicas 0 --cluster-yes >"$FLEET_DIR/cluster-create.log" 2>&1 \
    || { cat "$FLEET_DIR/cluster-create.log" >&2; say "redis-cli --cluster create failed"; return 1; }
}

# Ours: the node's working directory is the one start_cluster_node gives it, so
# its data (test data only, never persisted) is ours to throw away.
cluster_node_ours() { # port
  [ "$(rcli "$1" config get dir 2>/dev/null | tr -d '\r' | sed -n 2p)" = "$FLEET_DIR/redis-$1" ]
}

reform_cluster() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do
    if ! cluster_node_ours "$port"; then
      say "the node on $port was not started by this script (its dir is not $FLEET_DIR/redis-$port): not resetting it."
      say "fix it by hand, or stop the nodes on ${CLUSTER_PORTS[*]} and run this again"
      return 1
    fi
  done
  say "re-forming it: FLUSHALL and CLUSTER RESET HARD on every node (their keys are test data, lost anyway on a restart)"
  for port in "${CLUSTER_PORTS[@]}"; do
    rcli "$port" flushall >/dev/null && rcli "$port" cluster reset hard >/dev/null
  done
  create_cluster
}

ensure_cluster() {
  install_if_missing redis-server redis-server
  install_if_missing redis-cli redis-tools
  as_root mkdir -p "$FLEET_DIR"
  local port
  for port in "${CLUSTER_PORTS[@]}"; do
    if answers "$port"; then
      if ! rcli "$port" cluster info >/dev/null 2>&1 || [ -z "$(cluster_field "$port" cluster_state)" ]; then
        say "something answers on $port but is not a Redis with cluster support: stop it, or free ports ${CLUSTER_PORTS[*]}"
        return 1
      fi
      continue
    fi
    say "redis cluster node $port is not answering: starting it"
    start_cluster_node "$port"
    wait_for "$port" "redis cluster node"
    grep -qx "redis-cluster-$port" "$STATE" || echo "redis-cluster-$port" >> "$STATE"
  done
  if cluster_formed; then :
  else
    local fresh=0
    for port in "${CLUSTER_PORTS[@]}"; do cluster_node_fresh "$port" && fresh=$((fresh + 1)); done
    if [ "$fresh" = "${#CLUSTER_PORTS[@]}" ]; then
      create_cluster
    elif [ "$fresh" = 0 ] && wait_for_cluster 30; then
      : # restarted nodes rejoined from their nodes.conf (a primary marked failed is cleared within 2 node timeouts)
    else
      say "the Redis Cluster on ${CLUSTER_PORTS[*]} is broken (a node lost its nodes.conf, was reset, or its slots are missing):"
      cluster_summary
      reform_cluster
    fi
  fi
  if ! wait_for_cluster 60; then
    say "the Redis Cluster did not reach cluster_state:ok with 16384 slots assigned:"
    cluster_summary
    return 1
  fi
}

# For the chaos run: FLUSHALL on every primary (a cluster has no FLUSHALL of its own).
cluster_flushall() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do rcli "$port" flushall >/dev/null; done
}

# For the chaos run: one primary goes down, comes back empty (nothing persisted)
# and rejoins from its nodes.conf, still serving its slots.
cluster_restart() { # [port]
  local port="${1:-${CLUSTER_PORTS[0]}}"
  rcli "$port" shutdown nosave >/dev/null 2>&1 || true
  for _ in $(seq 1 40); do answers "$port" || break; sleep 0.25; done
  start_cluster_node "$port"
  wait_for "$port" "redis cluster node"
  wait_for_cluster 60 || { say "the cluster did not recover after restarting $port:"; cluster_summary; return 1; }
}

PGB_DIR="$FLEET_DIR/pgbouncer"

pgbouncer_pid() { # the pid of the PgBouncer this script started, if it runs
  local pid
  pid=$(cat "$PGB_DIR/pgbouncer.pid" 2>/dev/null) || return 1
  # A pid left by a killed PgBouncer may be another process's by now, or a zombie.
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pgbouncer ] \
    && [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != Z ] && echo "$pid"
}

pgbouncer_config() {
  # Server connections for user postgres, all databases together, stay under half
  # of PostgreSQL's max_connections: the other half is for what goes direct (the
  # workers' LISTEN connections, migrations, the tests' and tools' own queries).
  local max cap pool
  max=$(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -XAtc 'SHOW max_connections')
  cap=$(( max / 2 )); pool=$(( cap < 16 ? cap : 16 ))
  cat <<INI
; Written by scripts/services.sh fleet: edits are overwritten.
[databases]
; Every database, those the tests create (cw_test_<id>) included, on the local PostgreSQL.
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid

; PostgreSQL trusts 127.0.0.1; trust still needs the user in auth_file.
auth_type = trust
auth_file = $PGB_DIR/userlist.txt
admin_users = postgres

pool_mode = transaction
; Not run in transaction mode (server_reset_query_always = 0), as in production:
; a session-level SET outside a transaction stays on the server connection and
; leaks to the next client, so the worker must use SET LOCAL.
server_reset_query = DISCARD ALL
server_reset_query_always = 0

; Each database is a pool of its own (every test has one): $pool server connections
; per pool, as many as one worker's own pool (database.max_connections), at most
; $cap in all (max_connections=$max); idle ones are closed soon, so that a finished
; test's pool gives its share back to the next ones.
default_pool_size = $pool
max_user_connections = $cap
max_client_conn = 1000
server_idle_timeout = 10
autodb_idle_timeout = 60
; A restarted PostgreSQL (the chaos run) is tried again after 1 s, not 15.
server_login_retry = 1

; sqlx sends extra_float_digits in its startup packet. Not \`options\`: a client
; that sends settings there (-c statement_timeout=...) would lose them silently,
; so it is refused instead.
ignore_startup_parameters = extra_float_digits

log_connections = 0
log_disconnections = 0
INI
}

ensure_pgbouncer() {
  if [ ! -x /usr/sbin/pgbouncer ]; then
    install_if_missing pgbouncer pgbouncer
    # Where services start on install (not in containers), Debian's own service
    # now holds 6432 with its default config (md5, no databases): not ours to use.
    if answers "$PGBOUNCER_PORT"; then as_root service pgbouncer stop >/dev/null 2>&1 || true; fi
  fi
  # PgBouncer refuses to run as root: it runs as postgres, in a directory it owns.
  as_root mkdir -p "$PGB_DIR"
  as_root chown postgres: "$PGB_DIR"
  local config; config=$(pgbouncer_config)
  if [ "$(cat "$PGB_DIR/userlist.txt" 2>/dev/null)" != '"postgres" ""' ]; then
    echo '"postgres" ""' | as_root tee "$PGB_DIR/userlist.txt" >/dev/null
    as_root chown postgres: "$PGB_DIR/userlist.txt"
  fi
  if [ "$(cat "$PGB_DIR/pgbouncer.ini" 2>/dev/null)" != "$config" ]; then
    printf '%s\n' "$config" | as_root tee "$PGB_DIR/pgbouncer.ini" >/dev/null
    as_root chown postgres: "$PGB_DIR/pgbouncer.ini"
    local pid; if pid=$(pgbouncer_pid); then say "pgbouncer's config changed: reloading it"; as_root kill -HUP "$pid"; fi
  fi
  if pgbouncer_pid >/dev/null; then :
  elif answers "$PGBOUNCER_PORT"; then
    # Not ours: usable only if it is a PgBouncer in transaction mode.
    if psql -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U postgres -d pgbouncer -XAtc 'SHOW CONFIG' 2>/dev/null \
        | grep -qx 'pool_mode|transaction|.*'; then
      say "a PgBouncer this script did not start answers on $PGBOUNCER_PORT in transaction mode: using it"
    else
      say "something answers on $PGBOUNCER_PORT that is not a PgBouncer in transaction mode: stop it (Debian's own pgbouncer service?)"
      return 1
    fi
  else
    say "pgbouncer is not answering on $PGBOUNCER_PORT: starting it"
    as_root rm -f "$PGB_DIR/pgbouncer.pid" # stale (see pgbouncer_pid): PgBouncer would refuse to start
    as_root /usr/sbin/pgbouncer -d -u postgres "$PGB_DIR/pgbouncer.ini"
    wait_for "$PGBOUNCER_PORT" pgbouncer
    grep -qx pgbouncer "$STATE" || echo pgbouncer >> "$STATE"
  fi
  psql -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U postgres -d postgres -XAtqc 'SELECT 1' >/dev/null \
    || { say "PgBouncer on $PGBOUNCER_PORT does not reach PostgreSQL (see $PGB_DIR/pgbouncer.log)"; return 1; }
}

stop_pgbouncer() {
  local pid
  pid=$(pgbouncer_pid) || return 0
  as_root kill -INT "$pid" # safe shutdown: lets running transactions finish
  for _ in $(seq 1 20); do pgbouncer_pid >/dev/null || return 0; sleep 0.5; done
  as_root kill -TERM "$pid" || true
}

fleet() {
  ensure
  ensure_cluster
  ensure_pgbouncer
  say "fleet ready: Redis Cluster on 127.0.0.1:${CLUSTER_PORTS[*]} (cluster_state:ok, 16384 slots), PgBouncer on 127.0.0.1:$PGBOUNCER_PORT (transaction mode) in front of PostgreSQL on 5432"
}

stop() {
  [ -f "$STATE" ] || return 0
  while read -r name; do
    case "$name" in
      postgres) as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main stop || true ;;
      redis) redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true ;;
      rabbitmq) as_root rabbitmqctl stop >/dev/null 2>&1 || true ;;
      redis-cluster-*) rcli "${name#redis-cluster-}" shutdown nosave >/dev/null 2>&1 || true ;;
      pgbouncer) stop_pgbouncer ;;
    esac
    say "stopped $name"
  done < "$STATE"
  rm -f "$STATE"
}

case "${1:-}" in
  ensure) ensure ;;
  fleet) fleet ;;
  stop) stop ;;
  cluster-flushall) cluster_flushall ;;
  cluster-restart) cluster_restart "${2:-}" ;;
  *) echo "usage: $0 ensure|fleet|stop|cluster-flushall|cluster-restart [PORT]" >&2; exit 2 ;;
esac
