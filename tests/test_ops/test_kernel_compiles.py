"""The torch-free CUDA unit must compile wherever nvcc exists, GPU or not,
so that a kernel compile error fails CI on a CPU machine: for the oldest
architecture the kernels support (Turing's sm_75 is the oldest this nvcc
still compiles; setup.py leaves out anything below 7.0) and two newer."""
import os.path as osp
import shutil
import subprocess

import pytest

import mmseg_arb.ops

pytestmark = pytest.mark.slow  # see tests/conftest.py

CSRC = osp.join(osp.dirname(mmseg_arb.ops.__file__), 'csrc')


@pytest.mark.skipif(shutil.which('nvcc') is None, reason='nvcc not on PATH')
@pytest.mark.parametrize('arch', ['sm_75', 'sm_80', 'sm_90'])
def test_kernel_unit_compiles_without_torch(tmp_path, arch):
    result = subprocess.run([
        'nvcc', '-std=c++17', '-O3', f'-arch={arch}', '-c',
        osp.join(CSRC, 'arb_kernels.cu'), '-o',
        str(tmp_path / 'k.o')
    ],
                            capture_output=True,
                            text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'k.o').stat().st_size > 0
