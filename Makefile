# wanflow developer commands. `make demo` and `make test` work on a fresh clone: they build .venv/ first.
# Another interpreter gets its own virtualenv: make test PYTHON=python3.13 VENV=.venv-3.13
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov pins boto3 and others below requirements.lock, so it gets a virtualenv of its own (inside .venv/, which
# git ignores and `make clean` removes), pinned by requirements-checkov.lock.
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv test test-fast lint typecheck checkov demo local emulator console screenshots build lock bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$$(grep -E '^uv==' requirements.lock)"
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv/ from the lock file (the wanflow command is then .venv/bin/wanflow)

$(CHECKOV_STAMP): requirements-checkov.lock $(STAMP)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(BIN)/uv pip sync --quiet --python $(CHECKOV_VENV)/bin/python requirements-checkov.lock
	@touch $(CHECKOV_STAMP)

# tests/unit/test_checkov.py runs checkov on template.yaml and names every failed check.
test: lint typecheck $(CHECKOV_STAMP) ## Run lint, the type check and the whole test suite (checkov included) with coverage, offline
	$(BIN)/pytest --cov=wanflow --cov=wanflow_tools --cov=functions --cov-report=term

test-fast: $(STAMP) ## Run the tests not marked slow, without coverage (seconds, not minutes)
	$(BIN)/pytest -q -m "not slow" -p no:cacheprovider

lint: $(STAMP) ## ruff check
	$(BIN)/ruff check .

typecheck: $(STAMP) ## mypy over layers/wanflow, functions and tools/wanflow_tools (settings in pyproject.toml)
	$(BIN)/mypy

checkov: $(CHECKOV_STAMP) ## Scan template.yaml with checkov (skips, with reasons, are in the resources' Metadata)
	$(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation --skip-download --compact

demo: $(STAMP) ## Run one sample image through the whole pipeline offline; the MP4 lands in out/
	$(BIN)/wanflow demo

local: $(STAMP) ## Serve the whole stack on loopback (web console and HTTP API on :8000, AWS endpoint on :5000)
	$(BIN)/wanflow local

console: $(STAMP) ## Serve the web console for a deployed stack on :8001 (API=https://... ; AWS credentials sign the calls)
	$(BIN)/wanflow console $(if $(API),--api $(API))

screenshots: $(STAMP) ## Re-take the console screenshots in docs/console/ (runs the browser tests; needs chromium)
	WANFLOW_CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest -q -p no:cacheprovider tests/browser

emulator: $(STAMP) ## Serve the DashScope emulator on loopback (:8080)
	$(BIN)/wanflow emulator --port 8080

build: ## sam build without a container (SAM CLI goes to .venv-sam/ on first use; needs python3.13)
	scripts/sam-build.sh

bench: $(STAMP) ## Run the benchmarks in bench/ and print their numbers
	$(BIN)/python -m bench

lock: ## Re-resolve requirements.lock, requirements-checkov.lock and layers/requirements.txt (needs the registry)
	$(BIN)/uv pip compile --universal --python-version 3.11 --extra dev pyproject.toml -o requirements.lock
	$(BIN)/uv pip compile --universal --python-version 3.11 requirements-checkov.in -o requirements-checkov.lock
	$(BIN)/uv pip compile --python-version 3.13 --python-platform aarch64-manylinux2014 \
		layers/requirements.in -c requirements.lock -o layers/requirements.txt

clean: ## Remove the virtualenv, caches and build output
	rm -rf $(VENV) .venv-3.13 .venv-sam .pytest_cache .ruff_cache .aws-sam out .wanflow
