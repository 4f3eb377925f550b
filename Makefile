# chat-worker — `make help` lists the targets. CI runs `.ci/run`, which runs `make check test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# cargo-nextest when present (parallel, per-test isolation), else cargo test.
TEST_RUNNER := $(shell command -v cargo-nextest >/dev/null 2>&1 && echo "cargo nextest run" || echo "cargo test")

.PHONY: help services test check demo drain bench bench-context scaling fuzz chaos chaos-short build clean-services

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

services: ## Start PostgreSQL, Redis and RabbitMQ if they are not answering (installs Debian packages if missing)
	@scripts/services.sh ensure

test: services ## Run the whole test suite (unit + integration on the real services, and testkit's own)
	$(TEST_RUNNER) -p chat-worker -p chat-worker-testkit

check: ## Formatting and lints of the whole workspace (worker, testkit, load tools), as CI runs them
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

build: ## Build the worker binary (release)
	cargo build --release --bin worker

demo: ## Run the worker end to end on local services: a scripted conversation, a burst with duplicates and bad messages
	@scripts/demo.sh

drain: services ## Measure how fast one `worker run` drains N messages (N=10000)
	@scripts/loadtest.sh drain $(or $(N),10000)

bench: services ## Throughput, latency, round trips, CPU vs the broker-only baseline; fails only on a broken guarantee (N=20000 WORKERS=1 CONCURRENCY=<worker.toml's concurrency, 1024> RESPONDER_DELAY_MS=0 PACED_SECONDS=10 PACED_RATE=<half the drain's> SKIP_BASELINE=1 to skip; GROWN=10000000 on a database holding that many messages rows, grown once into a template by scripts/grow.sh)
	@N=$(N) WORKERS=$(WORKERS) CONCURRENCY=$(CONCURRENCY) RESPONDER_DELAY_MS=$(RESPONDER_DELAY_MS) \
	  PACED_SECONDS=$(PACED_SECONDS) PACED_RATE=$(PACED_RATE) SKIP_BASELINE=$(SKIP_BASELINE) GROWN=$(GROWN) \
	  scripts/loadtest.sh bench

bench-context: services ## Context building cold / Redis / warm (BENCH_ITERATIONS=300)
	@scripts/loadtest.sh context

scaling: services ## `make bench` over WORKERS 1 2 4 x CONCURRENCY 1..1024: markdown table of msgs/s and CPU per service (~20 min)
	@scripts/scaling.sh

chaos: ## Fault injection (N=20000): kill workers, flush/restart Redis, drop AMQP connections, restart PostgreSQL
	@scripts/loadtest.sh chaos $(or $(N),20000)

chaos-short: ## The short chaos run CI does (N=3000)
	@scripts/loadtest.sh chaos 3000

fuzz: ## Fuzz decode + validate (SECONDS=600); crashing inputs land in fuzz/artifacts/
	@scripts/fuzz.sh $(or $(SECONDS),600)

clean-services: ## Stop the services that `make services` started
	@scripts/services.sh stop
