"""The pixel class-count estimator: what ``n_j`` means while training.

ARB-Loss needs a count ``n_j`` per class: its logits are shifted by
``tau * log n`` and, with ``weight_power = p > 0``, its pixels weighted by
``n^-p``, both from the same counts. How they are estimated is a choice of
the user (``count_mode``); everything else is the same for every mode:

* the step's labels are counted on their device, once per step however
  many losses and samplers ask (:func:`step_histogram`), and the counts of
  all ranks are summed with one ``all_reduce``, so every rank applies the
  same weights and, with count-driven weights, divides by its share of the
  mean's denominator over the pixels of all ranks;
* only a training step (module in train mode, gradients enabled) changes
  the state, exactly once; any other call (a sampler ranking pixels under
  ``no_grad``, evaluation) reads it and leaves it alone;
* the running state is updated *before* it is read, so every class present
  in the batch has a positive count and the loss is finite from the first
  iteration without any smoothing;
* running counts live in a buffer that checkpoints save and ``--resume``
  restores, while a prior comes from the config and wins over any
  checkpoint.
"""
import logging
import os
import os.path as osp
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from ..utils.class_counts import CountsSource, load_class_counts
from ..utils.fixed_dtype import FixedDtypeBuffers
from .label_guard import LabelRangeGuard
from .prepare import (COUNT_MODES, MAX_WEIGHT_RATIO, WEIGHT_RATIO_LIMIT,
                      prepare_counts, unpack_prepared)
from .step_histogram import step_histogram, summed_ranks


def _log(message: str, level: int = logging.WARNING) -> None:
    from mmengine.logging import print_log
    print_log(message, logger='current', level=level)


