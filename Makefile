# Two commands matter: `make demo` (the main job on the embedded default) and
# `make test` (every check CI runs). Both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SLITHER_VENV := .venv-slither
NODE_BIN := contracts/node_modules/.bin

.PHONY: all install demo test lint typecheck contracts contracts-test slither pytest bench clean

all: install

# --- installation -----------------------------------------------------------------
$(VENV)/.installed: pyproject.toml
	@echo "==> Python environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

contracts/node_modules/.installed: contracts/package.json contracts/package-lock.json
	@echo "==> npm packages for contracts/ (solc, OpenZeppelin, anvil, forge) from the lock file"
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(SLITHER_VENV)/.installed: contracts/slither-requirements.txt
	@echo "==> slither in its own environment ($(SLITHER_VENV))"
	$(PYTHON) -m venv $(SLITHER_VENV)
	$(SLITHER_VENV)/bin/pip install --quiet --upgrade pip
	$(SLITHER_VENV)/bin/pip install --quiet -r contracts/slither-requirements.txt
	@touch $@

install: $(VENV)/.installed contracts/node_modules/.installed

# --- the two commands -------------------------------------------------------------
demo: install
	$(BIN)/cvm demo

test: install lint typecheck contracts-test slither pytest
	@echo "==> all checks passed"

# --- checks -----------------------------------------------------------------------
lint: $(VENV)/.installed
	@echo "==> ruff"
	$(BIN)/ruff check cvm backend node_agent tests bench
	$(BIN)/ruff format --check cvm backend node_agent tests bench

typecheck: $(VENV)/.installed
	@echo "==> mypy"
	$(BIN)/mypy

contracts: contracts/node_modules/.installed $(VENV)/.installed
	@echo "==> compile contracts to contracts/out and cvm/chain/artifacts"
	$(PY) -m cvm.chain.build

contracts-test: contracts/node_modules/.installed
	@echo "==> forge tests (unit, fuzz, invariant)"
	cd contracts && ./scripts/forge test

slither: $(SLITHER_VENV)/.installed contracts/node_modules/.installed
	@echo "==> slither over contracts/src"
	./contracts/scripts/slither-check

pytest: install
	@echo "==> pytest"
	$(BIN)/pytest -q

bench: install
	$(PY) -m bench.gas --json

clean:
	rm -rf $(VENV) $(SLITHER_VENV) contracts/node_modules contracts/cache
