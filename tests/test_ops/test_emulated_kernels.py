"""Every ``__global__`` of ``arb_kernels.cu`` run on the host, through the
launch wrappers the extension calls, against the PyTorch path.

``csrc/emulated_kernels.cpp`` compiles the unchanged kernel file on the host
with ``csrc/cuda_emulator.h`` (one host thread per CUDA thread; between two
barriers the warps of a block take turns in an order that turns a missing
``__syncthreads`` into a wrong result; the lanes of a warp run together and
meet at each shuffle and match, as converged lanes do; shared memory,
atomics; an undefined use of a warp intrinsic fails the launch), so each
kernel runs at its real launch geometry: the grids the wrappers choose, 256
threads, the shared memory of the count plan, vector and scalar paths.
What is left for a GPU are the intrinsics' own rounding, the hardware's
own scheduling and the runtime. ``test_emulator_mutations.py`` shows that
these tests catch a missing barrier, a half-warp reduction and a missing
warp-aggregation leader.
"""
import ctypes
import math
import os
import os.path as osp
import shutil

import pytest
import torch
import torch.nn.functional as F
from emulator_build import build_emulator

import mmseg_arb.ops
from mmseg_arb.counting.prepare import COUNT_MODES, prepare_counts
from mmseg_arb.models.losses.arb_loss import _shifted_loss
from mmseg_arb.ops.class_count import class_histogram_pytorch

CSRC = osp.join(osp.dirname(mmseg_arb.ops.__file__), 'csrc')
SMS = 2  # a small device: grids stay small, loops stride
BLOCKS_PER_SM = 3  # what the emulated occupancy API answers
THREADS = 256

LABEL_TYPES = {torch.int64: 0, torch.int32: 1, torch.uint8: 2}
FLOAT_TYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
REDUCTIONS = {'none': 0, 'sum': 1, 'mean': 2}

pytestmark = [
    pytest.mark.slow,  # see tests/conftest.py
    pytest.mark.skipif(
        shutil.which('nvcc') is None, reason='nvcc not on PATH')
]


@pytest.fixture(scope='module')
def emu():
    # EMULATED_KERNELS_CSRC: another copy of the kernel sources, such as
    # the mutants of test_emulator_mutations.py.
    lib = ctypes.CDLL(
        build_emulator(os.environ.get('EMULATED_KERNELS_CSRC', CSRC)))
    lib.emu_configure(BLOCKS_PER_SM, 0)
    return lib


def ptr(tensor):
    return ctypes.c_void_p(tensor.data_ptr() if tensor is not None else None)


def i64(value):
    return ctypes.c_int64(value)


def launches(lib, since=0):
    out = []
    for i in range(since, lib.emu_launch_count()):
        grid, threads = ctypes.c_uint(), ctypes.c_uint()
        shared = ctypes.c_ulonglong()
        lib.emu_launch_at(i, ctypes.byref(grid), ctypes.byref(threads),
                          ctypes.byref(shared))
        out.append((grid.value, threads.value, shared.value))
    return out


def loss_grid(groups, blocks_per_sm=BLOCKS_PER_SM):
    return max(1, min(math.ceil(groups / THREADS), SMS * blocks_per_sm))


# ------------------------------------------------------------------ count


