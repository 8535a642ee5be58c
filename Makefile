# The two set-up commands: `make run` and `make test`. Each creates .venv and
# installs the pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RESULTS ?= results
PORT ?= 8501

.PHONY: run test test-fast bench dashboard install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/workbench heads --model gemma-3-270m --out $(RESULTS)
	$(BIN)/workbench dashboard --port $(PORT) --results $(RESULTS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration and not browser"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_heads.py
	$(BIN)/python benchmarks/bench_load.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_steering.py

clean:
	rm -rf $(VENV) $(RESULTS)
