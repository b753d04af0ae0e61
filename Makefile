# One command for the main job, one for the tests; each sets up what it needs first.
#   make demo   a local devnet: several node processes making blocks from live traffic
#   make test   the whole test suite, then the linters
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/meshchain devnet

test: setup
	$(BIN)/pytest
	$(MAKE) lint

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/tx_validation.py
	$(BIN)/python bench/transport.py
	$(BIN)/python bench/relay.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/consensus.py
	$(BIN)/python bench/sim_scale.py --duration 60

clean:
	rm -rf $(VENV) demo-data devnet-data .mypy_cache .ruff_cache .pytest_cache
