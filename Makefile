# aml-dsr developer entry points. Everything a fresh clone needs is installed by these targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup browser test test-fast check format demo lint typecheck bench audit clean infra-check

setup: $(VENV)/.stamp node_modules/.stamp

$(VENV)/.stamp: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "aml-dsr needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

# Azurite (the Azure Storage emulator) from the npm registry, into ./node_modules (ignored by git).
node_modules/.stamp: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed to install Azurite (apt-get install nodejs npm)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Headless Chromium (Debian package) for the one test that opens the export page in a browser. Installed when
# missing and this is root (CI, a fresh machine); elsewhere the test skips and says why.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } ; } || \
	  echo "chromium is not installed (apt-get install -y chromium): the browser test will skip"

test: setup browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The pure tests: no Node, no Azurite, no emulator process (well under 20 s).
test-fast: $(VENV)/.stamp
	$(BIN)/python -m pytest -q -n auto --maxprocesses=4 -m "not integration" tests/unit tests/infra

# What CI enforces before the tests: lint, format, strict types, the fast tests.
check: $(VENV)/.stamp
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory test-fast

format: $(VENV)/.stamp
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: setup
	$(BIN)/python -m tools.demo

lint: $(VENV)/.stamp
	$(BIN)/ruff check .

typecheck: $(VENV)/.stamp
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m tools.bench
	$(BIN)/python -m tools.bench_discovery

audit: setup
	$(BIN)/pip install --quiet --disable-pip-version-check pip-audit==2.10.1
	$(BIN)/pip-audit --strict -r requirements.txt

# Static security checks of infra/ (Bicep) with checkov, from its own venv. Fails on any failed check; a check
# that does not apply is skipped inline in the Bicep (//checkov:skip=ID: reason). --skip-download: no network.
INFRA_VENV := .venv-infra

$(INFRA_VENV)/.stamp: requirements-infra.txt
	$(PYTHON) -m venv $(INFRA_VENV)
	@echo '*' > $(INFRA_VENV)/.gitignore
	$(INFRA_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	@touch $@

infra-check: $(INFRA_VENV)/.stamp
	$(INFRA_VENV)/bin/checkov --directory infra --framework bicep --compact --quiet --skip-download

clean:
	rm -rf $(VENV) $(INFRA_VENV) node_modules demo-output .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
