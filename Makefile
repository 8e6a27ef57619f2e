# The two commands a newcomer runs: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test test-fast lint bench clean

$(BIN)/hacluster: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/hacluster
	$(BIN)/hacluster demo

lint: $(BIN)/hacluster
	$(BIN)/ruff check hacluster tests tools
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -n auto --durations=15

# The inner loop: no lint, no real pools of node daemons (see README, Development).
test-fast: $(BIN)/hacluster
	$(BIN)/pytest -q -n auto -m "not slow and not netns and not docker"

bench: $(BIN)/hacluster
	$(BIN)/python tools/bench_sim.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
