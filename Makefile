# The two commands: `make run` and `make test`. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV_SH := deploy/dev/env.sh
# Load the service URLs written by `deploy/dev/env.sh up` (if present) into every recipe.
LOAD_ENV := set -a; [ -f .dev/env ] && . .dev/env; set +a
CARGO ?= cargo

.PHONY: help run test lint fmt services down status toolchain build

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

toolchain: ## install what the build needs (Debian packages, rustfmt/clippy) when missing
	@command -v cargo >/dev/null || { echo "cargo is required: install Rust with rustup (https://rustup.rs)"; exit 1; }
	@$(ENV_SH) install

services: toolchain ## start MariaDB, the BigQuery and GCS emulators and a Pushgateway on loopback (idempotent)
	@$(ENV_SH) up

down: ## stop the local services
	@$(ENV_SH) down

status: ## show the local services
	@$(ENV_SH) status

build: toolchain ## build every binary (debug)
	$(CARGO) build --workspace --bins

run: services ## the demo end to end: seed the warehouse, sync it to MySQL, serve it (127.0.0.1:8080)
	@deploy/dev/demo/run.sh

.PHONY: demo-change
demo-change: services ## change the demo warehouse (a stats partition, nutrition rows) for the next sync
	@$(LOAD_ENV); python3 deploy/dev/demo/demo.py change && \
	  echo "stream-sync carries the nutrition change within ~5 s, partition-sync the stats within ~30 s:" && \
	  echo "  curl -s 'http://127.0.0.1:8080/v1/recipes/1/stats?from=2026-03-31'" && \
	  echo "  curl -s http://127.0.0.1:8080/v1/ingredients/1   (and /v1/ingredients/29: nutrition null)"

test: services ## install what is missing, start the services, run every crate's tests
	.dev/venv/bin/python -m unittest discover -s deploy/dev/emulator -t deploy/dev
	@$(LOAD_ENV); $(CARGO) test --workspace --all-targets -- --skip the_demo_warehouse_reaches_the_api
	@echo "end to end (demo dataset → partition-sync/stream-sync → recipe-api), latency printed:"
	@$(LOAD_ENV); $(CARGO) test --workspace --test e2e -- --nocapture
	@# The workspace test build above left target/debug/recipe-api: no second build with other features.
	deploy/dev/schemathesis.sh
	promtool test rules deploy/prometheus/alerts_test.yml
	promtool check config deploy/prometheus/prometheus.yml
	python3 deploy/grafana/check.py
	deploy/k8s-check.sh

lint: toolchain ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

.PHONY: k8s-check
k8s-check: toolchain ## render the k8s/ overlays, validate them offline (API schemas, deployment rules, sync.toml keys, alert rules)
	@deploy/k8s-check.sh

.PHONY: bench
bench: bench-sync bench-partition-scale bench-stream bench-stream-scale bench-api ## every benchmark, one after the other (about 15 minutes here); each prints its figures beside its baseline

.PHONY: bench-api
bench-api: services ## recipe-api vs its database ceiling: alternating rounds, medians (wrk, 16 connections, release build)
	@deploy/dev/bench-api.sh

.PHONY: images
images: toolchain ## build the three container images with podman (local base image, host-built binaries); print their sizes
	@deploy/dev/images.sh build

.PHONY: image-test
image-test: services images ## run the images as the k8s manifests do: migrate, serve + CRUD, partition-sync run, stream-sync run --once
	@deploy/dev/images.sh test

.PHONY: bench-stream
bench-stream: services ## stream-sync: full reload, no-change and 0.1%-change cycles (BENCH_ROWS=1000000, BENCH_BUCKETS=1024)
	@$(LOAD_ENV); $(CARGO) run --release -p stream-sync --example bench_stream

.PHONY: bench-stream-scale
bench-stream-scale: services ## stream-sync's peak memory syncing a 0.01% change of a table and of one 4x larger (BENCH_ROWS=250000)
	@$(CARGO) build --release -q -p stream-sync
	@$(LOAD_ENV); $(CARGO) run --release -q -p stream-sync --example bench_stream_scale

.PHONY: bench-partition-scale
bench-partition-scale: services ## partition-sync: replacing a 1M-row day by exchange vs one transaction with the replica's lag, and a two-year backlog under a deadline
	@$(LOAD_ENV); $(CARGO) run --release -q -p partition-sync --example bench_replace
	@$(LOAD_ENV); $(CARGO) run --release -q -p partition-sync --example bench_partition_scale

.PHONY: bench-sync
bench-sync: services ## partition-sync loader vs LOAD DATA LOCAL INFILE on 1,000,000 rows (BENCH_ROWS=...)
	@$(LOAD_ENV); $(CARGO) run --release -p partition-sync --example bench_sync
