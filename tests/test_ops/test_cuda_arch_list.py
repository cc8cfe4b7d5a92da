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

SETUP = runpy.run_path(osp.join(ROOT, 'setup.py'), run_name='setup')
default_cuda_arch_list = SETUP['default_cuda_arch_list']
cuda_arch_list = SETUP['cuda_arch_list']
# What a torch wheel for CUDA 11.8 reports, and nvcc 11.8.
CU118_TORCH = 'sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90'
CU118_NVCC = ('compute_35 compute_37 compute_50 compute_52 compute_53 '
              'compute_60 compute_61 compute_62 compute_70 compute_72 '
              'compute_75 compute_80 compute_86 compute_87 compute_89 '
              'compute_90')


def test_torch_archs_that_nvcc_compiles_with_ptx_of_the_newest():
    torch_archs = 'sm_75 sm_80 sm_86 sm_90 sm_100 sm_120'
    nvcc = 'compute_75\ncompute_80\ncompute_86\ncompute_87\ncompute_90\n'
    assert default_cuda_arch_list(torch_archs, nvcc) == \
        '7.5;8.0;8.6;9.0+PTX'


def test_arch_suffixes_and_virtual_entries():
    assert default_cuda_arch_list('sm_90a compute_90 sm_100',
                                  'compute_90a compute_100') == \
        '9.0a;10.0+PTX'


def test_a_cu118_torch_without_gpu_leaves_out_pre_volta_and_says_so():
    # __match_any_sync does not exist below 7.0: building for sm_50/sm_60
    # would fail the whole install.
    arch_list, line = cuda_arch_list(None, set(), CU118_TORCH, CU118_NVCC)
    assert arch_list == '7.0;7.5;8.0;8.6;9.0+PTX'
    assert 'not for 5.0, 6.0' in line and 'PyTorch path' in line


def test_a_requested_list_loses_its_pre_volta_entries():
    arch_list, line = cuda_arch_list('6.0;6.1 7.0;8.6+PTX', set(), '', '')
    assert arch_list == '7.0;8.6+PTX'
    assert 'compute capability 6.0, 6.1' in line
    assert cuda_arch_list('Ampere;8.0', set(), '', '') == ('Ampere;8.0', None)
    # torch's names of pre-Volta families expand to sm_3x to sm_6x.
    arch_list, line = cuda_arch_list('Pascal;Maxwell+Tegra;Volta', set(), '',
                                     '')
    assert arch_list == 'Volta' and 'Pascal, Maxwell+Tegra' in line


def test_visible_gpus_older_than_volta_are_not_built_for():
    assert cuda_arch_list(None, {'6.1', '8.6'}, '', '')[0] == '8.6'
    arch_list, line = cuda_arch_list(None, {'6.1'}, '', '')
    assert arch_list is None and 'PyTorch path' in line


def test_nothing_in_common_names_the_fix():
    with pytest.raises(RuntimeError, match='TORCH_CUDA_ARCH_LIST'):
        default_cuda_arch_list('sm_60 sm_61', 'compute_75 compute_80')


@pytest.mark.slow
@pytest.mark.skipif(
    torch.version.cuda is not None, reason='needs a CPU build of torch')
def test_forced_build_with_a_cpu_torch_says_so():
    env = dict(os.environ, MMSEG_ARB_WITH_CUDA='1')
    result = subprocess.run([sys.executable, 'setup.py', '--name'],
                            capture_output=True,
                            text=True,
                            env=env,
                            cwd=ROOT,
                            timeout=300)
    assert result.returncode != 0
    assert f'torch {torch.__version__} is a CPU build' in result.stderr


@pytest.fixture
def jit_load(monkeypatch):
    """cuda_ext's JIT build on a machine with an sm_80 GPU and a toolkit:
    records the TORCH_CUDA_ARCH_LIST torch's ``load`` would compile for,
    and the log lines."""
    import torch.utils.cpp_extension as cpp_extension

    from mmseg_arb.ops import cuda_ext
    seen, lines = [], []
    monkeypatch.setattr(cpp_extension, 'CUDA_HOME', '/usr/local/cuda')
    monkeypatch.setattr(
        cpp_extension, 'load',
        lambda **kwargs: seen.append(os.environ.get('TORCH_CUDA_ARCH_LIST')))
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(
        torch.cuda, 'get_device_capability', lambda index=None: (8, 0))
    monkeypatch.setattr(cuda_ext, '_log', lines.append)
    return cuda_ext._jit_build, seen, lines


def test_the_jit_build_drops_pre_volta_entries_of_a_requested_list(
        jit_load, monkeypatch):
    # Docker images export lists like this; the kernels' #error for sm_60
    # would fail the whole JIT build.
    build, seen, lines = jit_load
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '6.0 6.1 7.0 8.0')
    build()
    assert seen == ['7.0;8.0']
    assert len(lines) == 1 and 'compute capability 6.0, 6.1' in lines[0]
    # The user's variable is theirs: left as it was.
    assert os.environ['TORCH_CUDA_ARCH_LIST'] == '6.0 6.1 7.0 8.0'


def test_the_jit_build_with_no_supported_entry_says_why(jit_load, monkeypatch):
    build, seen, lines = jit_load
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', 'Pascal;6.1')
    with pytest.raises(RuntimeError, match='TORCH_CUDA_ARCH_LIST'):
        build()
    assert seen == []


def test_the_jit_build_without_a_list_targets_the_visible_gpu(
        jit_load, monkeypatch):
    build, seen, lines = jit_load
    monkeypatch.delenv('TORCH_CUDA_ARCH_LIST', raising=False)
    build()
    assert seen == ['8.0'] and lines == []
    assert 'TORCH_CUDA_ARCH_LIST' not in os.environ
