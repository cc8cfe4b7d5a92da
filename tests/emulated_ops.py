"""The CUDA kernels as the CPU kernels of ``torch.ops.mmseg_arb``, on the
host emulator, so that a whole ``ARBLoss`` runs its fused path on a CPU.

``tests/test_ops/csrc/emulated_kernels.cpp`` compiles the unchanged
``arb_kernels.cu`` on the host (each CUDA thread a host thread); the
functions below play ``binding.cpp``'s part for CPU tensors (allocation and
the launch wrappers' arguments). :func:`use_emulated_kernels` registers
them and sends every op call down the kernels' path.
"""
import ctypes
import os.path as osp
import subprocess

import torch

import mmseg_arb.ops
from mmseg_arb.counting import COUNT_MODES
from mmseg_arb.ops import cuda_ext

CSRC = osp.join(osp.dirname(mmseg_arb.ops.__file__), 'csrc')
EMULATOR = osp.join(osp.dirname(__file__), 'test_ops', 'csrc',
                    'emulated_kernels.cpp')
SMS = 2
LABEL_TYPES = {torch.int64: 0, torch.int32: 1, torch.uint8: 2}
FLOAT_TYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
REDUCTIONS = {'none': 0, 'sum': 1, 'mean': 2}


def build_emulator(directory: str) -> str:
    """Compile the emulated kernels into ``directory``; their path."""
    library = osp.join(directory, 'libemulated.so')
    build = subprocess.run(
        ['nvcc', '-std=c++17', '-O1', '-cudart', 'none', '-Xcompiler',
         '-fPIC', '-shared', f'-I{CSRC}', EMULATOR, '-o', library],
        capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-4000:]
    return library


def _ptr(tensor, offset=0):
    if tensor is None:
        return ctypes.c_void_p(None)
    return ctypes.c_void_p(tensor.data_ptr() + offset)


def _i64(value):
    return ctypes.c_int64(value)


def use_emulated_kernels(library: str) -> torch.library.Library:
    """Register the emulated kernels as the ops' CPU kernels and make every
    CPU tensor take the kernels' path, for the rest of the process (meant
    for a process of its own, e.g. a spawned rank); keep the result
    alive."""
    lib = ctypes.CDLL(library)
    lib.emu_configure(3, 0)

    def class_histogram(label, num_classes, ignore_index):
        flat = label.contiguous()
        out = torch.zeros(num_classes + 4, dtype=torch.int64)
        out[0] = flat.numel()  # the pixel total, then the kernel's entries
        if flat.numel():
            assert lib.emu_count_classes(
                _ptr(flat), LABEL_TYPES[flat.dtype], _i64(flat.numel()),
                num_classes, _i64(ignore_index), _ptr(out, 8), SMS) == 0
        return out

    def prepare_counts(hist, counts, class_weight, count_mode, momentum,
                       smoothing, tau, weight_power, max_weight_ratio, update,
                       avg_non_ignore, ranks):
        out = torch.empty(2 * counts.numel() + 1)
        assert lib.emu_prepare_counts(
            _ptr(hist), _ptr(counts), _ptr(class_weight), counts.numel(),
            COUNT_MODES.index(count_mode), ctypes.c_double(momentum),
            ctypes.c_double(smoothing), ctypes.c_double(tau),
            ctypes.c_double(weight_power), ctypes.c_double(max_weight_ratio),
            int(update), int(avg_non_ignore), ranks, _ptr(out)) == 0
        return out

    def arb_loss_forward(logits, label, shift, class_weight, weight,
                         ignore_index, reduction, loss_weight,
                         avg_non_ignore, denominator=None):
        N, C = logits.shape[:2]
        S = label.numel() // N
        out = torch.empty(label.shape if reduction == 'none' else ())
        stats = torch.empty((2, ) + tuple(label.shape))
        partials = torch.empty(
            2 * lib.emu_loss_reduce_blocks(_i64(N * S), SMS))
        scale = torch.empty(1)
        assert lib.emu_arb_loss_forward_given(
            _ptr(logits), FLOAT_TYPES[logits.dtype], _ptr(label),
            LABEL_TYPES[label.dtype], _ptr(shift), _ptr(class_weight),
            _ptr(weight), _i64(N), C, _i64(S), _i64(ignore_index),
            REDUCTIONS[reduction], ctypes.c_float(loss_weight),
            int(avg_non_ignore), _ptr(denominator), _ptr(out), _ptr(stats),
            _ptr(partials), _ptr(scale), SMS) == 0
        return out, stats, scale

    def arb_loss_backward(grad_loss, logits, label, shift, class_weight,
                          weight, softmax_stats, scale, ignore_index):
        N, C = logits.shape[:2]
        S = label.numel() // N
        scalar = grad_loss.numel() == 1
        g = grad_loss.reshape(-1)[:1] if scalar else grad_loss
        g = g.float().contiguous()
        grad = torch.empty_like(logits)
        assert lib.emu_arb_loss_backward(
            _ptr(logits), FLOAT_TYPES[logits.dtype], _ptr(label),
            LABEL_TYPES[label.dtype], _ptr(shift), _ptr(class_weight),
            _ptr(weight), _ptr(softmax_stats), _ptr(g), int(scalar),
            _ptr(scale), _i64(N), C, _i64(S), _i64(ignore_index),
            _ptr(grad), SMS) == 0
        return grad

    impl = torch.library.Library('mmseg_arb', 'IMPL')
    for fn in (class_histogram, prepare_counts, arb_loss_forward,
               arb_loss_backward):
        impl.impl(fn.__name__, fn, 'CPU')
    impl.keep_alive = lib
    cuda_ext.cuda_ops_apply = lambda tensor: True
    return impl
