# Set-up, checks and the local stack. `make dev` and `make test` work on a fresh clone from the
# lock files (uv.lock, package-lock.json): `make dev` installs only what the local stack needs
# into .venv, `make test` everything (and a second environment, .venv-lambda, on the Lambda
# functions' Python, where the runtime's suite runs).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
LAMBDA_VENV := .venv-lambda
PY          := $(VENV)/bin/python
UV          := $(VENV)/bin/uv
UV_VERSION  := 0.13.9
ENV         ?= dev
# The functions' and the container's Python; infra/bundling.py is its one source.
LAMBDA_PYTHON_VERSION := $(shell sed -n 's/^PYTHON_VERSION = "\(3\.[0-9]*\)"$$/\1/p' infra/bundling.py)
$(if $(LAMBDA_PYTHON_VERSION),,$(error cannot read PYTHON_VERSION = "3.X" in infra/bundling.py))

export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS    := never
export UV_NO_PROGRESS         := 1
# jsii (aws-cdk-lib) runs on the Node 22 pinned in package.json, not the system Node.
export JSII_NODE              := $(abspath node_modules/.bin/node)
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: help setup dev-setup browser lint test test-runtime test-rest test-fast docs docs-check \
	dev synth deploy preflight bench clean

help:
	@echo "make dev    - install what the local stack needs, then run it (Ctrl-C stops it)"
	@echo "make test   - install everything, lint, type-check, build the docs (strict) and run the"
	@echo "              suite: the runtime's part on Python $(LAMBDA_PYTHON_VERSION) (the functions'), the rest beside it"
	@echo "make docs   - build the documentation and API reference into site/"
	@echo "make synth  - synthesize every environment into cdk.out"
	@echo "make preflight ENV=dev - check the AWS account before a deploy"
	@echo "make deploy ENV=dev    - cdk deploy one environment"
	@echo "make bench  - run the benchmark scripts"

setup: $(VENV)/.synced node_modules/.installed browser

dev-setup: $(VENV)/.synced-local node_modules/.installed-console

# The browser test drives Debian's Chromium; install it when missing and we can.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the browser test will be skipped"; \
	  else echo "note: /usr/bin/chromium missing; the browser test will be skipped"; fi; \
	fi

$(UV):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Everything: the CDK app, the runtime with every extra, the dev group.
$(VENV)/.synced: $(UV) uv.lock pyproject.toml runtime/pyproject.toml
	$(UV) sync --frozen --quiet
	@touch $@

# The local stack only: the runtime with its `local` extra. --inexact keeps what a full
# sync installed (and uv itself, which is not a runtime dependency).
$(VENV)/.synced-local: $(UV) uv.lock pyproject.toml runtime/pyproject.toml
	$(UV) sync --frozen --quiet --inexact --package milequest --extra local
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The dev console's client (pusher-js, the one runtime dependency in package.json). npm ci
# replaces node_modules whole, so it is skipped when the full install is current.
node_modules/.installed-console: package.json package-lock.json
	@if [[ node_modules/.installed -nt package.json && node_modules/.installed -nt package-lock.json ]]; \
	then touch $@; \
	else npm ci --omit=dev --no-audit --no-fund --loglevel=error && touch $@; fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy runtime/src

docs: setup
	$(VENV)/bin/mkdocs build --quiet

# Strict: a warning (a broken link or cross-reference, a missing page) fails the build.
docs-check: setup
	$(VENV)/bin/mkdocs build --quiet --strict

# The runtime's unit and contract suites and a cold start of every handler run on the
# functions' Python, in .venv-lambda: the runtime with all its extras (the suite covers the
# cost plots too) and the `test` group. Where that Python is missing (the finder says where it
# looked), they run on the default Python instead, and the bundle test says it skipped.
RUNTIME_TESTS := tests/runtime tests/lambda_runtime

test-runtime: setup
	@if lambda_python=$$($(PY) tests/lambda_runtime/interpreter.py $(LAMBDA_PYTHON_VERSION)); then \
	  echo "runtime suite on $$lambda_python (Python $(LAMBDA_PYTHON_VERSION), the functions')"; \
	  UV_PROJECT_ENVIRONMENT=$(abspath $(LAMBDA_VENV)) $(UV) sync --frozen --quiet \
	    --python "$$lambda_python" --package milequest --all-extras --group test \
	  && $(LAMBDA_VENV)/bin/pytest $(RUNTIME_TESTS); \
	else \
	  echo "SKIPPED: the runtime suite on Python $(LAMBDA_PYTHON_VERSION), the functions' version;" \
	    "it runs on the default Python"; \
	  $(VENV)/bin/pytest $(RUNTIME_TESTS); \
	fi

# Everything else (CDK app, local stack end to end, the bundle, docs) on the default Python.
test-rest: setup
	$(VENV)/bin/pytest $(addprefix --ignore=,$(RUNTIME_TESTS))

# The two suites run side by side (one per core), each one's output printed whole when it
# ends; -k lets the second finish when the first fails, so one run reports every failure.
test: lint docs-check
	@$(MAKE) --no-print-directory -k -j2 --output-sync=target test-runtime test-rest

test-fast: setup
	$(VENV)/bin/pytest -x -q -m "not slow"

dev: dev-setup
	$(PY) -m milequest.local

synth: setup
	npx --no-install cdk synth --quiet

preflight: setup
	$(PY) -m infra.preflight --env $(ENV)

deploy: setup
	npx --no-install cdk deploy '$(ENV)/*'

BENCHMARKS = email email_deadline email_suppression email_queue websocket fanout_scale \
	local handshake pusher_api

bench: setup
	@set -e; for name in $(BENCHMARKS); do \
	  echo "== scripts/bench_$$name.py"; $(PY) scripts/bench_$$name.py; done

clean:
	rm -rf $(VENV) $(LAMBDA_VENV) node_modules cdk.out site .pytest_cache .mypy_cache .ruff_cache