class ClassCountEstimator(FixedDtypeBuffers):
    """Estimates per-class pixel counts ``n`` and gives ARB-Loss its shift
    and class weights.

    Count modes:

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
    drops out of the softmax denominator, exactly as in the paper.
    ``smoothing`` adds a pseudo-count to every class for those who want
    never-seen classes to keep a small weight; in ``'prior'`` mode it is
    required when the prior has zero entries, since a pixel of such a class
    would otherwise have an infinite loss.

    Outside training steps running modes use the stored state, or the batch
    counts while nothing has been accumulated; ``'batch'`` uses the batch.

    Bad labels (outside ``[0, C)`` and not ``ignore_index``) are counted in
    the same pass as the classes and reported by :class:`LabelRangeGuard`.

    Args:
        count_mode (str): One of ``'batch'``, ``'cumulative'``, ``'ema'``,
            ``'prior'``. Default: ``'batch'``.
        num_classes (int, optional): Number of classes. Sizes the buffers at
            construction; otherwise the first batch (or a loaded checkpoint)
            sizes them. Default: None.
        momentum (float): Weight of the new batch in ``'ema'`` mode, in
            ``(0, 1]`` (the convention of ``nn.BatchNorm``). Default: 0.01.
        class_counts (list | str, optional): Counts for ``'prior'`` mode,
            or the path of a class-statistics JSON file. A relative path
            that does not exist from the working directory is looked up
            under the training set's ``data_root`` by ``ClassCountHook``.
            Default: None.
        smoothing (float): Pseudo-count added to every class before use.
            Default: 0.
        tau (float): Exponent of the counts: the shift is ``tau * log n``.
            ``0`` is cross-entropy, ``1`` the paper. Default: 1.
        weight_power (float): Exponent ``p`` of the class weights
            ``n^-p``, normalised to a mean of 1 over the step's labelled
            pixels (see :func:`~mmseg_arb.counting.count_class_weight`).
            ``0``:
            no weights. Default: 0.
        max_weight_ratio (float): Bound of ``w_max / w_min``, in ``[1,
            1e30]``: ``(n / n_max)^-p`` is capped at it. Default: 1000.
        dist_sync (bool): Sum counts across ranks when ``torch.distributed``
            is initialised. Default: True.
        share_step_counts (bool): Within a training step marked by
            ``ClassCountHook``, share the histogram of labels of the same
            shape with the model's other losses (see
            :mod:`~mmseg_arb.counting.step_histogram`). Turn it off for a
            model that gives losses different label maps of one shape in
            one step. Default: True.
        label_check (str): ``'deferred'`` or ``'sync'``, see
            :class:`LabelRangeGuard`. Default: ``'deferred'``.
    """

    # Counts stay exact float64 whatever the model is cast to.
    fixed_dtypes = {'counts': torch.float64}

    def __init__(self,
                 count_mode: str = 'batch',
                 num_classes: Optional[int] = None,
                 momentum: float = 0.01,
                 class_counts: Optional[CountsSource] = None,
                 smoothing: float = 0.0,
                 tau: float = 1.0,
                 weight_power: float = 0.0,
                 max_weight_ratio: float = MAX_WEIGHT_RATIO,
                 dist_sync: bool = True,
                 share_step_counts: bool = True,
                 label_check: str = 'deferred') -> None:
        super().__init__()
        if count_mode not in COUNT_MODES:
            raise ValueError(f'count_mode must be one of {COUNT_MODES}, '
                             f'got {count_mode!r}')
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f'momentum must be in (0, 1], got {momentum}')
        if not smoothing >= 0.0:
            raise ValueError(f'smoothing must be >= 0, got {smoothing}')
        if not 0.0 <= tau < float('inf'):
            raise ValueError(f'tau must be a finite number >= 0, got {tau}')
        if not 0.0 <= weight_power < float('inf'):
            raise ValueError('weight_power must be a finite number >= 0, '
                             f'got {weight_power}')
        if not 1.0 <= max_weight_ratio <= WEIGHT_RATIO_LIMIT:
            raise ValueError(f'max_weight_ratio must be in [1, '
                             f'{WEIGHT_RATIO_LIMIT:g}] (weights stay finite '
                             f'in float32), got {max_weight_ratio}')
        if (class_counts is None) != (count_mode != 'prior'):
            raise ValueError(
                "class_counts must be given exactly when count_mode='prior' "
                f'(count_mode={count_mode!r})')
        self.count_mode = count_mode
        self.momentum = momentum
        self.smoothing = smoothing
        self.tau = tau
        self.weight_power = weight_power
        self.max_weight_ratio = max_weight_ratio
        self.dist_sync = dist_sync
        self.share_step_counts = share_step_counts
        self.label_guard = LabelRangeGuard(label_check)
        # A relative prior file not found yet (see resolve_prior).
        self.prior_file: Optional[str] = None
        # The counts were sized by a checkpoint, not by this model's logits.
        self._sized_by_checkpoint = False
        self._declared_classes = num_classes
        self.register_buffer(
            'counts', torch.zeros(num_classes or 0, dtype=torch.float64))
        if class_counts is not None:
            if isinstance(class_counts, (str, os.PathLike)) and \
                    not osp.isabs(class_counts) and \
                    not osp.exists(class_counts):
                self.prior_file = os.fspath(class_counts)
            else:
                self._set_prior(load_class_counts(class_counts), class_counts)

    @property
    def num_classes(self) -> Optional[int]:
        """Number of classes, or None until the first batch sizes it."""
        return self.counts.numel() or None

    def extra_repr(self) -> str:
        return (f'count_mode={self.count_mode!r}, '
                f'num_classes={self.num_classes}, momentum={self.momentum}, '
                f'smoothing={self.smoothing}, '
                f'tau={self.tau}, weight_power={self.weight_power}, '
                f'max_weight_ratio={self.max_weight_ratio}')

    def resolve_prior(self, data_root: Optional[str]) -> None:
        """Load a relative prior file that was not found from the working
        directory, from under ``data_root`` (the training set's)."""
        if self.prior_file is None:
            return
        path = osp.join(data_root or '', self.prior_file)
        if not osp.exists(path):
            raise FileNotFoundError(self._missing_prior(path))
        self._set_prior(load_class_counts(path), path)
        self.prior_file = None

    def forward(
        self,
        label: Tensor,
        num_classes: int,
        ignore_index: int = 255,
        class_weight: Optional[Tensor] = None,
        avg_non_ignore: bool = False
    ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """Count ``label``, update the state in a training step, and return
        the shift, the class weights and the mean denominator of the loss.

        Args:
            label (Tensor): Integer labels of any shape.
            num_classes (int): ``C``, the number of logits channels.
            ignore_index (int): Label value that is not counted.
            class_weight (Tensor, optional): The loss's static float32
                ``(C,)`` class weights, which the count-driven ones
                multiply.
            avg_non_ignore (bool): The loss's option of that name (for the
                denominator).

        Returns:
            tuple[Tensor, Tensor | None, Tensor | None]: On the label's
            device, the float32 ``(C,)`` shift ``tau * log(n +
            smoothing)`` (a large negative number where that count is 0; 0
            everywhere at ``tau = 0``), and the loss's class weights and
            mean denominator. With ``weight_power > 0``: the count-driven
            weights times ``class_weight``, and this rank's share of
            mmseg's mean denominator over the pixels of all ranks (see
            :func:`~mmseg_arb.counting.prepare_counts`), so that the
            gradients DDP averages are those of one process on every
            rank's batch. Otherwise ``class_weight`` itself and None: the
            loss divides by this rank's own denominator, as mmseg's
            ``CrossEntropyLoss`` does.
        """
        if self.prior_file is not None:
            raise FileNotFoundError(self._missing_prior(None))
        self._check_device(label.device)
        self._check_size(num_classes, label.device)
        step = self.training and torch.is_grad_enabled()
        hist = step_histogram(label, num_classes, ignore_index, self.dist_sync,
                              self.share_step_counts)
        prepared = prepare_counts(
            hist,
            self.counts,
            self.count_mode,
            self.momentum,
            self.smoothing,
            self.tau,
            self.weight_power,
            self.max_weight_ratio,
            update=step,
            class_weight=class_weight,
            avg_non_ignore=avg_non_ignore,
            ranks=summed_ranks(self.dist_sync))
        # A training step is checked by the guard (at once, or deferred);
        # an evaluation call at once; a sampler's ranking call (train mode,
        # no grad) not at all: the step's own call checks the same labels.
        self.label_guard.observe(
            hist,
            num_classes,
            ignore_index,
            label,
            step,
            at_once=not self.training)
        shift, weight, denominator = unpack_prepared(prepared)
        if not self.weight_power:
            return shift, class_weight, None
        return shift, weight, denominator

    def _check_device(self, device: torch.device) -> None:
        if self.counts.device == device:
            return
        if self.counts.numel() == 0:
            # Nothing learnt or configured yet (e.g. ARBLoss() called on
            # CUDA tensors without .cuda()): the state can simply follow.
            self.to(device)
            return
        raise RuntimeError(
            f'the class counts are on {self.counts.device} but the labels '
            f'are on {device}: move the loss with the model (e.g. '
            f'loss.to({str(device)!r}))')

    def _set_prior(self, prior: Tensor, source: CountsSource) -> None:
        if isinstance(source, (str, os.PathLike)):
            # Said, since a relative name is looked up in two places.
            _log(
                f'mmseg_arb: class_counts read from '
                f'{osp.abspath(source)!r}', logging.INFO)
        declared = self._declared_classes
        if declared is not None and prior.numel() != declared:
            raise ValueError(f'class_counts has {prior.numel()} entries but '
                             f'num_classes is {declared}')
        zero = (prior == 0).nonzero().flatten().tolist()
        if zero and self.smoothing == 0 and self.tau > 0:
            raise ValueError(
                f'class_counts of classes {zero} are 0: a pixel of such a '
                f'class would get an infinite loss. Set smoothing > 0 '
                f'(a pseudo-count added to every class) or recount.')
        self.counts = prior.to(self.counts.device)

    def _missing_prior(self, tried: Optional[str]) -> str:
        where = f'nor at {tried!r} under the training data_root' if tried \
            else ('and no ClassCountHook resolved it against the training '
                  "data_root (add custom_hooks=[dict(type='ClassCountHook')]"
                  ' or give an absolute path)')
        return (f'class_counts file {self.prior_file!r} not found in the '
                f'working directory {os.getcwd()!r} {where}. Write it with '
                f'"mmseg-arb class-stats CONFIG" (the same as '
                f'tools/class_stats.py in a clone), which puts it next to '
                f'the data.')

    def _check_size(self, num_classes: int, device: torch.device) -> None:
        size = self.counts.numel()
        if size == num_classes or (size == 0 and self.count_mode != 'prior'):
            if size == 0:
                self.counts = torch.zeros(
                    num_classes, dtype=torch.float64, device=device)
            self._sized_by_checkpoint = False
            return
        if self._sized_by_checkpoint:
            # Fine-tuning into a head with other classes: the checkpoint's
            # counts belong to its classes, as its classifier does, and
            # mmengine re-initialises that classifier too.
            _log(f'mmseg_arb: the class counts loaded from the checkpoint '
                 f'have {size} classes but the logits have {num_classes}; '
                 f'counting starts afresh (count_mode={self.count_mode!r}).')
            self.counts = torch.zeros(
                num_classes, dtype=torch.float64, device=device)
            self._sized_by_checkpoint = False
            return
        raise ValueError(
            f'the logits have {num_classes} classes but the class counts '
            f'have {size} (count_mode={self.count_mode!r}); check '
            f'class_counts / num_classes against the decode head')

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        key = prefix + 'counts'
        # Written by mmseg-arb 0.1 and read by nothing: dropped.
        state_dict.pop(prefix + 'num_updates', None)
        saved = state_dict.get(key)
        if saved is not None and self.count_mode == 'prior':
            # The prior is configuration: the config's wins over whatever
            # the checkpoint carries (e.g. a batch-mode run's last batch).
            # (Still empty if its file is resolved later, by the hook.)
            if self.counts.numel() and not torch.equal(
                    saved.to(self.counts), self.counts):
                _log(
                    'mmseg_arb: the checkpoint carries other class counts '
                    f'({key}); the prior from the config is kept.',
                    logging.INFO)
            state_dict[key] = self.counts
        elif saved is not None and self.counts.numel() == 0:
            # Buffers sized lazily are still empty when a checkpoint is
            # loaded before the first batch (resume): take its size.
            self.counts = torch.zeros_like(
                saved, dtype=torch.float64, device=self.counts.device)
            self._sized_by_checkpoint = True
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
