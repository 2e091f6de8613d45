# The README's two commands: `make app` and `make test`. Each creates .venv from the requirements first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: app test lint bench
app: $(VENV)/.runtime
	$(BIN)/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

test: $(VENV)/.dev
	bash scripts/ensure_chromium.sh
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: $(VENV)/.runtime
	$(BIN)/python bench/bench_calculator.py
