# VibeLux Ops: `make up` runs the stack, `make test` checks everything. See README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_WORKERS ?= 2  # one per core of CI's machine; each test file runs whole in one worker (its module fixtures are shared)

.PHONY: up staging test install system-deps lint typecheck config-check pytest bench clean

up: install
	@scripts/up.sh

staging: install
	@STAGING=1 scripts/up.sh

test: install lint typecheck config-check pytest

install: system-deps $(INSTALLED)

system-deps:
	@scripts/system-deps.sh

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $@

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

PACKAGES := $(wildcard service_kit exporters ratelimit_proxy tickets_app flags_service demo grafana backups reports_service releases)

typecheck:
	$(BIN)/mypy $(foreach p,$(PACKAGES),$(if $(wildcard $(p)/__init__.py),-p $(p)))

config-check:
	@scripts/config-check.sh
	$(BIN)/vibelux-migrations check

pytest:
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder  # files in collection order: slow ones first (tests/conftest.py)

bench: install
	@BENCH=1 scripts/system-deps.sh
	@for script in bench/*.py; do module=$$(basename "$$script" .py); echo "== bench.$$module"; $(BIN)/python -m "bench.$$module" || exit 1; done

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
