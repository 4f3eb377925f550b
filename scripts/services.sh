#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and RabbitMQ answer on their local ports, installing
# Debian's packages and starting what is missing. Remembers what it started, so
# `stop` stops only that.
#
#   scripts/services.sh ensure   # start what is not answering
#   scripts/services.sh stop     # stop what `ensure` started
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

stop() {
  [ -f "$STATE" ] || return 0
  while read -r name; do
    case "$name" in
      postgres) as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main stop || true ;;
      redis) redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true ;;
      rabbitmq) as_root rabbitmqctl stop >/dev/null 2>&1 || true ;;
    esac
    say "stopped $name"
  done < "$STATE"
  rm -f "$STATE"
}

case "${1:-}" in
  ensure) ensure ;;
  stop) stop ;;
  *) echo "usage: $0 ensure|stop" >&2; exit 2 ;;
esac
