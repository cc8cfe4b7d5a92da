"""The pixel class-count estimator: what ``n_j`` means while training.

ARB-Loss needs a count ``n_j`` per class. How it is estimated is a choice of
the user (``mode``); everything else is the same for every mode:

* this step's labels are counted on their device (:func:`class_histogram`),
* the counts of all ranks are summed with one ``all_reduce`` so that every
  rank applies the same weights,
* the running state is updated *before* it is read, so every class present
  in the batch has a positive count and the loss is finite from the first
  iteration without any smoothing,
* the state lives in buffers: checkpoints save it and resume restores it.
"""
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..ops.class_count import class_histogram, update_count_state_
from ..utils.class_stats import CountsSource, load_class_counts
from .label_guard import LabelRangeGuard

COUNT_MODES = ('batch', 'cumulative', 'ema', 'prior')
_STATE_UPDATE = {
    'batch': 'replace',
    'cumulative': 'accumulate',
    'ema': 'moving_average'
}


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all ranks in place when running distributed."""
    if dist.is_available() and dist.is_initialized() and \
            dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class ClassCountEstimator(nn.Module):
    """Estimates per-class pixel counts ``n`` for ARB-Loss.

    Modes:

    * ``'batch'``: the counts of the current batch (of all ranks together
      when distributed). The paper's plain ARB-Loss.
    * ``'cumulative'``: running totals since the start of training (the
      paper's "global class count").
    * ``'ema'``: exponential moving average of batch counts,
      ``n <- (1 - momentum) * n + momentum * batch``. Since ARB only uses
      ratios ``n_j / n_y`` the EMA needs no bias correction.
    * ``'prior'``: fixed counts, e.g. measured over the dataset by
      ``tools/class_stats.py``.

    A class whose count is 0 (never seen so far, or absent from the batch)
    drops out of the softmax denominator, exactly as in the paper. Because
    the state is updated with the current batch before it is used, a
    labelled pixel's own class always has a positive count, so no smoothing
    is needed for the loss to be finite. ``smoothing`` adds a pseudo-count to
    every class for those who want never-seen classes to keep a small weight;
    in ``'prior'`` mode it is required when the prior has zero entries,
    since a pixel of such a class would otherwise have an infinite loss.

    Running modes update only in training mode. In eval mode they use the
    stored state, or the batch counts while nothing has been accumulated.

    Label validation: labels outside ``[0, C)`` that are not
    ``ignore_index`` raise :class:`LabelRangeError`. They are counted in the
    same pass as the classes; CPU labels are checked at once, GPU labels
    asynchronously (see :mod:`mmseg_arb.counting.label_guard`), so no host
    sync is paid per step.

    Args:
        mode (str): One of ``'batch'``, ``'cumulative'``, ``'ema'``,
            ``'prior'``. Default: ``'batch'``.
        num_classes (int, optional): Number of classes. Sizes the buffers at
            construction; otherwise the first batch (or a loaded checkpoint)
            sizes them. Default: None.
        momentum (float): Weight of the new batch in ``'ema'`` mode, in
            ``(0, 1]`` (the convention of ``nn.BatchNorm``). Default: 0.01.
        prior (list | str, optional): Counts for ``'prior'`` mode, or the
            path of a class-statistics JSON file. Default: None.
        smoothing (float): Pseudo-count added to every class before use.
            Default: 0.
        dist_sync (bool): Sum counts across ranks when ``torch.distributed``
            is initialised. Default: True.
        label_check (str): ``'deferred'`` or ``'sync'``, see
            :class:`LabelRangeGuard`. Default: ``'deferred'``.
    """

    def __init__(self,
                 mode: str = 'batch',
                 num_classes: Optional[int] = None,
                 momentum: float = 0.01,
                 prior: Optional[CountsSource] = None,
                 smoothing: float = 0.0,
                 dist_sync: bool = True,
                 label_check: str = 'deferred') -> None:
        super().__init__()
        if mode not in COUNT_MODES:
            raise ValueError(f'count_mode must be one of {COUNT_MODES}, '
                             f'got {mode!r}')
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f'momentum must be in (0, 1], got {momentum}')
        if not smoothing >= 0.0:
            raise ValueError(f'smoothing must be >= 0, got {smoothing}')
        if (prior is None) != (mode != 'prior'):
            raise ValueError("class_counts must be given exactly when "
                             f"count_mode='prior' (count_mode={mode!r})")
        self.mode = mode
        self.momentum = momentum
        self.smoothing = smoothing
        self.dist_sync = dist_sync
        self.label_guard = LabelRangeGuard(label_check)

        initial = torch.zeros(num_classes or 0, dtype=torch.float64)
        if prior is not None:
            initial = load_class_counts(prior)
            if num_classes is not None and initial.numel() != num_classes:
                raise ValueError(
                    f'class_counts has {initial.numel()} entries but '
                    f'num_classes is {num_classes}')
            zero = (initial == 0).nonzero().flatten().tolist()
            if zero and smoothing == 0:
                raise ValueError(
                    f'class_counts of classes {zero} are 0: a pixel of such a '
                    f'class would get an infinite loss. Set smoothing > 0 '
                    f'(a pseudo-count added to every class) or recount.')
        # State: running counts (or the prior, or the last batch's counts).
        self.register_buffer('counts', initial)
        self.register_buffer('num_updates', torch.zeros((), dtype=torch.int64))

    @property
    def num_classes(self) -> Optional[int]:
        """Number of classes, or None until the first batch sizes it."""
        return self.counts.numel() or None

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, num_classes={self.num_classes}, '
                f'momentum={self.momentum}, smoothing={self.smoothing}')

    def forward(self, label: Tensor, num_classes: int,
                ignore_index: int = 255) -> Tensor:
        """Count ``label``, update the state and return the counts to use.

        Args:
            label (Tensor): Integer labels of any shape.
            num_classes (int): ``C``, the number of logits channels.
            ignore_index (int): Label value that is not counted.

        Returns:
            Tensor: float64 counts of shape ``(C,)`` on the label's device
            (``smoothing`` included), ready for :func:`log_count_shift`.
        """
        self._check_size(num_classes)
        # Class counts and the bad-label total in one buffer: one collective
        # for both, so that every rank raises together instead of the others
        # hanging.
        hist = class_histogram(label, num_classes, ignore_index)
        if self.dist_sync:
            all_reduce_sum_(hist)
        self.label_guard.observe(hist[num_classes], num_classes,
                                 ignore_index, label)
        batch = hist[:num_classes]
        if self.counts.numel() == 0:
            self.counts = torch.zeros_like(batch, dtype=torch.float64)
        elif self.counts.device != batch.device:
            raise RuntimeError(
                f'count buffers are on {self.counts.device} but labels are '
                f'on {batch.device}; move the loss module with the model')
        counts = self._update(batch) if self.training else self._current(
            batch)
        return counts + self.smoothing

    def _update(self, batch: Tensor) -> Tensor:
        if self.mode != 'prior':
            update_count_state_(self.counts, batch, _STATE_UPDATE[self.mode],
                                self.momentum)
        self.num_updates.add_(1)
        return self.counts

    def _current(self, batch: Tensor) -> Tensor:
        if self.mode == 'batch':
            return batch.to(torch.float64)
        if self.mode == 'prior':
            return self.counts
        # Nothing accumulated yet (e.g. evaluating an untrained model): the
        # batch is the only estimate. Decided on device, without a sync.
        return torch.where(self.counts.sum() > 0, self.counts,
                           batch.to(torch.float64))

    def _check_size(self, num_classes: int) -> None:
        if self.counts.numel() not in (0, num_classes):
            raise ValueError(
                f'the logits have {num_classes} classes but the class counts '
                f'have {self.counts.numel()} (count_mode={self.mode!r}); '
                f'check class_counts / num_classes against the decode head')

    def _load_from_state_dict(self, state_dict: dict, prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        # Buffers sized lazily are still empty when a checkpoint is loaded
        # before the first batch (resume): take the checkpoint's size.
        saved = state_dict.get(prefix + 'counts')
        if saved is not None and self.counts.numel() == 0:
            self.counts = torch.zeros_like(saved, device=self.counts.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
