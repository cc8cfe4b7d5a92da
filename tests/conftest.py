import os
import sys

# Make tests/reference.py importable as `reference` from every test folder.
sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
    # ``make test-quick`` (pytest -m "not slow") leaves these out; ``make
    # test`` and CI run everything.
    config.addinivalue_line(
        'markers', 'slow: several seconds to minutes on a 2-core machine: '
        'trainings through the Runner, other processes (subprocess, '
        'spawned ranks), compiles (nvcc, torch.compile), installs')
