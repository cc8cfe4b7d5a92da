"""From counts to the loss's shift: the running count state and ``log n``.

``update_counts_`` folds a step's class counts into the running state in
the way the count mode says; ``log_count_shift`` turns counts into the
per-class shift that ARB-Loss adds to the logits.
"""
import torch
from torch import Tensor

from . import cuda_ext

# The count modes that keep a running state (``'prior'`` keeps a fixed one).
RUNNING_MODES = ('batch', 'cumulative', 'ema')

# The log-count of an absent class. exp(z + ABSENT_CLASS_SHIFT - lse)
# underflows to exactly 0 for any sane logit, so the class drops out as in
# the paper; unlike -inf it keeps a row whose classes are all absent (every
# pixel ignored) finite, so its zero loss has zero, not NaN, gradients.
ABSENT_CLASS_SHIFT = -1e30


def update_counts_(counts: Tensor, batch: Tensor, count_mode: str,
                   momentum: float = 0.0) -> Tensor:
    """Fold int64 step counts into the float64 running ``counts`` in place.

    ``'batch'``: ``counts = batch``; ``'cumulative'``: ``counts += batch``;
    ``'ema'``: ``counts = (1 - momentum) * counts + momentum * batch``. One
    tiny kernel launch on CUDA when the extension is loaded.
    """
    if count_mode not in RUNNING_MODES:
        raise ValueError(f'count_mode must be one of {RUNNING_MODES}, '
                         f'got {count_mode!r}')
    if cuda_ext.cuda_ops_apply(counts):
        torch.ops.mmseg_arb.update_counts(counts, batch, count_mode, momentum)
    elif count_mode == 'batch':
        counts.copy_(batch)
    elif count_mode == 'cumulative':
        counts.add_(batch)
    else:
        counts.mul_(1.0 - momentum).add_(batch, alpha=momentum)
    return counts


def log_count_shift(class_counts: Tensor, smoothing: float = 0.0,
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
