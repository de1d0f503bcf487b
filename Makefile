# ccexport — the two commands people need are `make run` and `make test`.
# Everything installs into this folder (.venv, node_modules); nothing global.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
BROWSER := $(VENV)/browser

.PHONY: install lock test lint typecheck pytest run bench clean lint-infra chaos mutate screenshots

install: $(STAMP) $(NODE_STAMP) $(BROWSER)

# requirements-dev.txt is the whole locked tree (the runtime's, at requirements.txt's
# versions, and the development tools'), every package pinned with its hashes: pip
# installs nothing else and checks every file it downloads. ccexport itself, editable,
# comes after it, without dependencies (a local folder has no hash to check).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# The lock files (docs/DEVELOPING.md "Dependencies"): requirements.in and
# requirements-dev.in resolved by uv (pinned in requirements-dev.in) into
# requirements.txt and requirements-dev.txt, for the platform the app runs on (Linux
# x86_64, Python 3.11), each package pinned with the hashes of all its files on PyPI.
# A version that a .txt file holds already is kept unless a pin of a .in file moves
# it; to move a package that no .in file names: make lock UPGRADE="-P name".
# It needs uv in the venv (make install puts it there), not an up-to-date install.
UPGRADE ?=
LOCK := $(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock" $(UPGRADE)

# A Chromium for the console's browser tests: Playwright's own where it can be
# downloaded, else the distribution's (tests/browser/provision.py). None fails here.
$(BROWSER): $(STAMP)
	$(PY) -m tests.browser.provision

$(VENV)/bin/uv:
	$(MAKE) --no-print-directory $(STAMP)

lock: $(VENV)/bin/uv
	$(LOCK) requirements.in -o requirements.txt
	$(LOCK) requirements-dev.in -o requirements-dev.txt

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-logo

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Tests start (and stop, by PID) the services they need: Azurite from node_modules,
# the Constant Contact sandbox. A missing service fails the run; nothing is skipped.
# Two pytest-xdist workers, each with services of its own on free ports: most of a
# run is waiting (on services, child processes, timers), so two overlap it. Each
# module stays in one worker, the browser tests together (tests/support/xdist_groups.py).
# Byte-compiled first, as for bench: where PYTHONDONTWRITEBYTECODE is set, each child
# process the tests start (sandboxes, serve, ccexport) would compile the project again.
PYTEST_WORKERS ?= 2
pytest: install
	$(PY) -m compileall -q shared functions sandbox bench
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

test: install lint typecheck pytest

# The export end to end on this machine: Azurite and the Constant Contact sandbox
# (started here, stopped by PID), a 100,000-profile Customer Insights export dropped
# into the inbox container, `ccexport connect`, `ccexport run`, the report, the list.
run: install
	$(PY) -m bench.demo

# Byte-compiled first: where PYTHONDONTWRITEBYTECODE is set (this machine sets it),
# every timed process would otherwise compile the project's modules again (~0.15 s).
bench: install
	$(PY) -m compileall -q shared functions sandbox bench
	$(PY) -m bench.run

# The chaos suite at full scale (tests/chaos; `make test` runs it small): export runs
# under injected faults (503s, resets, failed imports, token and Key Vault errors,
# throttling, a killed process), bad input, duplicate triggers and intruders, against
# the sandbox, Azurite and the Key Vault fake. Ends with its figures; at most 10 min.
chaos: install
	CHAOS_SCALE=full $(PY) -m tests.chaos

# Mutation testing of the core (docs/MUTATION.md): mutmut, niced, with at most
# MUTATE_CHILDREN test processes, over the modules of tests/mutation/__main__.py's SCOPE
# (MODULES="chunks contacts ..." for some of them; REV=HEAD to run on a commit instead
# of the working tree). Ends with the kill rate per module and the survivors. Slow: not
# part of `make test`; run it before resolving an issue that touches those modules.
MODULES ?=
MUTATE_CHILDREN ?= 2
REV ?=
mutate: install
	$(PY) -m tests.mutation --max-children $(MUTATE_CHILDREN) $(if $(REV),--rev $(REV)) $(MODULES)

# Policy scan of infra/ with checkov, in its own venv (its pinned pycep-parser clashes
# with the one the tests use). Offline: no platform download, no update check; a
# template checkov cannot parse fails the run. Every finding is fixed or carries a
# `checkov:skip=<id>: <reason>` comment in the template. Not part of `make test`.
CHECKOV_VENV  := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

$(CHECKOV_STAMP): infra/requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r infra/requirements-checkov.txt
	touch $@

lint-infra: $(CHECKOV_STAMP)
	BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true CKV_PARSE_ERROR_FAIL=true \
	  $(CHECKOV_VENV)/bin/checkov --directory infra --framework bicep --skip-download --compact --quiet

clean:
	rm -rf .run .bench .mypy_cache .ruff_cache .pytest_cache

# The README's pictures of the console (docs/images/console-*.png): the new user's
# whole flow in Chromium through serve and the sandbox (tests/browser/test_console_flow.py).
# Not part of make test: pictures change only when someone means them to.
screenshots: install
	mkdir -p docs/images
	CCEXPORT_SCREENSHOTS=docs/images $(PY) -m pytest -q tests/browser/test_console_flow.py
