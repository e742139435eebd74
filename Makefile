# qmu-qiskit: one command sets everything up and runs the demo, one runs the tests.
#   make demo   — virtual environment, torch 2.13.0 (CPU) first, the package, then
#                 train on Iris (aer) → unlearn class 0 with three methods next to the oracle
#   make test   — the same set-up, then the default test suite (what CI runs)
#   make lint   — ruff format --check, ruff check and mypy on qmu_qiskit/ (CI runs it before test)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= runs/demo-iris

.PHONY: setup demo lint test test-threads test-slow bench clean

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

# style, lint and types; the rule sets and the mypy settings are in pyproject.toml
# (the import-layer contract check, lint-imports, is added here with [tool.importlinter])
lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

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
