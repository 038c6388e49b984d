# pro-app: `make run` serves the demo, `make test` runs the tests. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
WORKERS ?= 2
CHROMIUM := /usr/bin/chromium
export PRO_ENV ?= development
export PRO_BASE_URL ?= http://$(HOST):$(PORT)

.PHONY: run test bench translations setup setup-test chromium migrate demo clean help

help:
	@echo "make run    - set up and serve the demo on http://$(HOST):$(PORT)"
	@echo "make test   - set up and run the test suite (SQLite; PostgreSQL too when PRO_TEST_DATABASE_URL is set)"
	@echo "make bench  - run the benchmarks, print one table and write benchmarks/results.md (BENCH_ARGS=--quick: short run)"
	@echo "make translations - extract, update and compile the message catalogues"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "pro-app needs Python 3.11 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the package metadata changes, so a second run starts in seconds.
# The build backend's chatter goes to a log, shown only when the install fails.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "Installing pro-app into $(VENV) ..."
	@$(BIN)/pip install --quiet --editable . > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "Installing pro-app with its test tools into $(VENV) ..."
	@$(BIN)/pip install --quiet --editable '.[test]' > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@ $(VENV)/.installed

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test chromium node_modules/.installed

instance/secret_key:
	@mkdir -p instance && chmod 700 instance
	@$(BIN)/python -c 'import secrets; print(secrets.token_hex(32))' > $@ && chmod 600 $@

migrate: setup instance/secret_key
	@$(BIN)/pro-app db upgrade

# Migrations and the demo study in one process (each start of the app costs its imports).
demo: setup instance/secret_key
	@$(BIN)/pro-app seed-demo --migrate

run: demo
	@echo "Serving on http://$(HOST):$(PORT)  (staff login: http://$(HOST):$(PORT)/staff/login)"
	@exec $(BIN)/gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) --access-logfile - \
		--logger-class pro_app.gunicorn_logging.RedactingLogger \
		--access-logformat '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms' wsgi:app

# Debian's Chromium for the browser tests (Playwright never downloads a browser here).
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends chromium; \
	fi

# axe-core, injected into pages by the accessibility tests (npm registry; Node from Debian if missing).
node_modules/.installed: package.json package-lock.json
	@if ! command -v npm >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends nodejs npm; \
	fi
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

test: setup-test
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every script under benchmarks/, one table, also written to benchmarks/results.md (about 12
# minutes on 2 cores, at most 15; `make bench BENCH_ARGS=--quick` about 3, at most 4). Lighthouse
# (npm) and Chromium come with setup-test. See docs/performance.md.
bench: setup-test
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# Extract every marked string, merge it into each catalogue (new entries arrive empty: the
# catalogue test then names them until they are translated), and compile the .mo files.
translations: setup
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k _l -o translations/messages.pot --no-location --omit-header --sort-output .
	$(BIN)/pybabel update -i translations/messages.pot -d translations --no-fuzzy-matching
	$(BIN)/python tools/fill_source_catalogue.py translations/en/LC_MESSAGES/messages.po
	$(BIN)/pybabel compile -d translations --statistics

clean:
	rm -rf $(VENV) .pytest_cache
