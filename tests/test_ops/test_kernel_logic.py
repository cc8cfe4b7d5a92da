"""The logic of the CUDA kernels (``arb_kernel_logic.cuh``) runs on the host
against exact references, so it is tested wherever nvcc exists, GPU or not:

* ``csrc/test_kernel_logic.cu``: which labels a thread counts, and the
  fused loss of a thread's pixels, forward and backward, against float64
  and against fp32 cross-entropy computed the PyTorch way in the same run
  (errors at most 3x PyTorch's, never a loss below zero); and the same
  functions at indices past 2^31 (class rows 2^31 + 16 elements apart,
  labels past 2^31) in reserved address space that faults wherever it is
  not used, so an index that wraps at 32 bits crashes the binary;
* ``csrc/test_count_block.cu``: the count kernel's launch plan and whole
  grid, one host thread per CUDA thread, with warp aggregation both
  converged and diverged; once more under ThreadSanitizer, which reports
  any shared-memory access a missing ``__syncthreads`` leaves unordered.

Every whole kernel, launch wrappers included, runs on the host emulator in
``test_emulated_kernels.py``.
"""
import os.path as osp
import shutil
import subprocess

import pytest

import mmseg_arb.ops

CSRC = osp.join(osp.dirname(mmseg_arb.ops.__file__), 'csrc')
TEST_CSRC = osp.join(osp.dirname(__file__), 'csrc')

pytestmark = [
    pytest.mark.slow,  # see tests/conftest.py
    pytest.mark.skipif(
        shutil.which('nvcc') is None, reason='nvcc not on PATH')
]


def build(tmp_path, source, *flags):
    binary = str(tmp_path / osp.splitext(source)[0])
    return binary, subprocess.run([
        'nvcc', '-std=c++17', *flags, f'-I{CSRC}',
        osp.join(TEST_CSRC, source), '-o', binary
    ],
                                  capture_output=True,
                                  text=True,
                                  timeout=600)


def run(binary, *args):
    return subprocess.run([binary, *args],
                          capture_output=True,
                          text=True,
                          timeout=600)


def check_output(result):
    assert result.returncode == 0, \
        result.stdout[-4000:] + result.stderr[-4000:]
    assert ', 0 failed' in result.stdout


@pytest.mark.parametrize('source',
                         ['test_kernel_logic.cu', 'test_count_block.cu'])
def test_kernel_logic_on_the_host(tmp_path, source):
    binary, build_run = build(tmp_path, source, '-O2')
    assert build_run.returncode == 0, build_run.stderr
    check_output(run(binary))


def test_count_block_is_race_free(tmp_path):
    binary, build_run = build(tmp_path, 'test_count_block.cu', '-O1', '-g',
                              '-Xcompiler', '-fsanitize=thread', '-ltsan')
    if build_run.returncode != 0 and 'tsan' in build_run.stderr:
        pytest.skip('ThreadSanitizer is not available to the host compiler: ' +
                    build_run.stderr.strip().splitlines()[-1])
    assert build_run.returncode == 0, build_run.stderr
    races = run(binary, '--races')
    if 'FATAL: ThreadSanitizer' in races.stderr:  # e.g. the kernel's ASLR
        pytest.skip('ThreadSanitizer cannot run here: ' +
                    races.stderr.strip().splitlines()[0])
    assert 'ThreadSanitizer' not in races.stderr, races.stderr[-4000:]
    check_output(races)
