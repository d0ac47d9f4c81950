# Two commands set everything up on a fresh machine: `make train` and `make test`.
# Each creates .venv (Python 3.11) if missing and installs the package with exact pins.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# One test worker more than cores: a worker waiting on a subprocess, a socket or pip leaves its
# core to the others (on the 2-core CI machine two workers kept the cores 86% busy).
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print((os.cpu_count() or 1) + 1)")

.PHONY: train test test-fast rehearsal convergence lint format benchmark-data clean

# uv installs the lock's exact versions in parallel: ~20 s on a fresh 2-core machine, pip ~80 s
# (pip stays in the venv for the commands the docs give). --compile-bytecode as pip does: where
# PYTHONDONTWRITEBYTECODE is set (as on our CI machines), a venv without .pyc files compiles
# TensorFlow's and JAX's sources again in every process (importing them: 5.6 s -> 15.6 s).
UV_VERSION := 0.13.8

$(STAMP): setup.py requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -c requirements.lock -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(PY) train.py

test: $(STAMP)
	$(PY) -m ruff check octo_like tests scripts packages configs train.py finetune.py
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 tests

# The pod path's dress rehearsal on all 25 datasets of oxe_magic_soup (make test runs it on the
# 12 that take every conversion path): ~10-15 min on 2 cores. Run it before a pod launch.
rehearsal: $(STAMP)
	OCTO_REHEARSAL_MIX=oxe_magic_soup $(PY) -m pytest -q -s tests/training/test_dress_rehearsal.py

# Did this change alter what training learns? A fixed pretraining on the Bridge shard against
# the band of 10 seeds in configs/convergence_reference/full.json (docs/training.md,
# "Determinism"): 89 s on 2 cores. make test runs its quick preset.
convergence: $(STAMP)
	$(PY) scripts/convergence.py check --preset full

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" tests

lint: $(STAMP)
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .

benchmark-data: $(STAMP)
	$(PY) scripts/benchmark_data.py --data_dir ../shared/data/bridge_dataset/1.0.0 --seconds 60 --resize 256 --augment

clean:
	rm -rf $(VENV) .pytest_cache
