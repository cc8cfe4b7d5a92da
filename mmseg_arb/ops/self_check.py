"""The checks of ``mmseg-arb check``: this machine's kernels against the
PyTorch path, float64 and fp32 cross-entropy.

A user runs them once on a new machine (as ``python -m bitsandbytes`` or
``python -m xformers.info``): on each visible GPU, whether the extension
loads (and why not), the device's compute capability, the fused loss and
the count and prepare kernels on probes that reach their corner cases, a
tensor past 2^31 elements where memory allows, and the time and peak
memory of a training call against mmseg's ``CrossEntropyLoss``. Without a
GPU the PyTorch path, which CPUs and GPUs without the kernels run, is
checked against the same references. :func:`run_checks` yields one
:class:`Result` per check.

Tolerances. Float64 of the same formula is the truth. fp32 cross-entropy
computed the PyTorch way (``F.cross_entropy`` on the shifted fp32 logits),
in the same run on the same rounded inputs, is the yardstick: its error is
what every mmseg run accepts, and it scales by itself with the logits'
magnitude (at logits of 1e4 the float32 spacing is 1e-3) and with the
dtype the gradient is rounded to. A result passes when its largest error
is at most ``ERROR_RATIO`` times the yardstick's plus ``FLOOR`` times the
largest magnitude of the truth (see :func:`within`).
"""
import math
import time
from typing import Callable, Iterator, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cuda_ext
from .class_count import class_histogram_pytorch
from .fused_arb_loss import FUSED_DTYPES, fused_arb_loss
from .shifted_cross_entropy import shifted_cross_entropy

# A kernel's error may be this many times fp32 cross-entropy's: the kernels
# sum in another order and use the hardware's exp2f (2 ulp), so they match
# the yardstick's accuracy, not its bits; a wrong result (a lost term, a
# wrong index, a half-precision accumulator) is off by orders more.
ERROR_RATIO = 3.0
# ... plus this much relative to the truth's largest magnitude, for
# results where fp32 cross-entropy happens to be exact: a few float32 ulps
# (float32's epsilon is 1.2e-7).
FLOOR = 1e-6
LOGIT_SCALES = (1.0, 100.0, 1e4)
# The probes' shapes: 16-byte vector loads (a multiple of 8 pixels), one
# pixel a thread (odd), and (N, C) logits.
PROBE_SHAPES = {
    'vector': (2, 19, 32, 16),
    'odd': (2, 19, 33, 17),
    '(N, C)': (300, 19)
}
LOSS_WEIGHT = 0.7


class Result(NamedTuple):
    """One check: its name, whether it passed, and what was measured."""
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f'{"PASS" if self.passed else "FAIL"}  {self.name}: ' \
            f'{self.detail}'


def within(got: Tensor, truth: Tensor,
           yardstick: Tensor) -> Tuple[bool, float, float]:
    """Whether ``got`` is as close to ``truth`` as ``yardstick`` is.

    ``max|got - truth| <= ERROR_RATIO * max|yardstick - truth| + FLOOR *
    max|truth|``, in float64; a NaN or infinity in ``got`` fails.

    Returns:
        tuple: ``(passed, error of got, error of the yardstick)``.
    """
    truth = truth.detach().double()
    err = (got.detach().double() - truth).abs().max().item() \
        if got.numel() else 0.0
    ref = (yardstick.detach().double() - truth).abs().max().item() \
        if got.numel() else 0.0
    scale = truth.abs().max().item() if truth.numel() else 0.0
    ok = math.isfinite(err) and err <= ERROR_RATIO * ref + FLOOR * scale
    return ok, err, ref


class LossProbe(NamedTuple):
    """Inputs of one loss probe (on the device under test)."""
    logits: Tensor
    label: Tensor
    shift: Tensor
    class_weight: Optional[Tensor]
    weight: Optional[Tensor]
    ignore_index: int
    avg_non_ignore: bool


