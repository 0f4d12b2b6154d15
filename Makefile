# emergence-lab: `make demo` runs a small real study and draws its figures; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-fast lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv if missing and install the project with the dev extra

demo: setup  ## the demo study: 3-digit addition, widths x depths x 3 seeds (packed), then analysis and figures
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/emergence sweep demo hydra/launcher=joblib
	$(BIN)/emergence analyze outputs/sweeps/demo --out outputs/analysis/demo

test: setup  ## the whole test suite (what CI runs), wandb disabled
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

test-fast: setup  ## the suite without the end-to-end runs
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m "not slow"

lint: setup  ## ruff lint and format check, and the import layers (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: setup  ## apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup  ## side-by-side speed benchmarks (not part of the tests)
	$(BIN)/emergence bench train
	$(BIN)/emergence bench analysis

clean:  ## remove outputs (keeps .venv)
	rm -rf outputs multirun .pytest_cache
