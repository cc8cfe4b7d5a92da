# Each target sets up the environment first (idempotent, see tools/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup demo test test-quick bench

setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

test:
	@bash tools/setup_env.sh --tests
	$(PY) -m pytest -q tests projects/loss_study/tests

# The development loop: everything but the tests marked slow (trainings,
# subprocesses, compiles; tests/conftest.py), a few minutes at most.
test-quick: setup
	$(PY) -m pytest -q -m "not slow" tests projects/loss_study/tests

bench: setup
	$(PY) tools/benchmark.py
