# Each target sets up the environment first (idempotent, see tools/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup demo test bench

setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

test:
	@bash tools/setup_env.sh --tests
	$(PY) -m pytest -q tests projects/loss_study/tests

bench: setup
	$(PY) tools/benchmark.py
