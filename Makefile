# lw: one-command entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LW := $(BIN)/lw
DEMO_MARKET ?= demo-market
DEMO_WORK ?= demo-work
export LW_JAX_CACHE ?= $(CURDIR)/.jax_cache

INSTALLED := $(VENV)/.lw-installed

.PHONY: install test test-slow bench bench-huge demo demo-s3 experiment experiment-quick experiment-multimodal experiment-multimodal-quick experiment-anchors experiment-anchors-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The install is editable, so code changes need no reinstall: pip runs again only when
# pyproject.toml (the dependencies) changes.
$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,experiment]'
	touch $@

install: $(INSTALLED)

# the default run leaves out the slow end-to-end tests; CI (.ci/run) runs both
test: install
	$(BIN)/python -m pytest -n 2 -m "not slow" tests

test-slow: install
	$(BIN)/python -m pytest -n 2 -m slow tests

bench: install
	$(BIN)/python -m learnware_cli.bench

# the scale table with its 10^6 column: ~1 h on 2 cores and ~50 GB of disk (LW_BENCH_DIR: where the markets go;
# LW_BENCH_SCALE_MARKET=PATH measures a market built before by learnware_cli.bench_scale.build_market instead)
bench-huge: install
	LW_BENCH_HUGE=1 $(BIN)/python -m learnware_cli.bench --only scale

demo: install
	rm -rf $(DEMO_MARKET) $(DEMO_WORK)
	$(LW) init $(DEMO_MARKET) --name demo
	$(BIN)/python -m learnware_cli.experiment.demo_data $(DEMO_WORK)
	@# developers: pack each model as a code-free ONNX learnware with its RKME and tags, then submit them all
	for dev in $(DEMO_WORK)/dev_*; do \
	  $(LW) pack --model $$dev/model.joblib --onnx --data $$dev/X.csv --market $(DEMO_MARKET) \
	    --name "sales model $$(basename $$dev)" --task Regression --scenario Business \
	    --description "gradient boosting on region $$(basename $$dev)" --out $$dev/learnware.zip || exit 1; \
	done
	$(LW) submit $(DEMO_WORK)/dev_*/learnware.zip --market $(DEMO_MARKET)
	$(LW) list --market $(DEMO_MARKET)
	$(LW) features --market $(DEMO_MARKET)
	@# a user: RKME of the user's rows, fitted locally; search by tags and by data
	$(LW) spec $(DEMO_WORK)/user_X.csv --market $(DEMO_MARKET) --out $(DEMO_WORK)/user_rkme.json
	$(LW) search --market $(DEMO_MARKET) --tag Task=Regression --name "sales model"
	$(LW) search --market $(DEMO_MARKET) --spec $(DEMO_WORK)/user_rkme.json -k 3
	$(LW) search --market $(DEMO_MARKET) --data $(DEMO_WORK)/user_X.csv -k 3 --json > $(DEMO_WORK)/found.json
	@# reuse what the search found on the user's rows; the user's true targets are held out for scoring
	for method in single average job-selector; do \
	  $(LW) reuse --market $(DEMO_MARKET) --from $(DEMO_WORK)/found.json --data $(DEMO_WORK)/user_X.csv \
	    --method $$method --out $(DEMO_WORK)/pred-$$method.csv --evaluate $(DEMO_WORK)/user_y.csv || exit 1; \
	done
	@# with 50 labeled rows of the user's own
	for method in ensemble-pruning feature-augment user-ensemble; do \
	  $(LW) reuse --market $(DEMO_MARKET) --from $(DEMO_WORK)/found.json --data $(DEMO_WORK)/user_X.csv \
	    --labeled $(DEMO_WORK)/user_labeled_X.csv $(DEMO_WORK)/user_labeled_y.csv \
	    --method $$method --out $(DEMO_WORK)/pred-$$method.csv --evaluate $(DEMO_WORK)/user_y.csv || exit 1; \
	done
	@# no --method: with labels, every method is scored by cross-validation on them and the best is used (auto)
	$(LW) reuse --market $(DEMO_MARKET) --from $(DEMO_WORK)/found.json --data $(DEMO_WORK)/user_X.csv \
	  --labeled $(DEMO_WORK)/user_labeled_X.csv $(DEMO_WORK)/user_labeled_y.csv \
	  --out $(DEMO_WORK)/pred-auto.csv --evaluate $(DEMO_WORK)/user_y.csv
	@echo "demo finished: market in $(DEMO_MARKET), files in $(DEMO_WORK)"

# the same demo against a market in a bucket of a local S3 API server (moto), as CI runners would share one
demo-s3: install
	$(BIN)/python -m learnware_cli.experiment.demo_s3 DEMO_WORK=$(DEMO_WORK)-s3

experiment: install
	$(BIN)/python -m learnware_cli.experiment.run --out experiment-out

experiment-quick: install
	$(BIN)/python -m learnware_cli.experiment.run --out experiment-out --quick

# the paper's multimodal case: users on the union of two islands (flights x weather x aircraft)
experiment-multimodal: install
	$(BIN)/python -m learnware_cli.experiment.multimodal --out experiment-multimodal-out

experiment-multimodal-quick: install
	$(BIN)/python -m learnware_cli.experiment.multimodal --out experiment-multimodal-out --quick

# anchor learnwares (users with a few labels and no RKME) vs RKME search, on the flights market
experiment-anchors: install
	$(BIN)/python -m learnware_cli.experiment.anchors_experiment --out experiment-anchors-out

experiment-anchors-quick: install
	$(BIN)/python -m learnware_cli.experiment.anchors_experiment --out experiment-anchors-out --quick

clean:
	rm -rf $(DEMO_MARKET) $(DEMO_WORK) .jax_cache .pytest_cache $(INSTALLED)
