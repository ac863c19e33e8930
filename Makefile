# ModelRollout operator. `make help` lists every target.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

PYTHON ?= python3
CACHE ?= $(HOME)/.cache/modelrollout
export MODELROLLOUT_CACHE := $(CACHE)
# The product (operator/) and the local environment (devenv/), importable with no install.
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)/devenv$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help
help: ## List every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: install
install: ## Install the product (with the report extra), the local environment (modelrollout-dev), the dev tools, and Debian's prometheus and lua
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev,report]' -e devenv
	@bash hack/install-system-deps.sh

.PHONY: binaries
binaries: ## Build (or reuse) etcd, kube-apiserver, controller-manager, scheduler, kubectl, kwok, helm, KServe's controller into ~/.cache
	@bash hack/build-binaries.sh

.PHONY: crds
crds: ## Generate crds/ (and the chart's copy) from the pydantic models
	$(PYTHON) -m modelrollout.api.crd > crds/modelrollout.io_modelrollouts.yaml
	@if [ -x hack/sync-chart-crds.sh ]; then bash hack/sync-chart-crds.sh; fi

.PHONY: lint
lint: ## ruff (format and lint), mypy --strict (product and devenv), and the import contracts (pure engine; the product never imports devenv)
	ruff format --check operator devenv tests
	ruff check operator devenv tests
	mypy
	lint-imports

.PHONY: fmt
fmt: ## Format the code
	ruff format operator devenv tests
	ruff check --fix operator devenv tests

# Two pytest workers, a file at a time: each worker starts its own local cluster and
# Prometheus (the fixtures are per session), and the end-to-end tier mostly waits, so
# two workers on two cores nearly halve it. PYTEST_WORKERS= runs them one by one.
PYTEST_WORKERS ?= -n 2 --dist loadfile

.PHONY: unit
unit: ## Unit, table and property tests only (no cluster)
	$(PYTHON) -m pytest tests/unit -q

.PHONY: e2e
e2e: install binaries ## End-to-end tests against a real local API server and Prometheus
	$(PYTHON) -m pytest tests/e2e -q $(PYTEST_WORKERS)

.PHONY: test
test: install binaries ## Every test: unit, property and end-to-end (builds or reuses the binaries first)
	$(PYTHON) -m pytest -q $(PYTEST_WORKERS)

.PHONY: demo
demo: install binaries ## Start a local cluster and Prometheus, run two rollouts (one good, one regressed), tear down
	$(PYTHON) -m modelrollout_devenv demo

.PHONY: up
up: install binaries ## Start the local environment and keep it running (Ctrl-C tears it down)
	$(PYTHON) -m modelrollout_devenv up

.PHONY: study
study: install binaries ## The gate simulation study (about 20 minutes); numbers go to docs/analysis.md
	$(PYTHON) -m tests.study.simulation_study

.PHONY: calibrate
calibrate: ## The judge end to end on a simulated world (2,000 healthy rollouts, 4 regressions; under 15 minutes); table to docs/analysis.md
	$(PYTHON) -m tests.calibration.calibrate

.PHONY: bench
bench: ## Engine and reconcile benchmarks; numbers go to docs/benchmarks.md
	$(PYTHON) -m tests.bench.bench_engine

.PHONY: bench-idle
bench-idle: ## Idle cost and status writes per decision at 100 and 1,000 finished rollouts (BENCH_IDLE_ARGS=--with-5000 adds 5,000); raw JSON to docs/bench-idle.json
	$(PYTHON) -m tests.bench.bench_idle $(BENCH_IDLE_ARGS)

.PHONY: bench-scale
bench-scale: ## Scale-out: 5,000 rollouts over 4 shards, RSS per replica, one writer per rollout, standby takeover (BENCH_SCALE_ARGS=--quick: 20 over 2); raw JSON to docs/bench-scale.json
	$(PYTHON) -m tests.bench.bench_scale $(BENCH_SCALE_ARGS)

.PHONY: bench-guard
bench-guard: install binaries ## Decision lag of the fast guard: 50 injected breaches, breach visible in Prometheus -> candidate at 0% (about 10 minutes)
	$(PYTHON) -m tests.bench.bench_guard --without-guard 5

.PHONY: bench-flagger
bench-flagger: install binaries ## Side by side with Flagger (built with hack/build-binaries.sh flagger): breach->rollback, false rollbacks, CPU/RSS with 100 rollouts (about two hours)
	@bash hack/build-binaries.sh flagger
	nice -n 10 $(PYTHON) -m tests.bench.bench_flagger

.PHONY: bench-e2e
bench-e2e: install binaries ## Under 30 minutes: decision lag (bench-guard), idle cost at 100/1,000, 1,000 rollouts over 4 shards, Flagger's quick side by side (docs/benchmarks.md); bench-scale and bench-flagger (about two hours: healthy runs at the defaults too) are the full runs
	$(PYTHON) -m tests.bench.bench_guard --without-guard 5
	$(PYTHON) -m tests.bench.bench_idle
	$(PYTHON) -m tests.bench.bench_scale -n 1000
	@bash hack/build-binaries.sh flagger
	nice -n 10 $(PYTHON) -m tests.bench.bench_flagger --quick

.PHONY: clean
clean: ## Remove build leftovers in the clone (the binary cache in ~/.cache stays)
	rm -rf build dist *.egg-info devenv/build devenv/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis

-include hack/kind.mk
