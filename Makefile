# Server402: `make run` serves the sandbox on $PORT; `make test` runs the suite.
SHELL := /bin/bash
# A failing step of a pipe (import_catalog | tail) must fail the target.
.SHELLFLAGS := -eo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT
# Processes started by honcho get their own PORT, so every URL is pinned here.
export PUBLIC_BASE_URL ?= http://localhost:$(PORT)
# The sandbox upstream is the web process's own emulator: the Celery worker's health runs reach it on this port.
export SERVER402_WEB_PORT ?= $(PORT)

.PHONY: run test bench install

$(VENV)/.installed: requirements.txt
	@python=$$(bin/find-python) || exit 1; \
	if [ ! -x $(PY) ]; then echo "Creating $(VENV) with $$python"; "$$python" -m venv $(VENV) || exit 1; fi; \
	echo "Installing pinned dependencies"; \
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt && touch $@

install: $(VENV)/.installed

# A random SECRET_KEY for this checkout, written once; the environment still wins.
.env:
	@echo "SECRET_KEY=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" > .env

run: install .env
	@$(PY) manage.py migrate --no-input -v 0
	@$(PY) manage.py import_catalog | tail -n 1
	@$(PY) manage.py create_operator
	@# A first health run, held 5 s for the web server (and its emulator) to come up.
	@$(PY) manage.py run_health_checks --no-wait --delay 5
	@echo "Serving $(PUBLIC_BASE_URL) (sandbox unless SERVER402_MODE=live); Ctrl-C stops everything."
	@exec $(VENV)/bin/honcho -f Procfile start -p $(PORT)

# The suite runs in TEST_PROCESSES processes (pytest-xdist, a test database each; 0 runs it in this one): most of
# its time is spent waiting on servers, workers and sockets, so 4 keep 2 CPUs busy. Tests sharing one cluster of
# servers stay on one process (xdist_group, --dist loadgroup).
TEST_PROCESSES ?= 4
# bin/ensure-chromium installs Debian's chromium for the browser tests when it can (root with apt-get); it never fails.
test: install
	@bin/ensure-chromium
	SECRET_KEY=test-only-not-a-secret $(PY) -m pytest -n $(TEST_PROCESSES) --dist loadgroup $(PYTEST_ARGS)

# bench/requirements.txt: the x402 SDK's example servers the x402 throughput bench compares against, and py-spy
# for the load bench's profile.
bench: install
	@$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	SECRET_KEY=bench-only-not-a-secret $(PY) bench/run.py