@pytest.mark.parametrize('dtype', list(LABEL_TYPES))
@pytest.mark.parametrize('num_classes', [1, 19, 150, 20000])
@pytest.mark.parametrize('n,offset', [(1, 0), (1000, 1), (70001, 3)])
def test_count_kernel(emu, dtype, num_classes, n, offset):
    gen = torch.Generator().manual_seed(n + num_classes)
    high = min(num_classes + 3, 250 if dtype == torch.uint8 else 10**6)
    full = torch.randint(0, high, (n + offset, ), generator=gen).to(dtype)
    full[::7] = 255
    if dtype != torch.uint8:
        full[5::97] = -4
    label = full[offset:]  # misaligned: a scalar head before the vectors
    out = torch.zeros(num_classes + 3, dtype=torch.int64)
    before = emu.emu_launch_count()
    assert emu.emu_count_classes(
        ptr(label), LABEL_TYPES[dtype], i64(n), num_classes, i64(255),
        ptr(out), SMS) == 0
    want = class_histogram_pytorch(label, num_classes, 255)
    assert torch.equal(out, want[1:])  # the kernel's: after the pixel total
    (grid, threads, shared), = launches(emu, before)
    per_block = THREADS * 16 // label.element_size()
    assert grid == min(math.ceil(n / per_block), SMS * 4)
    assert threads == THREADS
    bins = (num_classes + 1) * 4
    replicas = min(48 * 1024 // bins, THREADS // 32)
    assert shared == replicas * bins  # 0: global atomics


# ---------------------------------------------------------------- prepare


@pytest.mark.parametrize('mode', COUNT_MODES)
@pytest.mark.parametrize('update', [True, False])
@pytest.mark.parametrize('state', ['empty', 'running'])
@pytest.mark.parametrize(
    'tau,smoothing,power,ratio',
    [
        (1.0, 0.0, 0.0, 100.0),
        (0.5, 2.0, 0.5, 100.0),
        (0.0, 0.0, 1.0, 100.0),
        (1.0, 0.0, 2.0, 100.0),
        # A tiny power with the loosest bound: zero counts reach the cap.
        (1.0, 0.0, 0.005, 1e30)
    ])
def test_prepare_kernel(emu, mode, update, state, tau, smoothing, power,
                        ratio):
    C = 300  # more classes than threads: the loops stride
    gen = torch.Generator().manual_seed(C)
    hist = torch.randint(0, 50, (C + 4, ), generator=gen)
    hist[1::5] = 0
    hist[C + 1:] = torch.tensor([4, 300, 9])
    hist[0] = hist[1:C + 2].sum() + 77  # the pixels: 77 of them ignored
    # Static class weights, avg_non_ignore and ranks summed, varied with
    # the cases.
    class_weight = torch.rand(C, generator=gen) + 0.5 if update else None
    avg_non_ignore = state == 'running'
    ranks = 3 if mode in ('ema', 'prior') else 1
    counts = torch.zeros(C, dtype=torch.float64)
    if state == 'running' or mode == 'prior':
        counts = torch.rand(C, generator=gen, dtype=torch.float64) * 1e4
        counts[3] = 0
    kernel_counts = counts.clone()
    out = torch.empty(2 * C + 1, dtype=torch.float32)
    before = emu.emu_launch_count()
    assert emu.emu_prepare_counts(
        ptr(hist), ptr(kernel_counts), ptr(class_weight), C,
        COUNT_MODES.index(mode), ctypes.c_double(0.1),
        ctypes.c_double(smoothing), ctypes.c_double(tau),
        ctypes.c_double(power), ctypes.c_double(ratio), int(update),
        int(avg_non_ignore), ranks, ptr(out)) == 0
    want = prepare_counts(hist, counts, mode, 0.1, smoothing, tau, power,
                          ratio, update, class_weight, avg_non_ignore, ranks)
    if mode == 'ema' and update:  # (1 - m) n + m b: fused or not, 1 ulp
        torch.testing.assert_close(kernel_counts, counts, rtol=1e-15, atol=0)
    else:
        assert torch.equal(kernel_counts, counts)
    # Shifts and weights: float32 of the same double arithmetic (sums in
    # another order: 1 ulp at most).
    torch.testing.assert_close(out, want, rtol=2.4e-7, atol=0)
    assert torch.isfinite(out).all()
    weight, labelled = out[C:2 * C].double(), hist[1:C + 1].double()
    if class_weight is not None:  # the count-driven part
        weight = weight / class_weight.double()
    if power:
        assert weight.max() / weight.min() <= ratio * (1 + 1e-6)
        assert abs((weight * labelled).sum() / labelled.sum() - 1) < 1e-6
    # mmseg's denominator of the pixels counted, shared among the ranks.
    unlabelled = 0 if avg_non_ignore else 77 + 4
    denominator = ((out[C:2 * C].double() * labelled).sum() + unlabelled) \
        / ranks
    torch.testing.assert_close(
        out[2 * C].double(), denominator, rtol=1e-6, atol=0)
    assert launches(emu, before) == [(1, THREADS, 0)]


# ------------------------------------------------------------------- loss


def loss_inputs(N, C, S, dtype, label_dtype, scale, misalign, seed):
    gen = torch.Generator().manual_seed(seed)
    storage = (torch.randn(N * C * S + 8, generator=gen) * scale).to(dtype)
    logits = storage[misalign:misalign + N * C * S].view(N, C, S)
    label = torch.randint(0, C, (N, S), generator=gen)
    label[:, ::5] = 255
    label = label.to(label_dtype)
    counts = torch.randint(1, 10**5, (C, ), generator=gen).double()
    counts[C // 2] = 0  # an absent class drops out
    label[label == C // 2] = 255
    shift = torch.where(counts > 0, counts.log(),
                        torch.full_like(counts, -1e30)).float()
    return logits, label, shift


def run_forward(lib, logits, label, shift, class_weight, weight, reduction,
                loss_weight, avg_non_ignore):
    N, C = logits.shape[:2]
    S = label[0].numel()
    out = torch.empty(
        label.shape if reduction == 'none' else (), dtype=torch.float32)
    stats = torch.empty((2, ) + tuple(label.shape), dtype=torch.float32)
    partials = torch.empty(2 * lib.emu_loss_reduce_blocks(i64(N * S), SMS))
    scale = torch.empty(1)
    assert lib.emu_arb_loss_forward(
        ptr(logits), FLOAT_TYPES[logits.dtype], ptr(label),
        LABEL_TYPES[label.dtype], ptr(shift), ptr(class_weight), ptr(weight),
        i64(N), C, i64(S), i64(255), REDUCTIONS[reduction],
        ctypes.c_float(loss_weight), int(avg_non_ignore), ptr(out), ptr(stats),
        ptr(partials), ptr(scale), SMS) == 0
    return out, stats, scale


def run_backward(lib, grad_out, logits, label, shift, class_weight, weight,
                 stats, scale):
    N, C = logits.shape[:2]
    S = label[0].numel()
    scalar = grad_out.numel() == 1
    grad_out = grad_out.float().contiguous()
    grad = torch.full_like(logits, float('nan'))
    assert lib.emu_arb_loss_backward(
        ptr(logits), FLOAT_TYPES[logits.dtype], ptr(label),
        LABEL_TYPES[label.dtype], ptr(shift), ptr(class_weight), ptr(weight),
        ptr(stats), ptr(grad_out), int(scalar), ptr(scale), i64(N), C, i64(S),
        i64(255), ptr(grad), SMS) == 0
    return grad


def pytorch_path(logits, label, shift, class_weight, weight, reduction,
                 loss_weight, avg_non_ignore, grad_out):
    z = logits.detach().float().requires_grad_()
    loss = _shifted_loss(z, label, shift, weight, class_weight, reduction,
                         None, 255, avg_non_ignore, loss_weight)
    loss.backward(grad_out)
    return loss.detach(), z.grad


@pytest.mark.parametrize('dtype', list(FLOAT_TYPES))
@pytest.mark.parametrize('label_dtype', list(LABEL_TYPES))
@pytest.mark.parametrize('shape', ['vector', 'odd', 'misaligned'])
@pytest.mark.parametrize('reduction', list(REDUCTIONS))
def test_loss_kernels(emu, dtype, label_dtype, shape, reduction):
    wide = 16 // torch.tensor([], dtype=dtype).element_size()
    N, C = 2, 7
    S = {
        'vector': 40 * wide,
        'odd': 40 * wide + 3,
        'misaligned': 40 * wide
    }[shape]
    logits, label, shift = loss_inputs(
        N,
        C,
        S,
        dtype,
        label_dtype,
        3.0,
        1 if shape == 'misaligned' else 0,
        seed=S + C)
    gen = torch.Generator().manual_seed(1)
    class_weight = torch.rand(C, generator=gen) + 0.5
    weight = torch.rand(N, S, generator=gen)
    loss_weight = 0.7
    for cw, w, non_ignore in [(None, None, False),
                              (class_weight, weight, True),
                              (class_weight, None, False)]:
        before = emu.emu_launch_count()
        out, stats, scale = run_forward(emu, logits, label, shift, cw, w,
                                        reduction, loss_weight, non_ignore)
        grad_out = torch.rand(label.shape, generator=gen) \
            if reduction == 'none' else torch.tensor(1.3)
        grad = run_backward(emu, grad_out, logits, label, shift, cw, w, stats,
                            scale)
        want, want_grad = pytorch_path(logits, label, shift, cw, w, reduction,
                                       loss_weight, non_ignore, grad_out)
        torch.testing.assert_close(out, want, rtol=2e-5, atol=2e-6)
        torch.testing.assert_close(
            grad.float(),
            want_grad.to(dtype).float(),
            rtol=2e-2 if dtype != torch.float32 else 2e-5,
            atol=1e-6)
        V = wide if shape == 'vector' else 1
        grid = loss_grid(N * S // V)
        geometry = [(grid, THREADS, 0)]
        if reduction != 'none':
            geometry.append((1, THREADS, 0))  # the reduction's one block
        geometry.append((grid, THREADS, 0))  # backward
        assert launches(emu, before) == geometry


@pytest.mark.parametrize('dtype', list(FLOAT_TYPES))
@pytest.mark.parametrize('S', [64 * 64, 64 * 64 + 1])
def test_grids_stay_within_the_partials_on_a_device_that_holds_more(
        emu, dtype, S):
    # Occupancy is looked up per device: on another device that holds 8
    # blocks per SM the grid grows, and must still fit the partials buffer
    # that loss_reduce_blocks sized (it is filled with NaN around).
    emu.emu_configure(8, 1)
    try:
        N, C = 2, 5
        logits, label, shift = loss_inputs(
            N, C, S, dtype, torch.int64, 1.0, 0, seed=S)
        blocks = emu.emu_loss_reduce_blocks(i64(N * S), SMS)
        partials = torch.full((2 * blocks + 64, ), float('nan'))
        out, stats, scale = torch.empty(()), torch.empty(2, N, S), \
            torch.empty(1)
        assert emu.emu_arb_loss_forward(
            ptr(logits), FLOAT_TYPES[dtype], ptr(label), 0, ptr(shift), None,
            None, i64(N), C, i64(S), i64(255), REDUCTIONS['mean'],
            ctypes.c_float(1.0), 0, ptr(out), ptr(stats), ptr(partials),
            ptr(scale), SMS) == 0
        (grid, _, _), _ = launches(emu)
        assert grid <= blocks
        assert grid == loss_grid(
            N * S // (16 // logits.element_size() if S % 8 == 0 else 1), 8)
        assert torch.isnan(partials[2 * grid:]).all()
        want, _ = pytorch_path(logits, label, shift, None, None, 'mean', 1.0,
                               False, torch.tensor(1.0))
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    finally:
        emu.emu_configure(BLOCKS_PER_SM, 0)


def test_a_large_grid_strides(emu):
    # More pixel groups than resident threads: each thread loops.
    N, C, S = 3, 5, 4 * 1000
    logits, label, shift = loss_inputs(
        N, C, S, torch.float32, torch.int64, 2.0, 0, seed=5)
    out, stats, scale = run_forward(emu, logits, label, shift, None, None,
                                    'mean', 1.0, False)
    grad = run_backward(emu, torch.tensor(1.0), logits, label, shift, None,
                        None, stats, scale)
    want, want_grad = pytorch_path(logits, label, shift, None, None, 'mean',
                                   1.0, False, torch.tensor(1.0))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-9)


def float64_ce(logits, label, shift):
    x = logits.double() + shift.double()[None, :, None]
    logp = torch.log_softmax(x, dim=1)
    valid = label != 255
    target = torch.where(valid, label.long(), 0)
    loss = -logp.gather(1, target[:, None])[:, 0] * valid
    grad = (logp.exp() - F.one_hot(target, x.shape[1]).permute(0, 2, 1)) \
        * valid[:, None]
    return loss, grad


@pytest.mark.parametrize('scale', [1.0, 20.0, 100.0])
@pytest.mark.parametrize('dtype', list(FLOAT_TYPES))
def test_loss_is_as_exact_as_float32_cross_entropy(emu, scale, dtype):
    """Against float64: within 3x (+1e-6) of the error of fp32
    cross-entropy computed the PyTorch way, in the same run; never < 0."""
    N, C, S = 2, 19, 4096
    logits, label, shift = loss_inputs(
        N, C, S, dtype, torch.int64, scale, 0, seed=int(scale))
    out, stats, scale_out = run_forward(emu, logits, label, shift, None, None,
                                        'none', 1.0, False)
    ones = torch.ones(label.shape)
    grad = run_backward(emu, ones, logits, label, shift, None, None, stats,
                        scale_out)
    truth, truth_grad = float64_ce(logits, label, shift)
    # fp32 cross-entropy as PyTorch computes it, on the same logits.
    z = logits.float().requires_grad_()
    fp32 = F.cross_entropy(
        z + shift[None, :, None],
        label.long(),
        ignore_index=255,
        reduction='none')
    fp32.backward(ones)
    fp32_grad = z.grad.to(dtype).double()
    assert (out >= 0).all()
    loss_err = (out.double() - truth).abs().max().item()
    fp32_err = (fp32.detach().double() - truth).abs().max().item()
    grad_err = (grad.double() - truth_grad).abs().max().item()
    fp32_grad_err = (fp32_grad - truth_grad).abs().max().item()
    assert loss_err <= 3 * fp32_err + 1e-6, (loss_err, fp32_err)
    assert grad_err <= 3 * fp32_grad_err + 1e-6, (grad_err, fp32_grad_err)
