# numconv's commands. Everything runs inside the virtual environment .venv,
# which `make install` builds (and every other target builds when missing).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-boundscheck demo perf perf-long clean

install: $(STAMP)

# PyTorch is the tests' outside oracle and the benchmarks' peer, never a
# runtime dependency. The pinned release is the CPU build.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,demo,perf]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q tests

# The property, oracle, numerics and hostile-input tests again, with bounds
# checks compiled into every kernel (slow compiles, so fewer Hypothesis
# examples). The checked kernels get their own cache: Numba's cache key leaves
# NUMBA_BOUNDSCHECK out, so a shared cache would hand back unchecked code. One
# thread, because Numba drops an IndexError raised on a worker thread.
BOUNDSCHECK_TESTS := $(wildcard $(addprefix tests/test_,properties.py oracle.py \
	reference.py numerics.py hostile.py boundscheck.py))

test-boundscheck: install
	NUMBA_BOUNDSCHECK=1 NUMBA_NUM_THREADS=1 NUMBA_CACHE_DIR=.numba-boundscheck-cache \
	HYPOTHESIS_PROFILE=boundscheck $(BIN)/python -m pytest -q $(BOUNDSCHECK_TESTS)

# The main job: the FCN classifier trained on three real UCR/UEA datasets with
# numconv's convolutions (examples/ucr_fcn.py). Options through DEMO_ARGS, for
# example make demo DEMO_ARGS="--dataset gunpoint --epochs 20 --dtype float64".
demo: install
	$(BIN)/python examples/ucr_fcn.py $(DEMO_ARGS)

# numconv against PyTorch on the shape suite in perf/shapes.py; results, table
# and chart in perf/results/. Options through PERF_ARGS, for example
# make perf PERF_ARGS="--shapes wide,tiny --repeats 9" (see python -m perf.bench -h).
perf: install
	$(BIN)/python -m perf.bench $(PERF_ARGS)

# Longer and more precise: 15 timed runs of >= 0.2 s, float64 on every shape.
perf-long: install
	$(BIN)/python -m perf.bench --long $(PERF_ARGS)

clean:
	rm -rf $(VENV) .hypothesis .pytest_cache .numba-boundscheck-cache
	find . -name __pycache__ -prune -exec rm -rf {} +
