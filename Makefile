# The README's two commands: `make app` and `make test` (the full suite, what .ci/run calls). Each creates
# .venv from the requirements first (and installs the toolkit itself, editable). `make test-fast` is for local
# iteration: ruff and the unit tests, without the browser, Slurm, real training and the other slow tests, in
# TEST_WORKERS processes like `make test`; an unmarked test over 10 s fails it. Time: 1,880 tests in 2 min 10-15 s
# on the quiet 2-core machine (2026-12-07, load 0.3-2.0 before the runs; the same tests took 2 min 35-48 s before the
# garbage-collector, AppTest and bootstrap changes of #23 item 5; 4 min 15 s with TEST_WORKERS=1, 5 min 35 s in one
# process before item 5): still above the 2 minutes #23 aims at.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt pyproject.toml | $(BIN)/python
	@echo "First run: installing the requirements into $(VENV) (torch, transformers, peft, streamlit, ...:"
	@echo "about a minute with a pip cache, a few minutes without; later runs start at once)."
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .  # the toolkit itself, editable: no sys.path edits
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: app test test-fast lint bench
app: $(VENV)/.runtime
	@echo "Starting the app on http://127.0.0.1:$(PORT) (the first page load imports torch and transformers: allow it some seconds)"
	$(BIN)/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

# `make test` spreads the tests over TEST_WORKERS processes (pytest-xdist; the Slurm and browser tests each stay in
# one process, tests/conftest.py): the number of cores, at most 4. TEST_WORKERS=1 runs them in this process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
test: $(VENV)/.dev
	bash scripts/ensure_chromium.sh
	$(BIN)/ruff check .
	$(BIN)/pytest $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

# The fast target runs in TEST_WORKERS processes too, and lets Python write bytecode even where
# PYTHONDONTWRITEBYTECODE is set: pytest keeps its assertion-rewritten test modules only as bytecode, and
# rewriting the ~90 test modules again costs each process about 7 s of the run.
FAST := not slow and not training and not browser and not slurm and not gpu
test-fast: $(VENV)/.dev
	$(BIN)/ruff check .
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -m "$(FAST)" --unmarked-limit 10 $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

bench: $(VENV)/.runtime
	$(BIN)/python bench/bench_calculator.py
