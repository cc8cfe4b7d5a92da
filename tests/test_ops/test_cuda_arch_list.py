"""What a forced CUDA build (``MMSEG_ARB_WITH_CUDA=1 pip install``) does
where it cannot use torch's defaults: which GPU architectures it targets on
a node without a GPU (torch's own choice fails there), and what it says
when torch itself is a CPU build."""
import os
import os.path as osp
import runpy
import subprocess
import sys

import pytest
import torch

from helpers import ROOT

default_cuda_arch_list = runpy.run_path(
    osp.join(ROOT, 'setup.py'), run_name='setup')['default_cuda_arch_list']


def test_torch_archs_that_nvcc_compiles_with_ptx_of_the_newest():
    torch_archs = 'sm_75 sm_80 sm_86 sm_90 sm_100 sm_120'
    nvcc = 'compute_75\ncompute_80\ncompute_86\ncompute_87\ncompute_90\n'
    assert default_cuda_arch_list(torch_archs, nvcc) == \
        '7.5;8.0;8.6;9.0+PTX'


def test_arch_suffixes_and_virtual_entries():
    assert default_cuda_arch_list('sm_90a compute_90 sm_100',
                                  'compute_90a compute_100') == \
        '9.0a;10.0+PTX'


def test_nothing_in_common_names_the_fix():
    with pytest.raises(RuntimeError, match='TORCH_CUDA_ARCH_LIST'):
        default_cuda_arch_list('sm_60 sm_61', 'compute_75 compute_80')


@pytest.mark.skipif(torch.version.cuda is not None,
                    reason='needs a CPU build of torch')
def test_forced_build_with_a_cpu_torch_says_so():
    env = dict(os.environ, MMSEG_ARB_WITH_CUDA='1')
    result = subprocess.run([sys.executable, 'setup.py', '--name'],
                            capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=300)
    assert result.returncode != 0
    assert f'torch {torch.__version__} is a CPU build' in result.stderr
