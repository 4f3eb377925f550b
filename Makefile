# chat-worker — `make help` lists the targets. CI runs `.ci/run`, which runs `make check test test-fleet`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# cargo-nextest when present (parallel, per-test isolation), else cargo test.
TEST_RUNNER := $(shell command -v cargo-nextest >/dev/null 2>&1 && echo "cargo nextest run" || echo "cargo test")

.PHONY: help services test manifests check demo drain bench bench-context scaling fuzz chaos chaos-short build clean-services test-fleet chaos-short-fleet

# The fleet as production runs it (`scripts/services.sh fleet` starts it): a Redis
# Cluster of 3 primaries, PostgreSQL through PgBouncer in transaction mode (so no
# named prepared statements), LISTEN and migrations direct to PostgreSQL.
FLEET_ENV := WORKER__REDIS__MODE=cluster \
  REDIS_URL=redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003 \
  DATABASE_URL=postgres://postgres@127.0.0.1:6432/worker \
  DATABASE_LISTEN_URL=postgres://postgres@127.0.0.1:5432/worker \
  WORKER__DATABASE__PREPARED_STATEMENTS=false \
  PGBOUNCER_URL=postgres://postgres@127.0.0.1:6432/worker
# The integration tests (tests/it/<module>.rs) that matter through it: the happy
# path, the duplicate race, group commit, fencing and takeover after a crash, a copy
# while another worker holds the lock, Redis losing its data, the operator commands
# (locks list/release, state: every shard of the cluster), the pooled store and
# CLI (pooler.rs, which also checks that named statements really break there),
# retention beside running workers, and
# the cache invalidation by SQL within 2 s (not the other catalog_cache tests: they
# put proxies in front of one Redis or the database URL, which a fleet has not).
FLEET_MODULES := happy_path race group_commit fencing crash in_progress redis_loss operator pooler retention turns
FLEET_TESTS := catalog_cache::direct_sql_changes_reach_two_running_workers_within_two_seconds
fleet_space := $(subst ,, )
FLEET_FILTER := test(/^($(subst $(fleet_space),|,$(FLEET_MODULES)))::/)$(foreach t,$(FLEET_TESTS), | test(=$(t)))

# issue 15's first name for BURST: a run with it would silently be the ordinary one.
ifneq ($(BURSTS),)
$(error BURSTS=$(BURSTS): the setting is BURST, messages per burst (make bench BURST=5 BURST_GAP_MS=20))
endif

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

services: ## Start PostgreSQL, Redis and RabbitMQ if they are not answering (installs Debian packages if missing)
	@scripts/services.sh ensure

test: services ## Run the whole test suite (deploy/k8s offline checks, unit + integration on the real services, testkit's and the load tools' own)
	@scripts/validate-manifests.sh
	$(TEST_RUNNER) -p chat-worker -p chat-worker-testkit -p chat-worker-loadtest

test-fleet: ## The end-to-end tests that matter through a Redis Cluster (7001-7003) and PgBouncer (6432), which it starts
	@scripts/services.sh fleet
ifeq ($(TEST_RUNNER),cargo test)
	$(FLEET_ENV) cargo test -p chat-worker --test it -- $(addsuffix ::,$(FLEET_MODULES)) $(FLEET_TESTS)
else
	$(FLEET_ENV) cargo nextest run -p chat-worker --test it -E '$(FLEET_FILTER)'
endif

manifests: ## Check deploy/k8s offline: Kubernetes schemas (kubernetes-validate, into target/), KEDA and ServiceMonitor, cross-references
	@scripts/validate-manifests.sh

check: ## Formatting and lints of the whole workspace (worker, testkit, load tools), as CI runs them
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

build: ## Build the worker binary (release)
	cargo build --release --bin worker

demo: ## Run the worker end to end on local services: a scripted conversation, a burst with duplicates and bad messages
	@scripts/demo.sh

drain: services ## Measure how fast one `worker run` drains N messages (N=10000)
	@scripts/loadtest.sh drain $(or $(N),10000)

bench: services ## Throughput, latency, round trips, CPU vs the broker-only baseline; fails only on a broken guarantee (N=20000 WORKERS=1 CONCURRENCY=<worker.toml's concurrency, 1024> RESPONDER_DELAY_MS=0 PACED_SECONDS=10 PACED_RATE=<half the drain's> SKIP_BASELINE=1 to skip; BURST=5 BURST_GAP_MS=20: every customer sends bursts of 5 messages 20 ms apart, COALESCE_MS=100 COALESCE_MAX_MS=5000 the workers coalescing them; GROWN=10000000 on a database holding that many messages rows, grown once into a template by scripts/grow.sh; FLOOD=20000: the two-tenant flood instead, tenant A publishing that many at once beside tenant B's one every 100 ms, 2 workers, the http stub answering after 200 ms)
	@N=$(N) WORKERS=$(WORKERS) CONCURRENCY=$(CONCURRENCY) RESPONDER_DELAY_MS=$(RESPONDER_DELAY_MS) \
	  PACED_SECONDS=$(PACED_SECONDS) PACED_RATE=$(PACED_RATE) SKIP_BASELINE=$(SKIP_BASELINE) GROWN=$(GROWN) \
	  BURST=$(BURST) BURST_GAP_MS=$(BURST_GAP_MS) COALESCE_MS=$(COALESCE_MS) COALESCE_MAX_MS=$(COALESCE_MAX_MS) \
	  scripts/loadtest.sh bench

bench-context: services ## Context building cold / Redis / warm (BENCH_ITERATIONS=300)
	@scripts/loadtest.sh context

scaling: services ## `make bench` over WORKERS 1 2 4 x CONCURRENCY 1..1024: markdown table of msgs/s and CPU per service (~20 min)
	@scripts/scaling.sh

# What customers send in a chaos run: one message at a time, or BURST messages
# BURST_GAP_MS apart; all before the fleet starts, or at PACED_RATE messages/s while it runs.
CHAOS_ENV := BURST=$(BURST) BURST_GAP_MS=$(BURST_GAP_MS) PACED_RATE=$(PACED_RATE) \
  COALESCE_MS=$(COALESCE_MS) COALESCE_MAX_MS=$(COALESCE_MAX_MS)

chaos: ## Fault injection (N=20000): kill workers, flush/restart Redis, drop AMQP connections, restart PostgreSQL; checks every message's one outcome (and reports each conversation's reply order; BURST=5 BURST_GAP_MS=20: customers send bursts; PACED_RATE=200: published while the fleet runs, the order then judged too; COALESCE_MS=50: coalescing on)
	@$(CHAOS_ENV) scripts/loadtest.sh chaos $(or $(N),20000)

chaos-short: ## The short chaos run CI does (N=3000; BURST, BURST_GAP_MS, PACED_RATE as for chaos)
	@$(CHAOS_ENV) scripts/loadtest.sh chaos 3000

chaos-short-fleet: ## The short chaos run (N=3000) through the Redis Cluster and PgBouncer of `make test-fleet`
	@scripts/services.sh fleet
	@$(FLEET_ENV) $(CHAOS_ENV) scripts/loadtest.sh chaos 3000

fuzz: ## Fuzz decode + validate (SECONDS=600); crashing inputs land in fuzz/artifacts/
	@scripts/fuzz.sh $(or $(SECONDS),600)

clean-services: ## Stop the services that `make services` (or test-fleet, chaos-short-fleet) started
	@scripts/services.sh stop
