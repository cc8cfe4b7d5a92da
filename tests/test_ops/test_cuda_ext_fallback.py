"""Without a usable GPU the ops fall back to PyTorch and say so once."""
import importlib.machinery
import sys
import types

import pytest
import torch

import mmseg_arb
from mmseg_arb.ops import class_histogram, cuda_ext


@pytest.fixture
def logged(monkeypatch):
    """A fresh loader whose log lines are collected."""
    monkeypatch.setattr(cuda_ext, '_state', {
        'tried': False,
        'loaded': False,
        'reason': ''
    })
    lines = []
    monkeypatch.setattr(cuda_ext, '_log', lines.append)
    return lines


def test_disabled_by_environment(logged, monkeypatch):
    monkeypatch.setenv('MMSEG_ARB_CUDA', '0')
    assert cuda_ext.load_cuda_ops() is False
    assert cuda_ext.load_cuda_ops() is False  # remembered, not retried
    assert cuda_ext.cuda_ops_status() == 'disabled by MMSEG_ARB_CUDA=0'
    assert logged == [
        'mmseg_arb: CUDA kernels unavailable (disabled by MMSEG_ARB_CUDA=0);'
        ' counting and ARB-Loss use the PyTorch path.'
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only check')
def test_no_gpu_means_pytorch_path(logged):
    assert cuda_ext.load_cuda_ops() is False
    assert cuda_ext.cuda_ops_status() == 'torch has no CUDA device'
    assert len(logged) == 1
    hist = class_histogram(torch.tensor([0, 1, 1, 255, 7]), 3)
    assert hist.tolist() == [5, 1, 2, 0, 1, 7, 0]


# 'imported': the real extension was imported into this process before
# (by an earlier test, or by gpu_check.sh's in-place build), which must not
# hide the broken file this test puts first.
@pytest.mark.parametrize('build', ['missing', 'broken', 'imported'])
def test_unusable_build_falls_back_to_jit_then_pytorch(build, logged,
                                                       monkeypatch, tmp_path):
    if build == 'imported':
        monkeypatch.setitem(sys.modules, 'mmseg_arb._ext',
                            types.ModuleType('mmseg_arb._ext'))
    if build == 'missing':
        monkeypatch.setitem(sys.modules, 'mmseg_arb._ext', None)
    else:  # a file that is no loadable library, found first
        monkeypatch.delitem(sys.modules, 'mmseg_arb._ext', raising=False)
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        (tmp_path / f'_ext{suffix}').write_bytes(b'not a shared object')
        monkeypatch.setattr(mmseg_arb, '__path__',
                            [str(tmp_path)] + list(mmseg_arb.__path__))

    def jit_build():
        raise RuntimeError('no CUDA toolkit found (set CUDA_HOME)')

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(cuda_ext, '_jit_build', jit_build)
    assert cuda_ext.load_cuda_ops() is False
    status = cuda_ext.cuda_ops_status()
    assert status.endswith('JIT build failed: RuntimeError: no CUDA toolkit '
                           'found (set CUDA_HOME)')
    # A build that is there but cannot load is named; a missing one is not.
    assert status.startswith('mmseg_arb._ext: ImportError: ') == \
        (build != 'missing')
    assert len(logged) == 1 and 'use the PyTorch path' in logged[0]


def test_a_gpu_older_than_volta_takes_the_pytorch_path(logged, monkeypatch):
    # The kernels use __match_any_sync (7.0+); setup.py builds for no older
    # GPU, so such a device must never reach them.
    monkeypatch.setattr(cuda_ext, '_device_is_supported', {})
    monkeypatch.setattr(
        torch.cuda, 'get_device_capability', lambda index=None: (6, 1))
    monkeypatch.setattr(
        torch.cuda, 'get_device_name', lambda index=None: 'Tesla P40')

    def must_not_load():
        raise AssertionError('the kernels were loaded for an sm_61 GPU')

    monkeypatch.setattr(cuda_ext, 'load_cuda_ops', must_not_load)
    on_gpu = types.SimpleNamespace(
        is_cuda=True, device=torch.device('cuda', 1))
    assert cuda_ext.cuda_ops_apply(on_gpu) is False
    assert cuda_ext.cuda_ops_apply(on_gpu) is False
    assert logged == [
        'mmseg_arb: Tesla P40 (cuda:1) has compute capability 6.1; the CUDA '
        'kernels need 7.0 (Volta) or newer, so ARB-Loss uses the PyTorch '
        'path on it.'
    ]
