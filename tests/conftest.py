import faulthandler
import os
import sys

import pytest

# Make tests/reference.py importable as `reference` from every test folder.
sys.path.insert(0, os.path.dirname(__file__))

# A test still running after this many seconds prints every thread's stack
# and ends pytest with exit 1: a hang names itself in minutes instead of
# running into CI's limit. The slowest test takes about 3 minutes here.
TEST_TIMEOUT = float(os.environ.get('MMSEG_ARB_TEST_TIMEOUT', 900))
_stderr = None  # the terminal's stderr, which pytest's capture does not take


def pytest_configure(config):
    global _stderr
    _stderr = os.fdopen(os.dup(sys.stderr.fileno()), 'w')
    # ``make test-quick`` (pytest -m "not slow") leaves these out; ``make
    # test`` and CI run everything.
    config.addinivalue_line(
        'markers', 'slow: several seconds to minutes on a 2-core machine: '
        'trainings through the Runner, other processes (subprocess, '
        'spawned ranks), compiles (nvcc, torch.compile), installs')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if TEST_TIMEOUT > 0:
        faulthandler.dump_traceback_later(
            TEST_TIMEOUT, exit=True, file=_stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope='session')
def emu(tmp_path_factory):
    """The kernels built for the host emulator, once per session."""
    import emulated_ops
    return emulated_ops.build(tmp_path_factory.mktemp('emulator'))


@pytest.fixture
def kernels(emu):
    """``kernels(wrong='')`` gives the operators CPU kernels: the emulated
    ones, one of them wrong if named."""
    import emulated_ops
    libraries = []
    yield lambda wrong='': libraries.append(emulated_ops.register(emu, wrong))
    for library in libraries:
        library._destroy()
