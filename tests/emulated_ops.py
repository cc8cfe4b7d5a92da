"""The ``torch.ops.mmseg_arb`` operators on CPU tensors, run by the kernels
themselves on the host emulator (``test_ops/csrc/emulated_kernels.cpp``),
so that code written for the GPU (``mmseg-arb check``'s kernel checks, the
first-use guard, ``ARBLoss`` on gloo ranks) runs its real path on a machine
without one.

:func:`register` adds CPU kernels for the four operators, behind the same
schemas as the extension's CUDA ones; ``wrong`` makes one of them return a
wrong result, as a miscompiled kernel would.
"""
import ctypes
import os.path as osp
import shutil
import subprocess

import pytest
import torch

import mmseg_arb.ops
from mmseg_arb.counting import COUNT_MODES

CSRC = osp.join(osp.dirname(mmseg_arb.ops.__file__), 'csrc')
TEST_CSRC = osp.join(osp.dirname(__file__), 'test_ops', 'csrc')
SMS = 2
LABEL_TYPES = {torch.int64: 0, torch.int32: 1, torch.uint8: 2}
FLOAT_TYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
REDUCTIONS = {'none': 0, 'sum': 1, 'mean': 2}

needs_nvcc = pytest.mark.skipif(
    shutil.which('nvcc') is None, reason='nvcc not on PATH')


def build(folder) -> ctypes.CDLL:
    """The emulated kernels, compiled into ``folder``."""
    library = osp.join(str(folder), 'libemulated.so')
    result = subprocess.run([
        'nvcc', '-std=c++17', '-O1', '-cudart', 'none', '-Xcompiler', '-fPIC',
        '-shared', f'-I{CSRC}',
        osp.join(TEST_CSRC, 'emulated_kernels.cpp'), '-o', library
    ],
                            capture_output=True,
                            text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return load(library)


def load(library: str) -> ctypes.CDLL:
    """The emulated kernels built by :func:`build` (e.g. in another
    process) at ``library``."""
    lib = ctypes.CDLL(library)
    lib.emu_configure(3, 0)
    return lib


def _ptr(tensor, offset=0):
    return ctypes.c_void_p(None if tensor is None else tensor.data_ptr() +
                           offset)


def _i64(value):
    return ctypes.c_int64(value)


def register(emu: ctypes.CDLL, wrong: str = '') -> torch.library.Library:
    """CPU kernels of the ``mmseg_arb`` operators on the emulator; ``wrong``
    (``'class_histogram'``, ``'arb_loss_forward'`` or
    ``'arb_loss_backward'``) is off by a little. Call ``_destroy()`` on
    the result to remove them."""

    def class_histogram(label, num_classes, ignore_index):
        label = label.contiguous()
        # As the binding: the pixel total, then the count kernel's entries.
        out = torch.zeros(num_classes + 4, dtype=torch.int64)
        out[0] = label.numel()
        assert emu.emu_count_classes(
            _ptr(label), LABEL_TYPES[label.dtype], _i64(label.numel()),
            num_classes, _i64(ignore_index), _ptr(out, 8), SMS) == 0
        if wrong == 'class_histogram':
            out[1] += 1
        return out

    def prepare_counts(hist, counts, class_weight, count_mode, momentum,
                       smoothing, tau, weight_power, max_weight_ratio, update,
                       avg_non_ignore, ranks):
        out = torch.empty(2 * counts.numel() + 1, dtype=torch.float32)
        assert emu.emu_prepare_counts(
            _ptr(hist), _ptr(counts), _ptr(class_weight), counts.numel(),
            COUNT_MODES.index(count_mode), ctypes.c_double(momentum),
            ctypes.c_double(smoothing), ctypes.c_double(tau),
            ctypes.c_double(weight_power), ctypes.c_double(max_weight_ratio),
            int(update), int(avg_non_ignore), ranks, _ptr(out)) == 0
        return out

    def shape(logits, label):
        N, C = logits.shape[:2]
        return N, C, label.numel() // max(N, 1)

    def arb_loss_forward(logits,
                         label,
                         shift,
                         class_weight,
                         weight,
                         ignore_index,
                         reduction,
                         loss_weight,
                         avg_non_ignore,
                         denominator=None):
        N, C, S = shape(logits, label)
        out = torch.empty(
            label.shape if reduction == 'none' else (), dtype=torch.float32)
        stats = torch.empty((2, ) + tuple(label.shape), dtype=torch.float32)
        partials = torch.empty(2 *
                               emu.emu_loss_reduce_blocks(_i64(N * S), SMS))
        scale = torch.empty(1)
        assert emu.emu_arb_loss_forward_given(
            _ptr(logits), FLOAT_TYPES[logits.dtype],
            _ptr(label), LABEL_TYPES[label.dtype], _ptr(shift),
            _ptr(class_weight), _ptr(weight), _i64(N), C, _i64(S),
            _i64(ignore_index), REDUCTIONS[reduction],
            ctypes.c_float(loss_weight), int(avg_non_ignore),
            _ptr(denominator), _ptr(out), _ptr(stats), _ptr(partials),
            _ptr(scale), SMS) == 0
        if wrong == 'arb_loss_forward':
            out = out * 1.01
        return out, stats, scale

    def arb_loss_backward(grad_loss, logits, label, shift, class_weight,
                          weight, softmax_stats, scale, ignore_index):
        N, C, S = shape(logits, label)
        # As the binding: one value (a scalar, or expanded) is read once.
        scalar = grad_loss.numel() <= 1 or all(
            n <= 1 or stride == 0
            for n, stride in zip(grad_loss.shape, grad_loss.stride()))
        grad_loss = (grad_loss.reshape(-1)[:1]
                     if scalar else grad_loss).float().contiguous()
        grad = torch.empty_like(logits)
        assert emu.emu_arb_loss_backward(
            _ptr(logits), FLOAT_TYPES[logits.dtype],
            _ptr(label), LABEL_TYPES[label.dtype], _ptr(shift),
            _ptr(class_weight), _ptr(weight), _ptr(softmax_stats),
            _ptr(grad_loss), int(scalar), _ptr(scale), _i64(N), C, _i64(S),
            _i64(ignore_index), _ptr(grad), SMS) == 0
        if wrong == 'arb_loss_backward':
            grad = grad * 1.01
        return grad

    lib = torch.library.Library('mmseg_arb', 'IMPL')
    for fn in (class_histogram, prepare_counts, arb_loss_forward,
               arb_loss_backward):
        lib.impl(fn.__name__, fn, 'CPU')
    return lib
