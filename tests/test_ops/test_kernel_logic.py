"""The per-thread logic of the CUDA kernels (``arb_kernel_logic.cuh``: which
labels a thread counts, one pixel's fused loss forward and backward) runs on
the host against exact references, so it is tested wherever nvcc exists,
GPU or not (see ``csrc/test_kernel_logic.cu``)."""
import os.path as osp
import shutil
import subprocess

import pytest

import mmseg_arb.ops

CSRC = osp.join(osp.dirname(mmseg_arb.ops.__file__), 'csrc')
TEST_SOURCE = osp.join(osp.dirname(__file__), 'csrc', 'test_kernel_logic.cu')


@pytest.mark.skipif(shutil.which('nvcc') is None, reason='nvcc not on PATH')
def test_kernel_logic_on_the_host(tmp_path):
    binary = str(tmp_path / 'test_kernel_logic')
    build = subprocess.run(
        ['nvcc', '-std=c++17', '-O2', f'-I{CSRC}', TEST_SOURCE, '-o', binary],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([binary], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert ', 0 failed' in run.stdout
