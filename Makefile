# The two commands: `make run` (serve the demo) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install run test test-fast test-django42 lint format bench bench-quick bench-cluster chaos chaos-quick docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m testproject.serve

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not browser and not slow"

# The other supported LTS: the suite (without the browser) on Django 4.2.
VENV42 := .venv-django42
$(VENV42)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV42)
	$(VENV42)/bin/python -m pip install -q --upgrade pip
	$(VENV42)/bin/python -m pip install -q -e '.[dev]' 'Django>=4.2,<5.0'
	touch $@

test-django42: $(VENV42)/.installed
	$(VENV42)/bin/python -m pytest -m "not browser"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# `make bench BENCH_ARGS="--servers product --scenarios burst1k,steady --profile"`
bench: install
	$(BIN)/python -m pip install -q -r tests/bench/requirements.txt
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

# One Redis against a Redis Cluster of 1 and 3 shards (tests/bench/cluster.py).
bench-cluster: install
	$(BIN)/python -m pip install -q -r tests/bench/requirements.txt
	$(BIN)/python -m tests.bench.cluster $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python -m pip install -q -r tests/bench/requirements.txt
	$(BIN)/python -m tests.bench --quick $(BENCH_ARGS)

# Fault injection with published figures: writes docs/topics/faults-table.rst.
chaos: install
	$(BIN)/python -m tests.chaos --write-docs $(CHAOS_ARGS)

chaos-quick: install
	$(BIN)/python -m tests.chaos --quick $(CHAOS_ARGS)

# Warnings are errors; -n reports every reference that does not resolve.
docs: install
	$(BIN)/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) $(VENV42) build *.egg-info testproject.sqlite3 .mypy_cache .ruff_cache docs/_build
