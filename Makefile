# The two commands: `make run` (serve the demo) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install run test test-asgi test-matrix test-fast test-django42 lint format bench bench-quick bench-cluster chaos chaos-quick docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# `make run`: the demo on http://127.0.0.1:8000/ with a private Redis of its own.
# PORT=8001 HOST=0.0.0.0 change where it listens; REDIS_URL=redis://host:port/db uses
# that Redis instead, with the channel prefix WS4REDIS_PREFIX (default "demo").
run: install
	$(BIN)/python -m testproject.serve

test: install
	$(BIN)/python -m pytest
	$(MAKE) test-asgi

# Parity: the end-to-end suites again with every message through daphne's ASGI send.
ASGI_SUITES := tests/test_delivery.py tests/test_publishing.py tests/test_reliability.py \
	tests/test_attacks.py tests/test_floods.py tests/test_shutdown_and_closing.py
test-asgi: install
	WS4REDIS_DIRECT_WRITES=0 $(BIN)/python -m pytest -m "not browser" $(ASGI_SUITES)

test-fast: install
	$(BIN)/python -m pytest -m "not browser and not slow"

# The other supported LTS: the suite (without the browser) on Django 4.2.
VENV42 := .venv-django42
$(VENV42)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV42)
	$(VENV42)/bin/python -m pip install -q --upgrade pip
	$(VENV42)/bin/python -m pip install -q -e '.[dev]' -c .ci/constraints/latest.txt \
		-c .ci/constraints/django42.txt
	touch $@

test-django42: $(VENV42)/.installed
	$(VENV42)/bin/python -m pytest -m "not browser"

# The version matrix: the lowest declared releases (.ci/constraints/min.txt) on both
# Django LTS; the latest ones are `test` (Django 5.2) and `test-django42`.
MATRIX := min-django42 min-django52
.venv-%/.installed: pyproject.toml .ci/constraints/min.txt
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q --upgrade pip
	.venv-$*/bin/python -m pip install -q -e '.[dev]' \
		-c .ci/constraints/$(word 1,$(subst -, ,$*)).txt \
		-c .ci/constraints/$(word 2,$(subst -, ,$*)).txt
	touch $@

test-matrix: $(foreach m,$(MATRIX),.venv-$(m)/.installed)
	for m in $(MATRIX); do .venv-$$m/bin/python -m pytest -m "not browser" || exit 1; done

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# `make bench BENCH_ARGS="--servers product --scenarios burst1k,steady --profile"`
# Then positions on against off, with the reconnect of 1,000 sockets that each missed 50
# messages (time to caught-up); BENCH_POSITIONS=0 skips it.
BENCH_POSITIONS ?= 1
bench: install
	$(BIN)/python -m pip install -q -r tests/bench/requirements.txt
	$(BIN)/python -m tests.bench $(BENCH_ARGS)
	if [ "$(BENCH_POSITIONS)" = 1 ]; then \
		$(BIN)/python -m tests.bench.positions --sockets 1000 --missed 50; fi

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
	rm -rf $(VENV) $(VENV42) $(foreach m,$(MATRIX),.venv-$(m)) build *.egg-info testproject.sqlite3 .mypy_cache .ruff_cache docs/_build
