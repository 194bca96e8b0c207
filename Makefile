# Otasuke — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint fmt install bench clean help

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml src/otasuke/_speedups.pyx
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# Compiled twins of the hottest loops (Cython, in place); the Python code runs without them.
	$(BIN)/cythonize -i -q src/otasuke/_speedups.pyx || echo "otasuke._speedups not built: the Python code runs alone"
	touch $(STAMP)

install: $(STAMP)  ## virtual environment with the project and its dev tools

demo: $(STAMP)  ## seeded single-process instance on SQLite at http://127.0.0.1:8000
	$(BIN)/otasuke demo

lint: $(STAMP)  ## ruff and mypy, as CI runs them
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

fmt: $(STAMP)  ## format the code
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

test: lint  ## ruff, mypy and the whole pytest suite (PostgreSQL and browser tests included)
	$(BIN)/pytest

bench: $(STAMP)  ## benchmarks (figures, not pass/fail); see bench/README.md
	$(BIN)/python bench/detect.py

clean:  ## remove the virtual environment and local data
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache build src/build
	rm -f src/otasuke/_speedups.c src/otasuke/_speedups.*.so
