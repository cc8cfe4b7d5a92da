"""Without a usable GPU the ops fall back to PyTorch and say so once."""
import pytest
import torch

from mmseg_arb.ops import count_classes, cuda_ext


@pytest.fixture
def logged(monkeypatch):
    """A fresh loader whose log lines are collected."""
    monkeypatch.setattr(cuda_ext, '_state',
                        {'tried': False, 'loaded': False, 'reason': ''})
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
    counts, invalid = count_classes(torch.tensor([0, 1, 1, 255]), 3)
    assert counts.tolist() == [1, 2, 0] and int(invalid) == 0
