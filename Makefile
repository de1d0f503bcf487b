# ccexport — the two commands people need are `make run` and `make test`.
# Everything installs into this folder (.venv, node_modules); nothing global.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: install test lint typecheck pytest run bench clean

install: $(STAMP) $(NODE_STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Tests start (and stop, by PID) the services they need: Azurite from node_modules,
# the Constant Contact sandbox. A missing service fails the run; nothing is skipped.
pytest: install
	$(PY) -m pytest -q

test: install lint typecheck pytest

# Placeholder for the end-to-end run (issue 5): for now it writes a sample
# Customer Insights export and prepares it (map, validate, chunk) without sending.
run: install
	$(PY) -m bench.sample --rows 100000 --out .run/sample
	$(VENV)/bin/ccexport prepare .run/sample/BlobExport/HighValueSegment/2026/11/28/0930 \
	  --config .run/sample/export.json --out .run/prepared

bench: install
	$(PY) -m bench.run

clean:
	rm -rf .run .bench .mypy_cache .ruff_cache .pytest_cache
