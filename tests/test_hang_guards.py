"""The guards that turn a hang into a failed test (tests/conftest.py,
``helpers.run_ranks``) instead of a CI run cut at its time limit."""
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import torch.multiprocessing as mp
from helpers import ROOT, run_ranks

pytestmark = pytest.mark.slow  # spawned ranks, a pytest in a subprocess


def _hang_on_rank_1(rank):
    if rank == 1:
        time.sleep(120)


def test_a_hanging_rank_fails_its_test_with_its_stack(capfd):
    start = time.monotonic()
    with pytest.raises(mp.ProcessExitedException, match='exit code 1'):
        run_ranks(_hang_on_rank_1, timeout=5)
    assert time.monotonic() - start < 60
    assert 'in _hang_on_rank_1' in capfd.readouterr().err


def test_a_hanging_test_ends_pytest_with_its_stack(tmp_path):
    shutil.copy(os.path.join(ROOT, 'tests', 'conftest.py'), tmp_path)
    (tmp_path / 'test_sleeps.py').write_text(
        textwrap.dedent("""
        import time

        def test_sleeps_too_long():
            time.sleep(120)
        """))
    start = time.monotonic()
    run = subprocess.run([
        sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
        str(tmp_path)
    ],
                         cwd=tmp_path,
                         env=dict(os.environ, MMSEG_ARB_TEST_TIMEOUT='3'),
                         capture_output=True,
                         text=True,
                         timeout=110)
    assert time.monotonic() - start < 100
    assert run.returncode == 1
    assert 'Timeout' in run.stderr
    assert 'in test_sleeps_too_long' in run.stderr
