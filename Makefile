# Each target sets up the environment first (idempotent, see tools/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup demo lint format test test-quick bench

setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

# OpenMMLab's lint set: flake8's rules (ruff, ruff.toml), isort and yapf
# (setup.cfg). `make format` applies isort and yapf.
LINTED := mmseg_arb tools tests configs projects setup.py
lint:
	@bash tools/setup_env.sh --tests
	$(PY) -m ruff check .
	$(PY) -m isort --check-only --diff $(LINTED)
	$(PY) -m yapf --diff --recursive $(LINTED)

format:
	@bash tools/setup_env.sh --tests
	$(PY) -m isort $(LINTED)
	$(PY) -m yapf --in-place --recursive $(LINTED)

test: lint
	$(PY) -m pytest -q tests projects/loss_study/tests

# The development loop: everything but the tests marked slow (trainings,
# subprocesses, compiles; tests/conftest.py), a few minutes at most.
test-quick: setup
	$(PY) -m pytest -q -m "not slow" tests projects/loss_study/tests

bench: setup
	$(PY) tools/benchmark.py
