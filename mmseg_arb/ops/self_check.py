"""How a kernel's results are checked: probes that reach its corner cases,
references (float64 and fp32 cross-entropy, ``torch.bincount``) and the
tolerance, one :class:`Result` per check.

The fused loss's first-use guard (:mod:`~mmseg_arb.ops.first_use`) runs
:func:`compare_loss` before the kernels serve; ``mmseg-arb check``
(``mmseg_arb/cli/check.py``, which decides what runs on a machine) runs
:func:`check_loss` and :func:`check_histogram` on the kernels and the
PyTorch path.

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
from typing import Callable, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .fused_arb_loss import fused_arb_loss
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
