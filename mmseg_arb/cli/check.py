"""``mmseg-arb check``: the kernels of this machine against the PyTorch path,
float64 and fp32 cross-entropy, one PASS / FAIL line per check.

A user runs it once on a new machine (as ``python -m bitsandbytes`` or
``python -m xformers.info``): on each visible GPU, whether the extension
loads (and why not), the device's compute capability, the fused loss and
the count and prepare kernels on probes that reach their corner cases, a
tensor past 2^31 elements where memory allows, and the time and peak
memory of a training call against mmseg's ``CrossEntropyLoss``. Without a
GPU the PyTorch path, which CPUs and GPUs without the kernels run, is
checked against the same references. :func:`run_checks` yields one
:class:`~mmseg_arb.ops.self_check.Result` per check.

What runs on this machine is decided here, above the counting (the prepare
kernel's PyTorch twin) and mmseg (the speed's baseline), which the checks
reach; how a result is compared with its reference, and the tolerance, is
:mod:`mmseg_arb.ops.self_check`, which the fused loss's first-use guard
shares.
"""
import argparse
import time
from typing import Callable, Iterator, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..counting import COUNT_MODES, prepare_counts
from ..ops import cuda_ext
from ..ops.class_count import class_histogram_pytorch
from ..ops.fused_arb_loss import FUSED_DTYPES, fused_arb_loss
from ..ops.self_check import (Result, check_histogram, check_loss, fused_loss,
                              pytorch_path_loss)
from .command import Command

LOGIT_SCALES = (1.0, 100.0, 1e4)


def check_prepare(device: torch.device) -> Result:
    """The prepare kernel against its PyTorch twin on CPU, in every count
    mode, training step or not. Tolerance: float32 of the same float64
    arithmetic, summed in another order and with the device's log: 1e-6
    relative (8 float32 ulps)."""
    C = 300  # more classes than a block's threads: the loops stride
    gen = torch.Generator().manual_seed(C)
    hist = torch.randint(0, 50, (C + 4, ), generator=gen)
    hist[1::5] = 0
    hist[C + 1:] = torch.tensor([4, 300, 9])
    hist[0] = hist[1:C + 2].sum() + 77  # the pixels: 77 ignored
    weight = torch.rand(C, generator=gen) + 0.5
    problems, cases = [], 0
    for mode in COUNT_MODES:
        for update in (True, False):
            for tau, smoothing, power in ((1.0, 0.0, 0.0), (0.5, 2.0, 0.5),
                                          (0.0, 0.0, 1.0)):
                cases += 1
                counts = torch.rand(
                    C, generator=gen, dtype=torch.float64) * 1e4
                counts[3] = 0
                # Static class weights, avg_non_ignore and summed ranks,
                # varied with the cases.
                args = (weight if update else None, power == 0.5,
                        1 + cases % 3)
                want_counts = counts.clone()
                want = prepare_counts(hist, want_counts, mode, 0.1, smoothing,
                                      tau, power, 100.0, update, *args)
                got_counts = counts.to(device)
                got = torch.ops.mmseg_arb.prepare_counts(
                    hist.to(device), got_counts,
                    None if args[0] is None else args[0].to(device), mode, 0.1,
                    smoothing, tau, power, 100.0, update, args[1],
                    args[2]).cpu()
                ok = torch.allclose(got, want, rtol=1e-6, atol=0) and \
                    torch.allclose(got_counts.cpu(), want_counts,
                                   rtol=1e-12, atol=0)
                if not ok:
                    problems.append(f'{mode}, update={update}, tau={tau}, '
                                    f'weight_power={power}')
    detail = f'{cases} probes (every count mode) within 1e-6 of PyTorch'
    if problems:
        detail = f'{len(problems)} of {cases} off: {problems[0]}'
    return Result('prepare kernel', not problems, detail)


