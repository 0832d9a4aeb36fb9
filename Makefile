# Two commands after `git clone`:  `make demo` runs the main job, `make test` runs the tests.
# Each creates .venv/ on first use (Python 3.11+ and pip are all it needs).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo

.PHONY: setup demo baseline test test-slow lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The official SoccerNet evaluator, a test oracle only; its own dependencies are not needed for that.
	$(BIN)/python -m pip install --quiet --no-deps soccernet==0.2.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	@# The main job: the smoke search on the simulator's default dataset, on a local Ray.
	$(BIN)/python run_search.py

baseline: $(STAMP)
	@# A simulated SoccerNet-v2 dataset in the real layout, checked, then a baseline scored
	@# with the official Average-mAP (tight and loose) on the test split.
	test -f $(DEMO)/data/splits.json || $(BIN)/astra synth $(DEMO)/data --overwrite
	$(BIN)/astra check-data --data $(DEMO)/data
	$(BIN)/astra baseline --data $(DEMO)/data --split test --out $(DEMO)/baseline
	$(BIN)/astra evaluate --labels $(DEMO)/data --predictions $(DEMO)/baseline/predictions.zip --split test --metric tight
	$(BIN)/astra evaluate --labels $(DEMO)/data --predictions $(DEMO)/baseline/predictions.zip --split test --metric loose

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs
