# cachekit developer tasks. Needs only python3 (>= 3.11) on PATH; everything else
# goes into .venv. The venv is (re)installed whenever pyproject.toml or cachekit/_version.py
# changes.
#
#   make test                 lint + type-check + pytest (PYTEST_ARGS="-k foo -x"); pytest
#                             includes the wheel check (tests/test_packaging.py)
#   make wheel-check          build sdist + wheel, install the wheel into a fresh venv outside
#                             the checkout, serve the demo's first request from it
#   make demo                 run the demo app (in-process store by default); prints the
#                             admin dashboard's address
#   make dashboard-screenshot docs/dashboard.png: the dashboard after a few minutes of traffic,
#                             taken with Debian's chromium (python -m tests.dashboard_screenshot)
#   make proxy                a caching reverse proxy in front of ORIGIN (demo_app/proxy.py)
#   make bench                run the benchmarks (python -m bench)
#   make chaos                faults under load: Redis killed, frozen, full (python -m bench.chaos)
#   make lint                 ruff + mypy only
#   make clean                remove .venv and caches

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PYTEST_ARGS ?=
DEMO_ARGS ?=
PROXY_ARGS ?=
BENCH_ARGS ?=
CHAOS_ARGS ?=
WHEEL_CHECK_ARGS ?=

.DEFAULT_GOAL := test
.PHONY: test lint wheel-check demo dashboard-screenshot proxy bench chaos clean venv

# _version.py too: the editable install's metadata carries the version (tests/test_packaging.py).
$(STAMP): pyproject.toml cachekit/_version.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check cachekit demo_app tests bench .ci/wheel_check.py
	$(BIN)/mypy --strict cachekit bench .ci/wheel_check.py

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

wheel-check: $(STAMP)
	$(BIN)/python .ci/wheel_check.py $(WHEEL_CHECK_ARGS)

demo: $(STAMP)
	$(BIN)/python -m demo_app $(DEMO_ARGS)

dashboard-screenshot: $(STAMP)
	$(BIN)/python -m tests.dashboard_screenshot docs/dashboard.png

# ORIGIN: the origin's base URL (e.g. the demo's: make demo, then make proxy in another shell).
ORIGIN ?= http://127.0.0.1:8080
proxy: $(STAMP)
	$(BIN)/python -m demo_app.proxy $(ORIGIN) $(PROXY_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
