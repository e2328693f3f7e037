# clerk-audit: `make serve` and `make test` work on a fresh clone with Python 3.11+.
PYTHON ?= python3
SERVE_ARGS ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: serve test lint datasette bench rebuild clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	rm -f $(VENV)/.installed-* && touch $@

serve: $(STAMP)
	$(BIN)/clerk-audit serve $(SERVE_ARGS)

test: lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

datasette: $(STAMP)
	$(BIN)/clerk-audit datasette

rebuild: $(STAMP)
	$(BIN)/clerk-audit rebuild

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
