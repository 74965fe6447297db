# lw: one-command entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LW := $(BIN)/lw
DEMO_MARKET ?= demo-market
DEMO_WORK ?= demo-work
export LW_JAX_CACHE ?= $(CURDIR)/.jax_cache

.PHONY: install test bench demo experiment experiment-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,experiment]'

test: install
	$(BIN)/python -m pytest -n 2 tests

bench: install
	$(BIN)/python -m learnware_cli.bench

demo: install
	rm -rf $(DEMO_MARKET) $(DEMO_WORK)
	$(LW) init $(DEMO_MARKET) --name demo
	$(BIN)/python -m learnware_cli.experiment.demo_data $(DEMO_WORK)
	$(LW) spec $(DEMO_WORK)/user_X.csv --market $(DEMO_MARKET) --out $(DEMO_WORK)/user_rkme.json
	@echo "demo finished: market in $(DEMO_MARKET), files in $(DEMO_WORK)"

clean:
	rm -rf $(DEMO_MARKET) $(DEMO_WORK) .jax_cache .pytest_cache
