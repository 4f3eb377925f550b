#!/usr/bin/env bash
# A template database holding N `messages` rows of history (scripts/grow.sql),
# for `make bench GROWN=N`: scripts/loadtest.sh copies each run's database from it
# (CREATE DATABASE ... TEMPLATE), since growing ten million rows takes minutes and
# copying the files seconds.
#
#   scripts/grow.sh N WORKER_BINARY    prints the template's name on stdout,
#                                      progress on stderr
#
# The template is chat_worker_grown_<N>_<hash>, the hash over migrations/ and
# scripts/grow.sql: a schema change (or a change to what is grown) builds a new
# one rather than benching on a stale schema. A template is complete only once
# its COMMENT says so (set last): one left half-grown by an interrupted run is
# dropped and grown again; a complete one is reused as it is.
#
# N is rounded down to an even number (every inbound row has its reply). The
# template takes about 0.8 KB of disk per row (10 million: ~8 GB), and so does
# each run's copy while the run lasts. Templates of older hashes are left in
# place (another checkout may still use them); grow.sh lists them.
set -euo pipefail
cd "$(dirname "$0")/.."

rows="${1:-}"
worker="${2:-}"
if ! [[ "$rows" =~ ^[0-9]+$ ]] || (( rows < 2 )) || [ ! -x "$worker" ]; then
  echo "usage: scripts/grow.sh N WORKER_BINARY (N: messages rows, at least 2)" >&2
  exit 2
fi

base_db="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/worker}"
server="${base_db%/*}"
admin() { psql "$server/postgres" -XAtq -v ON_ERROR_STOP=1 "$@"; }

# sha256sum prints each file's name beside its hash, so a renamed migration
# changes the hash too.
schema=$({ find migrations -type f -print0 | sort -z | xargs -0 sha256sum; sha256sum scripts/grow.sql; } \
  | sha256sum | cut -c1-12)
template="chat_worker_grown_${rows}_${schema}"
marker="chat-worker grown template, complete"

comment_of_template() {
  admin -c "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = '$template'"
}

# Two runs asking for the same template at once: the second waits for the
# first to finish growing it, then reuses it.
exec {lock}>"${TMPDIR:-/tmp}/$template.lock"
flock "$lock"

if [[ "$(comment_of_template)" == "$marker"* ]]; then
  echo "grow: reusing $template ($(comment_of_template | sed "s/^$marker: //"))" >&2
  echo "$template"
  exit 0
fi

stale=$(admin -c "SELECT string_agg(datname || ' (' || pg_size_pretty(pg_database_size(datname)) || ')', ', ')
                    FROM pg_database WHERE datname LIKE 'chat_worker_grown_%' AND datname <> '$template'")
if [ -n "$stale" ]; then
  echo "grow: other grown templates (not used here; drop one with ALTER DATABASE <name> IS_TEMPLATE false; DROP DATABASE <name>): $stale" >&2
fi

# A half-grown template from an interrupted run: start over.
if [ -n "$(admin -c "SELECT 1 FROM pg_database WHERE datname = '$template'")" ]; then
  echo "grow: dropping the incomplete $template" >&2
  admin -c "ALTER DATABASE $template WITH IS_TEMPLATE false"
  admin -c "DROP DATABASE $template WITH (FORCE)"
fi

# One tenant per 10,000 rows, between 10 and 1,000 (10 million rows: 1,000 tenants).
tenants=$(( rows / 10000 < 10 ? 10 : (rows / 10000 > 1000 ? 1000 : rows / 10000) ))
echo "grow: $template: $rows messages rows of $tenants tenants (migrate, load, index, VACUUM ANALYZE)" >&2
started=$SECONDS
admin -c "CREATE DATABASE $template"
# The schema exactly as the worker creates it, so the template is what
# `worker migrate` would leave (and it finds nothing to do on the copies).
WORKER__DATABASE__URL="$server/$template?sslmode=disable" "$worker" migrate >/dev/null
psql "$server/$template" -X -v grown="$rows" -v tenants="$tenants" -f scripts/grow.sql >&2
took=$(( SECONDS - started ))

# Closed to connections, so nothing can keep it open and make a copy fail
# ("source database is being accessed by other users"); IS_TEMPLATE keeps a
# stray DROP DATABASE off it. Then, last, the mark that it is complete.
admin -c "ALTER DATABASE $template WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
admin -c "COMMENT ON DATABASE $template IS '$marker: $rows rows of $tenants tenants, grown in $took s on $(date -u +%Y-%m-%d)'"
echo "grow: $template complete in $took s" >&2
echo "$template"