def make_loss_probe(shape: Tuple[int, ...],
                    dtype: torch.dtype,
                    scale: float,
                    weighted: bool,
                    device: torch.device,
                    seed: int = 0) -> LossProbe:
    """Logits of ``shape`` and ``dtype`` at ``scale``, long-tailed counts
    with an absent class, ignored and bad labels; int64 labels and
    ``ignore_index`` 255 unweighted, uint8 labels and an ``ignore_index``
    they cannot hold (-1: 255 is then a bad label) weighted."""
    gen = torch.Generator().manual_seed(seed)
    N, C = shape[:2]
    logits = (torch.randn(shape, generator=gen) * scale).to(dtype)
    label = torch.randint(0, C, (N, ) + shape[2:], generator=gen)
    counts = torch.randint(1, 10**5, (C, ), generator=gen).double()
    absent = C // 2
    counts[absent] = 0  # drops out of the softmax: no label of it
    flat = label.view(-1)
    flat[flat == absent] = absent + 1
    flat[::7] = 255  # ignored, or bad for uint8 with ignore_index -1
    flat[3::11] = C + 5  # bad: loss 0, as ignored
    shift = torch.where(counts > 0, counts.log(),
                        torch.full_like(counts, -1e30)).float()
    class_weight = weight = None
    ignore_index = 255
    if weighted:
        label = label.to(torch.uint8)
        ignore_index = -1
        class_weight = torch.rand(C, generator=gen) + 0.5
        weight = torch.rand(label.shape, generator=gen)
    to = (lambda t: None if t is None else t.to(device))  # noqa: E731
    return LossProbe(
        to(logits), to(label), to(shift), to(class_weight), to(weight),
        ignore_index, weighted)


def reference_loss(probe: LossProbe, logits: Tensor, reduction: str,
                   dtype: torch.dtype) -> Tensor:
    """``F.cross_entropy`` of the shifted logits in ``dtype`` (float64: the
    truth; float32: the yardstick), with class and pixel weights, bad
    labels as ignored, mmseg's mean, times ``LOSS_WEIGHT``."""
    C = logits.shape[1]
    wide = probe.label.long()
    valid = (wide >= 0) & (wide < C) & (wide != probe.ignore_index)
    target = torch.where(valid, wide, -100)
    view = (1, C) + (1, ) * (logits.dim() - 2)
    x = logits.to(dtype) + probe.shift.to(dtype).view(view)
    class_weight = None if probe.class_weight is None else \
        probe.class_weight.to(dtype)
    loss = F.cross_entropy(
        x, target, weight=class_weight, ignore_index=-100, reduction='none')
    if probe.weight is not None:
        loss = loss * probe.weight.to(dtype)
    if reduction == 'sum':
        loss = loss.sum()
    elif reduction == 'mean':
        # mmseg: all pixels, or the labelled ones with avg_non_ignore,
        # each with its class weight.
        if not probe.avg_non_ignore:
            denominator = float(loss.numel())
        elif class_weight is None:
            denominator = valid.sum().to(dtype)
        else:
            denominator = torch.where(valid, class_weight[wide.clamp(0,
                                                                     C - 1)],
                                      0).sum()
        loss = loss.sum() / denominator
    return loss * LOSS_WEIGHT


def pytorch_path_loss(probe: LossProbe, logits: Tensor) -> Tensor:
    """Per pixel, the PyTorch path's loss (what CPUs, and GPUs without the
    kernels, compute) times ``LOSS_WEIGHT``."""
    loss = shifted_cross_entropy(logits, probe.label, probe.shift,
                                 probe.class_weight, probe.ignore_index)
    if probe.weight is not None:
        loss = loss * probe.weight
    return loss * LOSS_WEIGHT


def fused_loss(probe: LossProbe, logits: Tensor, reduction: str) -> Tensor:
    """The fused kernels' loss of ``probe``."""
    return fused_arb_loss(
        logits,
        probe.label,
        probe.shift,
        class_weight=probe.class_weight,
        weight=probe.weight,
        ignore_index=probe.ignore_index,
        reduction=reduction,
        loss_weight=LOSS_WEIGHT,
        avg_non_ignore=probe.avg_non_ignore)


