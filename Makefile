# Set-up, checks and the local stack. `make dev` and `make test` work on a fresh clone:
# they create .venv at the repository root from the lock files (uv.lock, package-lock.json).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV       := .venv
PY         := $(VENV)/bin/python
UV         := $(VENV)/bin/uv
UV_VERSION := 0.13.9
ENV        ?= dev

export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS    := never
export UV_NO_PROGRESS         := 1
# jsii (aws-cdk-lib) runs on the Node 22 pinned in package.json, not the system Node.
export JSII_NODE              := $(abspath node_modules/.bin/node)
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: help setup browser lint typecheck test test-fast dev synth deploy bench clean

help:
	@echo "make dev    - install everything, then run the local stack (Ctrl-C stops it)"
	@echo "make test   - install everything, lint, type-check and run the whole suite"
	@echo "make synth  - synthesize every environment into cdk.out"
	@echo "make deploy ENV=dev - cdk deploy one environment"
	@echo "make bench  - run the benchmark scripts"

setup: $(VENV)/.synced node_modules/.installed browser

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

$(VENV)/.synced: $(UV) uv.lock pyproject.toml runtime/pyproject.toml
	$(UV) sync --frozen --quiet
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy runtime/src

test: lint
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -x -q -m "not slow"

dev: setup
	$(PY) -m milequest.local

synth: setup
	npx --no-install cdk synth --quiet

deploy: setup
	npx --no-install cdk deploy '$(ENV)/*'

bench: setup
	$(PY) scripts/bench_email.py
	$(PY) scripts/bench_websocket.py
	$(PY) scripts/bench_local.py

clean:
	rm -rf $(VENV) node_modules cdk.out .pytest_cache .mypy_cache .ruff_cache
