# One entry point for people and CI. Every target installs what it needs itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
INFRA_VENV  := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed
AZCLI_VENV  := .venv-azcli
AZCLI_STAMP := $(AZCLI_VENV)/.installed

.PHONY: help install demo-deps wheelhouse infra-tools azcli chromium demo test lint typecheck audit-deps unit integration test-infra bench clean

help:
	@echo "make demo   - the next night's audit against an emulated tenant (./demo for every command)"
	@echo "make test   - lint, typecheck and run every test (unit, integration, infra)"
	@echo "make bench  - benchmark the audit on a large emulated tenant (see bench/README.md)"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(VENV)/.demo-installed $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(STAMP) $(NODE_STAMP)

# What ./demo needs and no more: the runtime (requirements.txt), trustme for the emulators' TLS, and
# Azurite. A full `make install` is a superset of it and marks it done (so ./demo, run by the tests,
# never reinstalls into the venv the other test workers are using).
DEMO_STAMP := $(VENV)/.demo-installed
$(DEMO_STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check 'trustme>=1.1,<2'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

demo-deps: $(DEMO_STAMP) $(NODE_STAMP)
	@:

# The runtime wheels (and setuptools to build the package) on disk, so that the analyst-install test
# runs the documented `pip install .` in a clean venv offline (tests/integration/test_analyst_install.py).
WHEELHOUSE := .wheelhouse
WHEEL_STAMP := $(WHEELHOUSE)/.downloaded
$(WHEEL_STAMP): requirements.txt pyproject.toml $(STAMP)
	$(PY) -m pip download --quiet --disable-pip-version-check -d $(WHEELHOUSE) -r requirements.txt
	$(PY) -m pip download --quiet --disable-pip-version-check -d $(WHEELHOUSE) 'setuptools>=68'
	touch $@

wheelhouse: $(WHEEL_STAMP)

# checkov + pycep-parser (fully pinned) in their own venv: their pins clash with the app's.
$(INFRA_STAMP): requirements-infra.txt
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	touch $@

infra-tools: $(INFRA_STAMP) $(NODE_STAMP)

# The real Azure CLI (PyPI, fully pinned) in its own venv: tests run the generated fix commands and the
# docs' az commands with it, offline, against the ARM emulator. Its pins clash with the app's too.
$(AZCLI_STAMP): requirements-azcli.txt
	$(PYTHON) -m venv $(AZCLI_VENV)
	$(AZCLI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-azcli.txt
	touch $@

azcli: $(AZCLI_STAMP)

# Debian's headless Chromium renders the HTML report in tests/integration/test_report_html.py; installed only if missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "WARNING: could not install chromium (needs root: sudo apt-get install chromium); the HTML report test will skip"

# A shortcut for `./demo` (which passes arguments and exit codes through untouched; prefer it with arguments).
demo:
	@./demo $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check shared function_app.py

typecheck: $(STAMP)
	$(PY) -m mypy

# Known vulnerabilities in the runtime dependencies (pip-audit; skipped with a warning offline).
audit-deps: $(STAMP)
	$(PY) tools/audit_deps.py

# The kind is the directory: tests/integration and tests/infra mark their tests (their conftest.py),
# so these markers select tests/unit, tests/integration + tests/contract, and tests/infra.
unit: $(STAMP)
	$(PY) -m pytest -q tests -m "not integration and not infra"

integration: install azcli chromium
	$(PY) -m pytest -q -n 2 tests -m integration

test-infra: install infra-tools
	$(PY) -m pytest -q -p no:cacheprovider tests -m infra

test: install infra-tools azcli wheelhouse chromium lint typecheck audit-deps
	$(PY) -m pytest -q -n 2 -p no:cacheprovider tests

bench: install
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) $(INFRA_VENV) $(AZCLI_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .azurite .demo .wheelhouse