LossFn = Callable[[LossProbe, Tensor, str], Tensor]


def loss_and_grad(
        fn: Callable[[Tensor], Tensor],
        logits: Tensor,
        grad_out: Tensor,
        dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
    """``fn(z)`` and ``d(fn(z) * grad_out)/dz`` at ``z = logits``, ``z`` (and
    so the gradient) in ``dtype`` (default: the logits')."""
    z = logits.detach().to(dtype or logits.dtype, copy=True)
    z.requires_grad_()
    with torch.enable_grad():
        out = fn(z)
        out.backward(grad_out.to(out))
    return out.detach(), z.grad


class Comparison(NamedTuple):
    """A result against the truth, with the yardstick's error."""
    what: str
    passed: bool
    error: float
    yardstick: float
    bound: float


def compare_loss(probe: LossProbe, loss_fn: LossFn,
                 reduction: str) -> List[Comparison]:
    """``loss_fn``'s loss and gradient on ``probe`` against the float64
    truth, with fp32 cross-entropy as the yardstick (its gradient rounded
    to the logits' dtype, as the gradient under test is)."""
    logits = probe.logits
    gen = torch.Generator().manual_seed(1)
    shape = probe.label.shape if reduction == 'none' else ()
    grad_out = (torch.rand(shape, generator=gen) + 0.5).to(logits.device)
    got, got_grad = loss_and_grad(lambda z: loss_fn(probe, z, reduction),
                                  logits, grad_out)
    # The references start from the same rounded logits: float64 holds
    # every fp32/fp16/bf16 value exactly.
    truth, truth_grad = loss_and_grad(
        lambda z: reference_loss(probe, z, reduction, torch.float64), logits,
        grad_out, torch.float64)
    fp32, fp32_grad = loss_and_grad(
        lambda z: reference_loss(probe, z, reduction, torch.float32), logits,
        grad_out, torch.float32)
    comparisons = []
    for what, a, b, c in (('loss', got, truth, fp32),
                          ('gradient', got_grad, truth_grad,
                           fp32_grad.to(logits.dtype))):
        ok, err, ref = within(a, b, c)
        bound = ERROR_RATIO * ref + FLOOR * b.abs().max().item()
        comparisons.append(
            Comparison(f'{reduction} {what}', ok, err, ref, bound))
    return comparisons


def check_loss(device: torch.device,
               dtype: torch.dtype,
               scale: float,
               name: str,
               loss_fn: LossFn,
               reductions=('none', 'sum', 'mean')) -> Result:
    """``loss_fn`` on every probe shape, weighted and not, at ``dtype`` and
    ``scale``, against float64 and fp32 cross-entropy."""
    worst, failed, count = None, None, 0
    for seed, (shape_name, shape) in enumerate(PROBE_SHAPES.items()):
        for weighted in (False, True):
            probe = make_loss_probe(shape, dtype, scale, weighted, device,
                                    seed)
            for reduction in reductions:
                for c in compare_loss(probe, loss_fn, reduction):
                    count += 1
                    c = c._replace(what=f'{shape_name}, ' +
                                   ('weighted' if weighted else 'unweighted') +
                                   f', {c.what}')
                    if not c.passed and failed is None:
                        failed = c
                    if worst is None or c.error * worst.bound > \
                            worst.error * c.bound:
                        worst = c
    c = failed or worst
    detail = (f'{count} results of {len(PROBE_SHAPES) * 2} probes; '
              f'{"off" if failed else "worst"}: {c.what} error '
              f'{c.error:.2g}, fp32 CE\'s {c.yardstick:.2g}')
    if failed:
        detail += f' (bound {c.bound:.2g})'
    return Result(f'{name} {str(dtype)[6:]}, logits x{scale:g}', failed
                  is None, detail)


def bincount_histogram(label: Tensor, num_classes: int,
                       ignore_index: int) -> Tensor:
    """The histogram's reference, on CPU with ``torch.bincount``: the
    pixels, the class counts, the bad pixels and their extremes, from int64
    labels (so an ``ignore_index`` the label dtype cannot hold matches no
    label)."""
    wide = label.cpu().long().reshape(-1)
    ignored = wide == ignore_index
    valid = (wide >= 0) & (wide < num_classes) & ~ignored
    bad = ~valid & ~ignored
    counts = torch.bincount(wide[valid], minlength=num_classes)
    above = wide[bad & (wide >= num_classes)]
    below = wide[bad & (wide < 0)]
    extremes = torch.tensor([
        above.max().item() if above.numel() else 0,
        -max(below.min().item(), -2**63 + 1) if below.numel() else 0
    ])
    return torch.cat(
        [torch.tensor([wide.numel()]), counts,
         bad.sum()[None], extremes])


def count_probe_labels(dtype: torch.dtype,
                       num_classes: int,
                       seed: int = 0) -> Tensor:
    """Long-tailed labels with ignored and bad ones (above the range, and
    below zero where the dtype holds it)."""
    gen = torch.Generator().manual_seed(seed)
    probs = 1.0 / torch.arange(1, num_classes + 1, dtype=torch.float64)
    label = torch.multinomial(
        probs, 3 * 97 * 131, replacement=True, generator=gen)
    label[::10] = 255
    label[5::97] = num_classes + 3
    if dtype != torch.uint8:
        label[9::101] = -7
    return label.view(3, 97, 131).to(dtype)


HistogramFn = Callable[[Tensor, int, int], Tensor]


def check_histogram(device: torch.device, name: str,
                    histogram: HistogramFn) -> Result:
    """``histogram`` against :func:`bincount_histogram`: int64, int32 and
    uint8 labels, 19, 150 and 20000 classes (the kernel's shared-memory
    and global-atomics plans), bad labels, an ``ignore_index`` the label
    dtype cannot hold, contiguous and misaligned views."""
    problems, cases = [], 0
    for dtype in (torch.int64, torch.int32, torch.uint8):
        for num_classes in (19, 150, 20000):
            if dtype == torch.uint8 and num_classes > 255:
                continue
            label = count_probe_labels(dtype, num_classes, num_classes)
            label = label.to(device)
            for ignore_index in (255, -1):
                # A misaligned view: a scalar head and tail around the
                # kernel's 16-byte loads.
                for view_name, view in (('contiguous', label),
                                        ('misaligned', label.view(-1)[3:-5])):
                    cases += 1
                    got = histogram(view, num_classes, ignore_index).cpu()
                    want = bincount_histogram(view, num_classes, ignore_index)
                    if not torch.equal(got, want):
                        wrong = (got != want).nonzero()[:, 0].tolist() \
                            if got.shape == want.shape else 'shape'
                        problems.append(
                            f'{str(dtype)[6:]}, {num_classes} classes, '
                            f'ignore_index {ignore_index}, {view_name}: '
                            f'entries {wrong} differ')
    detail = (f'{cases} probes equal to torch.bincount (int64/int32/uint8; '
              f'19, 150, 20000 classes; bad labels; ignore_index 255 and '
              f'-1; contiguous and misaligned)')
    if problems:
        detail = f'{len(problems)} of {cases} off: {problems[0]}'
    return Result(name, not problems, detail)


def check_prepare(device: torch.device) -> Result:
    """The prepare kernel against its PyTorch twin on CPU, in every count
    mode, training step or not. Tolerance: float32 of the same float64
    arithmetic, summed in another order and with the device's log: 1e-6
    relative (8 float32 ulps)."""
    # The twin is the count modes' rules, which live in the counting (the
    # one import of ops from a package above it: a machine check, outside
    # any training step).
    from ..counting.prepare import COUNT_MODES, prepare_counts
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
