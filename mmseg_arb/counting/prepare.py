"""From a step's label histogram to the loss's shift and class weights:
the "prepare" step, and the rules of the count modes.

:func:`prepare_counts` is everything between counting and the loss: fold
the step's class counts into the running state (per ``count_mode``),
choose the counts ``n`` the loss uses, and turn them into the shift
``tau * log n`` and the class weights ``n^-p``
(:func:`count_class_weight`). The PyTorch implementation below is the
reference and the path of CPUs; where the CUDA kernels are loaded the same
step is one launch of ``torch.ops.mmseg_arb.prepare_counts``, whose kernel
(``prepare_counts_kernel`` in ``ops/csrc/arb_kernels.cu``) follows these
rules and is tested against this code.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..ops import cuda_ext
from ..ops.histogram_layout import class_counts, pixel_total

COUNT_MODES = ('batch', 'cumulative', 'ema', 'prior')
# The default bound on w_max / w_min of count-driven class weights, and the
# largest allowed (weights stay finite in float32).
MAX_WEIGHT_RATIO = 1000.0
WEIGHT_RATIO_LIMIT = 1e30

# The log-count of an absent class. exp(z + ABSENT_CLASS_SHIFT - max)
# underflows to exactly 0 for any sane logit, so the class drops out as in
# the paper; unlike -inf it keeps a row whose classes are all absent (every
# pixel ignored) finite, so its zero loss has zero, not NaN, gradients.
ABSENT_CLASS_SHIFT = -1e30


def log_count_shift(class_counts: Tensor,
                    smoothing: float = 0.0,
                    tau: float = 1.0) -> Tensor:
    """``tau * log(n_j + smoothing)`` per class as float32.

    Where ``n_j + smoothing`` is 0 the class drops out of the softmax
    (``ABSENT_CLASS_SHIFT``), except at ``tau = 0``, where every class
    keeps weight ``n^0 = 1``: cross-entropy exactly.

    Args:
        class_counts (Tensor): Non-negative counts of shape ``(C,)``.
        smoothing (float): Pseudo-count added to every class. Default: 0.
        tau (float): Exponent of the counts, ``>= 0``. Default: 1 (the
            paper's ARB-Loss).

    Returns:
        Tensor: float32 shift of shape ``(C,)``.
    """
    counts = class_counts.to(torch.float64)
    if smoothing:
        counts = counts + smoothing
    if tau == 0:
        return torch.zeros_like(counts, dtype=torch.float32)
    log_counts = counts.log()
    if tau != 1:
        log_counts = log_counts * tau
    shift = torch.where(counts > 0, log_counts,
                        counts.new_full((), ABSENT_CLASS_SHIFT))
    return shift.to(torch.float32)


def count_class_weight(class_counts: Tensor,
                       batch: Tensor,
                       smoothing: float = 0.0,
                       weight_power: float = 0.0,
                       max_weight_ratio: float = MAX_WEIGHT_RATIO) -> Tensor:
    """Class weights ``w_c ~ (n_c + smoothing)^-p`` as float32.

    Bounded: ``(n_c / n_max)^-p`` is capped at ``max_weight_ratio``, so
    ``w_max / w_min <= max_weight_ratio`` for any count vector and power (a
    class with one pixel in a batch, or none, weighs at most that much
    more than the most frequent one).
    Normalised: the mean weight of the step's labelled pixels (``batch``)
    is 1, so ``loss_weight`` and learning rates keep their meaning. At
    ``p = 0`` every weight is 1 (the unweighted loss exactly); where all
    counts are 0, too.

    Args:
        class_counts (Tensor): ``(C,)`` counts ``n`` (those of the shift).
        batch (Tensor): ``(C,)`` labelled pixels of each class this step.
        smoothing (float): Pseudo-count added to every class.
        weight_power (float): ``p >= 0``.
        max_weight_ratio (float): Bound of ``w_max / w_min``, in
            ``[1, 1e30]``.

    Returns:
        Tensor: float32 ``(C,)``.
    """
    n = class_counts.to(torch.float64)
    if weight_power == 0:
        return torch.ones_like(n, dtype=torch.float32)
    if smoothing:
        n = n + smoothing
    n_max = n.max()
    # Relative to the largest count, and the weight (not the count) capped:
    # weights in [1, max_weight_ratio] before the mean for any power, a
    # zero count included (0^-p = inf becomes the cap).
    weight = (n / n_max).pow(-weight_power).clamp_max(max_weight_ratio)
    b = batch.to(torch.float64)
    labelled = b.sum()
    mean = torch.where(labelled > 0, (b * weight).sum() / labelled, 1.0)
    # Decided on the device: no count read back to the host.
    weight = torch.where(n_max > 0, weight / mean, 1.0)
    return weight.to(torch.float32)


def combine_class_weight(counted: Tensor,
                         class_weight: Optional[Tensor]) -> Tensor:
    """The loss's class weights: the count-driven ones (from
    :func:`count_class_weight`) times a static ``class_weight``, if any."""
    if class_weight is None:
        return counted
    return counted * class_weight.to(counted)


def prepare_counts(hist: Tensor,
                   counts: Tensor,
                   count_mode: str,
                   momentum: float = 0.0,
                   smoothing: float = 0.0,
                   tau: float = 1.0,
                   weight_power: float = 0.0,
                   max_weight_ratio: float = MAX_WEIGHT_RATIO,
                   update: bool = True,
                   class_weight: Optional[Tensor] = None,
                   avg_non_ignore: bool = False,
                   ranks: int = 1) -> Tensor:
    """The shift, class weights and mean denominator of the loss from a
    step's histogram; updates the state in place.

    Args:
        hist (Tensor): int64 histogram from ``class_histogram`` (summed
            across ranks or not), see
            :mod:`~mmseg_arb.ops.histogram_layout`.
        counts (Tensor): float64 ``(C,)`` running state, updated in place
            when ``update``: ``'batch'``: the step's counts;
            ``'cumulative'``: plus them; ``'ema'``: ``(1 - momentum) *
            counts + momentum * batch``; ``'prior'``: unchanged.
        count_mode (str): ``'batch'``, ``'cumulative'``, ``'ema'`` or
            ``'prior'``.
        momentum (float): Weight of the step in ``'ema'``.
        smoothing (float): Pseudo-count added to every class.
        tau (float): Exponent of the counts in the shift.
        weight_power (float): Exponent ``p`` of the class weights.
        max_weight_ratio (float): Their bound (see
            :func:`count_class_weight`).
        update (bool): Whether this is a training step. Otherwise the
            state is left alone and the loss uses the step's counts
            (``'batch'``), the prior, or the running counts (the step's
            while they are all zero).
        class_weight (Tensor, optional): float32 ``(C,)`` static class
            weights, which the count-driven ones multiply.
        avg_non_ignore (bool): Whether the denominator leaves out the
            unlabelled pixels (as mmseg's option of that name).
        ranks (int): The ranks whose labels ``hist`` sums.

    Returns:
        Tensor: float32 ``(2C + 1,)`` (see :func:`unpack_prepared`): the
        shift (:func:`log_count_shift`), the class weights
        (:func:`count_class_weight`, from the same counts, times
        ``class_weight``), and mmseg's mean denominator of the pixels in
        ``hist`` for those weights (the weights of the labelled pixels,
        plus 1 per unlabelled pixel unless ``avg_non_ignore``) divided by
        ``ranks``: each rank's share of the denominator of all ranks, so
        that ranks that divide their loss by it and average their
        gradients get the gradients of one process on all their pixels.
    """
    if count_mode not in COUNT_MODES:
        raise ValueError(f'count_mode must be one of {COUNT_MODES}, '
                         f'got {count_mode!r}')
    if cuda_ext.cuda_ops_apply(hist):
        return torch.ops.mmseg_arb.prepare_counts(hist, counts, class_weight,
                                                  count_mode, momentum,
                                                  smoothing, tau, weight_power,
                                                  max_weight_ratio, update,
                                                  avg_non_ignore, ranks)
    batch = class_counts(hist)
    if count_mode == 'prior':
        n = counts
    elif update:
        if count_mode == 'batch':
            counts.copy_(batch)
        elif count_mode == 'cumulative':
            counts.add_(batch)
        else:
            counts.mul_(1.0 - momentum).add_(batch, alpha=momentum)
        n = counts
    elif count_mode == 'batch':
        n = batch
    else:
        # Nothing accumulated yet (e.g. evaluating an untrained model): the
        # batch is the only estimate. Decided on device, without a sync.
        n = torch.where(counts.sum() > 0, counts, batch.to(torch.float64))
    weight = combine_class_weight(
        count_class_weight(n, batch, smoothing, weight_power,
                           max_weight_ratio), class_weight)
    b = batch.to(torch.float64)
    denominator = (b * weight.to(torch.float64)).sum()
    if not avg_non_ignore:
        denominator = denominator + (pixel_total(hist) - b.sum())
    return torch.cat([
        log_count_shift(n, smoothing, tau), weight,
        (denominator / ranks).to(torch.float32)[None]
    ])


def unpack_prepared(prepared: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``(shift, class_weight, denominator)``: views of what
    :func:`prepare_counts` returns, ``(C,)``, ``(C,)`` and 0-d."""
    num_classes = prepared.shape[0] // 2
    return (prepared[:num_classes], prepared[num_classes:2 * num_classes],
            prepared[2 * num_classes])