def check_past_2_31(device: torch.device,
                    big: int = 2**31 + 2**20 + 3,
                    C: int = 65536,
                    S: int = 32771) -> Result:
    """Count and loss kernels on tensors of more than 2^31 elements (64-bit
    indexing), checked where the answer is known: ``big`` labels of known
    counts, and fp16 ``(1, C, S)`` logits (``C * S > 2^31``: the last
    pixels' logits of the high classes lie past 2^31 elements), a few
    pixels against float64. (The tests run it small, on the emulator.)
    """
    label = torch.zeros(big, dtype=torch.uint8, device=device)
    label[-7:] = torch.tensor([1, 2, 2, 255, 40, 3, 1], dtype=torch.uint8)
    hist = torch.ops.mmseg_arb.class_histogram(label, 19, 255).cpu()
    del label
    want = torch.zeros(23, dtype=torch.int64)
    want[:5] = torch.tensor([big, big - 7, 2, 2, 1])
    want[20:22] = torch.tensor([1, 40])
    problems = [] if torch.equal(hist, want) else \
        [f'count of {big} labels: {hist.tolist()} != {want.tolist()}']
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn((1, C, S),
                         generator=gen,
                         device=device,
                         dtype=torch.float16)
    label = torch.full((1, S), C - 1, dtype=torch.int64, device=device)
    label[0, :3] = torch.tensor([0, C // 2, 255])
    shift = torch.zeros(C, device=device)
    z = logits.requires_grad_()
    loss = fused_arb_loss(z, label, shift, reduction='none')
    loss.backward(torch.ones_like(loss))
    pixels = [0, 1, 2, S - 2, S - 1]
    x = logits.detach()[0, :, pixels].double()
    logp = torch.log_softmax(x, dim=0)
    target = label[0, pixels]
    valid = target != 255
    onehot = F.one_hot(torch.where(valid, target, 0), C).T.double()
    truth = torch.where(
        valid, -logp.gather(0,
                            torch.where(valid, target, 0)[None])[0], 0)
    truth_grad = (logp.exp() - onehot) * valid
    loss_err = (loss[0, pixels].double() - truth).abs().max().item()
    grad_err = (z.grad[0, :, pixels].double() - truth_grad).abs()
    # The loss (about 11 at C = 65536) is float32 arithmetic on C terms:
    # 1e-4 is 100 ulps. The gradient is rounded to fp16: half an ulp, 2^-11
    # relative, or 2^-25 where it is subnormal (below 6e-5, as most of
    # these 1/C-sized ones are); twice that is allowed.
    grad_ok = (grad_err <= truth_grad.abs() * 2**-10 + 2**-24).all().item()
    if not loss_err <= 1e-4 or not grad_ok:
        problems.append(f'loss of {C * S} logits: error {loss_err:.3g}, '
                        f'gradient {grad_err.max().item():.3g}')
    del logits, z, loss
    torch.cuda.empty_cache()  # 10 GiB the next checks do not need
    detail = (f'{big} labels counted, {C * S} fp16 logits through the '
              f'loss and its gradient')
    if problems:
        detail = '; '.join(problems)
    return Result('tensors past 2^31 elements', not problems, detail)


def _mmseg_cross_entropy() -> Tuple[Callable, str]:
    try:
        from mmseg.models.losses import CrossEntropyLoss
        return CrossEntropyLoss(), 'mmseg CrossEntropyLoss'
    except Exception:  # e.g. mmcv missing on a bare GPU machine
        return (lambda z, y, ignore_index=255: F.cross_entropy(
            z, y, ignore_index=ignore_index)), \
            'F.cross_entropy (mmseg does not import)'


def check_speed(device: torch.device, shape=(4, 150, 512, 512)) -> Result:
    """One training call (count, prepare, loss, backward) against mmseg's
    ``CrossEntropyLoss`` at the shape of mmseg's ADE20K configs per GPU
    (4 images, 150 classes, logits resized to 512 x 512): time and peak
    memory, each the best of 5 after a warm-up. Fails only on an error."""
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(shape, generator=gen, device=device)
    label = torch.randint(
        0, shape[1], (shape[0], ) + shape[2:], generator=gen, device=device)
    label[:, ::20] = 255
    counts = torch.zeros(shape[1], dtype=torch.float64, device=device)
    baseline, baseline_name = _mmseg_cross_entropy()

    def arb(z: Tensor) -> Tensor:
        hist = torch.ops.mmseg_arb.class_histogram(label, shape[1], 255)
        shift = torch.ops.mmseg_arb.prepare_counts(hist, counts, None, 'batch',
                                                   0.0, 0.0, 1.0, 0.0, 1000.0,
                                                   True, False, 1)[:shape[1]]
        return fused_arb_loss(z, label, shift)

    def ce(z: Tensor) -> Tensor:
        return baseline(z, label, ignore_index=255)

    figures = {}
    for name, fn in (('ARB', arb), ('CE', ce)):
        times = []
        for _ in range(6):
            z = logits.detach().requires_grad_()
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            fn(z).backward()
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
            peak = torch.cuda.max_memory_allocated(device) - before
            del z
        figures[name] = (min(times[1:]) * 1e3, peak / 2**20)
    (t, m), (t0, m0) = figures['ARB'], figures['CE']
    return Result(
        f'speed {"x".join(map(str, shape))} fp32', True,
        f'fwd+bwd {t:.2f} ms, peak {m:.0f} MiB; {baseline_name} '
        f'{t0:.2f} ms, {m0:.0f} MiB ({t / t0:.2f}x time, {m / m0:.2f}x '
        f'memory)')


def _safely(name: str, check: Callable[[], Result]) -> Result:
    try:
        return check()
    except Exception as e:  # a check that raises has failed
        return Result(
            name, False, f'{type(e).__name__}: '
            f'{str(e).splitlines()[0] if str(e) else ""}')


def kernel_checks(device: torch.device, name: str) -> Iterator[Result]:
    """The count, prepare and fused-loss kernels on ``device`` (the
    operators' kernels for its type: CUDA, or the host emulator's in the
    tests) against their references."""
    yield _safely(
        f'{name} count kernel',
        lambda: check_histogram(device, f'{name} count kernel', torch.ops.
                                mmseg_arb.class_histogram))
    yield _safely(
        f'{name} prepare kernel',
        lambda: check_prepare(device)._replace(name=f'{name} prepare kernel'))
    for dtype in FUSED_DTYPES:
        for scale in LOGIT_SCALES:
            yield _safely(
                f'{name} fused loss', lambda: check_loss(
                    device, dtype, scale, f'{name} fused loss', fused_loss))


def pytorch_path_checks(device: torch.device,
                        name: str,
                        scales=LOGIT_SCALES) -> Iterator[Result]:
    """The PyTorch path on ``device``: the per-pixel loss and gradient of
    every dtype (the reductions around it are plain sums)."""
    for dtype in FUSED_DTYPES:
        for scale in scales:
            yield _safely(
                f'{name} PyTorch path', lambda: check_loss(
                    device,
                    dtype,
                    scale,
                    f'{name} PyTorch path',
                    lambda p, z, r: pytorch_path_loss(p, z),
                    reductions=('none', )))


def gpu_checks(index: int) -> Iterator[Result]:
    """The checks of CUDA device ``index``. A GPU older than the kernels
    support, or kernels switched off with ``MMSEG_ARB_CUDA=0``, is no
    failure (the PyTorch path serves it, and is checked); kernels that do
    not load on a GPU they support are."""
    device = torch.device('cuda', index)
    capability = torch.cuda.get_device_capability(index)
    name = f'cuda:{index}'
    supported = capability >= cuda_ext.MIN_ARCH
    yield Result(
        f'{name} capability', True,
        f'{torch.cuda.get_device_name(index)}, compute capability '
        f'{capability[0]}.{capability[1]}' +
        ('' if supported else ': the kernels need 7.0 (Volta) or newer; '
         'ARB-Loss uses the PyTorch path on it'))
    loaded = supported and cuda_ext.load_cuda_ops()
    if supported:
        status = cuda_ext.cuda_ops_status()
        yield Result(
            f'{name} extension', loaded or status.startswith('disabled by'),
            status + ('' if loaded else '; ARB-Loss uses the '
                      'PyTorch path (correct, slower)'))
    if loaded:
        yield from kernel_checks(device, name)
    # The path the loss takes where the kernels do not serve.
    yield from pytorch_path_checks(device, name, scales=(100.0, ))
    if not loaded:
        return
    free, _ = torch.cuda.mem_get_info(index)
    # 2 GiB of labels, then 4 GiB of fp16 logits and 4 of gradient.
    if free > 12 * 2**30:
        yield _safely(
            f'{name} tensors past 2^31 elements', lambda: check_past_2_31(
                device)._replace(name=f'{name} tensors past 2^31 elements'))
    else:
        yield Result(f'{name} tensors past 2^31 elements', True,
                     f'not run: {free / 2**30:.1f} GiB free, 12 needed')
    yield _safely(f'{name} speed',
                  lambda: check_speed(device)._replace(name=f'{name} speed'))


def cpu_checks() -> Iterator[Result]:
    """The PyTorch path on CPU against float64 and fp32 cross-entropy, and
    its counting against ``torch.bincount``."""
    cpu = torch.device('cpu')
    yield from pytorch_path_checks(cpu, 'cpu')
    yield _safely(
        'cpu counting',
        lambda: check_histogram(cpu, 'cpu counting', class_histogram_pytorch))


def machine() -> str:
    """One line on what is checked: torch, its CUDA, the GPUs, or plainly
    that there is none."""
    line = f'torch {torch.__version__}, CUDA {torch.version.cuda}'
    if torch.cuda.is_available():
        return f'{line}, {torch.cuda.device_count()} GPU(s) visible'
    why = 'torch is a CPU build' if torch.version.cuda is None else \
        'torch sees no CUDA device'
    return (f'{line}: no GPU found ({why}); checking the PyTorch path on '
            f'CPU (the CUDA kernels need a GPU)')


def run_checks() -> Iterator[Result]:
    """Every check of this machine, one :class:`Result` each: those of each
    visible GPU, else those of the CPU path."""
    if not torch.cuda.is_available():
        yield from cpu_checks()
        return
    for index in range(torch.cuda.device_count()):
        yield from gpu_checks(index)


def run_check(args: argparse.Namespace, argv: List[str]) -> int:
    print(machine(), flush=True)
    failed = 0
    for result in run_checks():
        print(result.line(), flush=True)
        failed += not result.passed
    print(f'{failed} check(s) failed' if failed else 'all checks passed')
    return 1 if failed else 0


COMMAND = Command(
    'check', 'check the CUDA kernels (or, without a GPU, the '
    'PyTorch path) of this machine against float64 and fp32 '
    'cross-entropy', lambda parser: None, run_check)
