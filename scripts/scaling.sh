#!/usr/bin/env bash
# `make scaling`: `make bench` for WORKERS in 1 2 4 and CONCURRENCY (= prefetch) in
# 1 4 16 64 256 1024, then one markdown table: drain msgs/s, paced latency, and the
# CPU seconds each process used per run with the cores it used while draining, to
# see which one saturates first. The broker-only baseline runs once: with 1 worker's worth at concurrency 256
# (or, when those are not tried, with the first run's settings).
#
#   SCALING_WORKERS="1 2 4"                 worker counts to try
#   SCALING_CONCURRENCY="1 4 16 64 256 1024" concurrencies to try
#   SCALING_N=                              N for every run (default: smaller at low
#                                           concurrency, so each drain takes <= ~30 s)
#   PACED_SECONDS=5  RESPONDER_DELAY_MS=0   passed on to `scripts/loadtest.sh bench`
#
# Each run's full output is kept in $CARGO_TARGET_DIR/scaling/ (default target/scaling/).
# Exits non-zero if any run failed or broke a guarantee (the table still prints).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
out="$target/scaling"
mkdir -p "$out"

# Messages per run by concurrency, so each drain takes <= ~30 s: on this 2-core
# machine one worker drained ~140 msg/s at concurrency 1, ~320 at 4, 450-900 above.
n_for() {
  case "$1" in
    1) echo 3000 ;;
    4) echo 8000 ;;
    *) echo 15000 ;;
  esac
}

field() { # key RESULT-line
  sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"
}

workers_list="${SCALING_WORKERS:-1 2 4}"
concurrency_list="${SCALING_CONCURRENCY:-1 4 16 64 256 1024}"
baseline_at="$(set -- $workers_list; echo "$1") $(set -- $concurrency_list; echo "$1")"
if [[ " $workers_list " == *" 1 "* && " $concurrency_list " == *" 256 "* ]]; then baseline_at="1 256"; fi

lines=()
status=0
for w in $workers_list; do
  for c in $concurrency_list; do
    n="${SCALING_N:-$(n_for "$c")}"
    skip=1
    if [ "$w $c" = "$baseline_at" ]; then skip=; fi
    log="$out/workers$w-concurrency$c.log"
    printf 'scaling: WORKERS=%s CONCURRENCY=%s N=%s ... ' "$w" "$c" "$n" >&2
    if N="$n" WORKERS="$w" CONCURRENCY="$c" PACED_SECONDS="${PACED_SECONDS:-5}" SKIP_BASELINE="$skip" \
      RESPONDER_DELAY_MS="${RESPONDER_DELAY_MS:-0}" scripts/loadtest.sh bench >"$log" 2>&1; then
      echo "done" >&2
    else
      status=1
      echo "FAILED (see $log)" >&2
    fi
    lines+=("$(grep '^RESULT ' "$log" | tail -n1 || echo "RESULT workers=$w concurrency=$c n=$n ok=failed")")
  done
done

cpu() { # key-suffix RESULT-line: CPU seconds over the run, and cores used while draining
  printf '%s (%s)' "$(field "cpu_$1_s" "$2")" "$(field "drain_cores_$1" "$2")"
}

echo
echo "| workers | concurrency | N | msgs/s | paced p50 / p99 ms | worker | postgres | postgres, run's backends | redis | rabbitmq | bench | PG rt/msg | Redis rt/msg | ok |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
baseline=
for line in "${lines[@]}"; do
  printf '| %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
    "$(field workers "$line")" "$(field concurrency "$line")" "$(field n "$line")" "$(field msgs_per_s "$line")" \
    "$(field paced_p50_ms "$line")" "$(field paced_p99_ms "$line")" \
    "$(cpu worker "$line")" "$(cpu postgres "$line")" "$(cpu postgres_run "$line")" "$(cpu redis "$line")" \
    "$(cpu rabbitmq "$line")" "$(cpu bench "$line")" \
    "$(field pg_rt_per_msg "$line")" "$(field redis_rt_per_msg "$line")" "$(field ok "$line")"
  b="$(field baseline_msgs_per_s "$line")"
  if [ -n "$b" ] && [ "$b" != "-" ]; then baseline="$b"; fi
done
echo
echo "CPU columns: seconds over the run (worker start -> stop), and in parentheses the cores used"
echo "while draining (the machine has $(nproc) cores); postgres, redis and rabbitmq are machine-wide"
echo "(anything else using them counts too), \"postgres, run's backends\" is the run's database alone."
set -- $baseline_at
echo "Broker-only baseline ($1 process(es), concurrency $2): ${baseline:--} msgs/s"
exit "$status"
