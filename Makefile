# chat-worker — `make help` lists the targets. CI runs `.ci/run`, which runs `make check test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# cargo-nextest when present (parallel, per-test isolation), else cargo test.
TEST_RUNNER := $(shell command -v cargo-nextest >/dev/null 2>&1 && echo "cargo nextest run" || echo "cargo test")

.PHONY: help services test check demo drain bench fuzz chaos chaos-short build clean-services

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

services: ## Start PostgreSQL, Redis and RabbitMQ if they are not answering (installs Debian packages if missing)
	@scripts/services.sh ensure

test: services ## Run the whole test suite (unit + integration on the real services)
	$(TEST_RUNNER)

check: ## Formatting and lints, as CI runs them
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

build: ## Build the worker binary (release)
	cargo build --release --bin worker

demo: ## Run the worker end to end on local services: a scripted conversation, a burst with duplicates and bad messages
	@scripts/demo.sh

drain: services ## Measure how fast one `worker run` drains N messages (N=10000)
	@scripts/drain.sh $(or $(N),10000)

bench: services ## Benchmarks (figures, not gates): context building cold / Redis / warm
	@scripts/bench.sh

chaos: ## Fault injection (N=20000): kill workers, flush/restart Redis, drop AMQP connections, restart PostgreSQL
	@scripts/chaos.sh $(or $(N),20000)

chaos-short: ## The short chaos run CI does (N=3000)
	@scripts/chaos.sh 3000

fuzz: ## Fuzz decode + validate (SECONDS=600); crashing inputs land in fuzz/artifacts/
	@scripts/fuzz.sh $(or $(SECONDS),600)

clean-services: ## Stop the services that `make services` started
	@scripts/services.sh stop
