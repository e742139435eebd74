# qmu-qiskit: one command sets everything up and runs the demo, one runs the tests.
#   make demo   — virtual environment, torch 2.13.0 (CPU) first, the package, then
#                 train on Iris (aer) → unlearn class 0 with three methods next to the oracle
#   make lint   — the static checks CI runs before the tests: ruff format --check, ruff check,
#                 mypy, and the layering contract (lint-imports); settings in pyproject.toml
#   make test   — the same set-up, then the default test suite (what CI runs)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= runs/demo-iris

.PHONY: setup lint demo test test-threads test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: this version is the CPU build here (an unpinned torch pulls CUDA)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,tracking,lint]"
	touch $(STAMP)

demo: setup
	rm -rf $(DEMO)
	$(BIN)/qmu-qiskit train --dataset iris --model hqml-shallow --backend aer --seed 0 --out $(DEMO)
	$(BIN)/qmu-qiskit unlearn --run $(DEMO) --forget class:0 --method finetune --method ga --method neggrad_plus

# Style, lint, types ([tool.ruff], [tool.mypy]) and the layering contract ([tool.importlinter]: no
# import from a lower layer to a higher one; the grid layer imports no study or pipeline code).
lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_import_cycles.py

test: setup
	$(BIN)/python -m pytest

# The method tests once more on one thread: a test that asserts on the exact numbers of a training
# trajectory (which depend on the CPU's floating-point kernels and thread count) fails here.
test-threads: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_methods.py

test-slow: setup
	$(BIN)/python -m pytest -m slow

bench: setup
	$(BIN)/python benchmarks/bench_training.py

clean:
	rm -rf $(VENV) runs .pytest_cache
