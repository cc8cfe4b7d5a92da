"""ARB-Loss (Attraction-Repulsion-Balanced Loss, Xie et al., 2023).

For a pixel of class ``y`` with logits ``z`` and class counts ``n``::

    loss = -log( e^{z_y} / sum_j (n_j / n_y) e^{z_j} )
         = -log softmax(z + log n)[y]

i.e. cross-entropy on logits shifted by ``log n_j``. The second form is what
is computed: no (pixels x classes) weight matrix, and the softmax stays
stable for any logit magnitude. Classes with ``n_j = 0`` drop out of the
denominator.

Two exponents make the family: ``tau`` scales the shift (``tau * log n``;
0 is cross-entropy, 1 the paper) and ``weight_power = p`` weights each
pixel of class ``y`` by ``n_y^-p`` (normalised to a mean of 1 over the
labelled pixels), the class-weighted cross-entropy's knob, from the same
counts. ``tau = 0, p = 1`` with fixed counts is cross-entropy with
inverse-frequency class weights.
"""
import importlib.util
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from ...counting.estimator import ClassCountEstimator
from ...counting.label_guard import check_labels_now
from ...counting.prepare import (MAX_WEIGHT_RATIO, log_count_shift,
                                 prepare_counts, unpack_prepared)
from ...ops import cuda_ext
from ...ops.class_count import (KERNEL_LABEL_DTYPES, check_label_dtype,
                                class_histogram, label_masks)
from ...ops.fused_arb_loss import FUSED_DTYPES, fused_arb_loss
from ...ops.shifted_cross_entropy import (CLASS_WEIGHT_GRAD, asks_for_grad,
                                          shifted_cross_entropy)
from ...utils.class_counts import CountsSource, load_class_weight
from ...utils.fixed_dtype import FixedDtypeBuffers

if importlib.util.find_spec('mmseg') is not None:
    from mmseg.registry import MODELS
    register_loss = MODELS.register_module()
else:  # the math and the kernels also serve without MMSegmentation

    def register_loss(cls):
        return cls


REDUCTIONS = ('none', 'mean', 'sum')


def check_reduction(reduction: str,
                    avg_factor: Optional[Union[float, Tensor]]) -> None:
    """Raise a clear error unless ``reduction`` (and ``avg_factor`` with
    it) is one mmseg's losses take."""
    if reduction not in REDUCTIONS:
        raise ValueError(f'reduction must be one of {REDUCTIONS}, '
                         f'got {reduction!r}')
    if avg_factor is not None and reduction == 'sum':
        raise ValueError('avg_factor can not be used with reduction="sum"')


def check_class_weight(class_weight: Optional[Tensor],
                       num_classes: int) -> None:
    """Raise a clear error unless ``class_weight`` is None or ``(C,)`` and
    asks for no gradient (the loss gives class weights none)."""
    if class_weight is None:
        return
    if class_weight.shape != (num_classes, ):
        raise ValueError(f'class_weight has {class_weight.numel()} entries '
                         f'but the logits have {num_classes} classes')
    if asks_for_grad(class_weight):
        raise ValueError(CLASS_WEIGHT_GRAD)


def check_logits_and_label(logits: Tensor, label: Tensor) -> None:
    """Raise a clear error unless ``logits`` (N, C, ...) and ``label``
    (N, ...) fit together."""
    check_logits_fit_label(logits, label)
    check_label_dtype(label)


def check_logits_fit_label(logits: Tensor, label: Tensor) -> None:
    """:func:`check_logits_and_label` but the labels' dtype, which
    ``ARBLoss``'s counting checks before it reads them."""
    if not isinstance(logits, Tensor) or not isinstance(label, Tensor):
        raise TypeError('logits and labels must be tensors, got '
                        f'{type(logits).__name__} and {type(label).__name__}')
    if not logits.dtype.is_floating_point:
        raise TypeError(f'logits must be floating point, got {logits.dtype}')
    if logits.dim() < 2:
        raise ValueError('logits must have shape (N, C) or (N, C, d1, ...), '
                         f'got {tuple(logits.shape)}')
    expected = (logits.shape[0], ) + tuple(logits.shape[2:])
    if tuple(label.shape) != expected:
        hint = ''
        if label.dim() == logits.dim() and label.shape[1] == 1:
            hint = ' (squeeze the channel dimension of the labels)'
        elif label.shape[-2:] != logits.shape[-2:]:
            hint = ' (resize the logits to the label size first)'
        raise ValueError(
            f'label shape {tuple(label.shape)} does not match logits shape '
            f'{tuple(logits.shape)}: expected labels of shape {expected}'
            f'{hint}')
    if label.device != logits.device:
        raise ValueError(f'logits are on {logits.device} but labels are on '
                         f'{label.device}')


def _mean_denominator(label: Tensor, num_classes: int, ignore_index: int,
                      class_weight: Optional[Tensor],
                      avg_non_ignore: bool) -> Union[float, Tensor]:
    """Denominator of ``reduction='mean'``, kept on device (no ``.item()``).

    As mmseg's ``CrossEntropyLoss``: all pixels, or only the non-ignored ones
    with ``avg_non_ignore``; with ``class_weight`` each valid pixel counts
    with its class's weight (and an ignored one, when counted, with 1, where
    mmseg's own implementation crashes).
    """
    if class_weight is None and not avg_non_ignore:
        return float(label.numel())
    valid, _ = label_masks(label, num_classes, ignore_index)
    if class_weight is None:
        return valid.sum().to(torch.float32)
    safe = torch.where(valid, label, 0).long()  # uint8 would be a mask
    weights = torch.where(valid, class_weight[safe],
                          0.0 if avg_non_ignore else 1.0)
    return weights.sum()


def arb_loss(logits: Tensor,
             label: Tensor,
             class_counts: Tensor,
             weight: Optional[Tensor] = None,
             class_weight: Optional[Tensor] = None,
             reduction: str = 'mean',
             avg_factor: Optional[Union[float, Tensor]] = None,
             ignore_index: int = 255,
             avg_non_ignore: bool = False,
             tau: float = 1.0,
             weight_power: float = 0.0,
             max_weight_ratio: float = MAX_WEIGHT_RATIO) -> Tensor:
    """ARB-Loss of ``logits`` against ``label`` for given class counts.

    Args:
        logits (Tensor): (N, C) or (N, C, d1, ...), fp32/fp16/bf16/fp64. The
            loss is computed in at least fp32.
        label (Tensor): (N,) or (N, d1, ...) integer labels in ``[0, C)`` or
            ``ignore_index``.
        class_counts (Tensor): (C,) non-negative counts ``n``.
        weight (Tensor, optional): Per-pixel weight broadcastable to the
            label shape (e.g. from an OHEM sampler). Default: None.
        class_weight (Tensor, optional): (C,) per-class loss weight, as in
            ``F.cross_entropy``. Default: None.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``.
        avg_factor (float | Tensor, optional): Denominator of the mean
            instead of the default one. Default: None.
        ignore_index (int): Label value that gets no loss. Default: 255.
        avg_non_ignore (bool): Average over non-ignored pixels only.
            Default: False (mmseg's CrossEntropyLoss default).
        tau (float): Exponent of the counts in the shift. Default: 1.
        weight_power (float): Pixels of class ``y`` weigh ``n_y^-p``,
            normalised to a mean of 1 over this call's labelled pixels and
            bounded by ``max_weight_ratio`` (see
            :func:`~mmseg_arb.counting.count_class_weight`); they multiply
            ``class_weight`` (which must not require grad: the loss gives
            class weights no gradient). Default: 0 (no weights).
        max_weight_ratio (float): Bound of ``w_max / w_min``.
            Default: 1000.

    Returns:
        Tensor: The loss: a scalar, or per-pixel (N, d1, ...) for
        ``reduction='none'`` (0 at ignored pixels). A batch whose pixels are
        all ignored gives 0 with zero gradients.

    Labels outside ``[0, C)`` that are not ``ignore_index`` raise
    :class:`LabelRangeError` on CPU. **On GPU this function does not check
    them** (that would stall the device): they get loss 0, as ignored
    pixels. :class:`ARBLoss` reports them through its count estimator;
    callers of this function on GPU check their labels themselves (e.g.
    with :func:`~mmseg_arb.counting.label_guard.check_labels_now`).
    """
    check_reduction(reduction, avg_factor)
    check_logits_and_label(logits, label)
    num_classes = logits.shape[1]
    check_class_weight(class_weight, num_classes)
    if label.device.type == 'cpu':  # free to check here: no device to stall
        check_labels_now(label, num_classes, ignore_index)
    if class_counts.shape != (num_classes, ):
        raise ValueError(f'class_counts has shape {tuple(class_counts.shape)}'
                         f' but the logits have {num_classes} classes')
    if not weight_power:
        shift = log_count_shift(class_counts, tau=tau).to(logits.device)
        return _shifted_loss(logits, label, shift, weight, class_weight,
                             reduction, avg_factor, ignore_index,
                             avg_non_ignore)
    # ARBLoss's prepare step without state: the counts as a prior, the
    # class weights normalised over this call's labels, and the mean's
    # denominator for them.
    if class_weight is not None:
        class_weight = class_weight.to(label.device,
                                       torch.float32).contiguous()
    shift, class_weight, denominator = unpack_prepared(
        prepare_counts(
            class_histogram(label, num_classes, ignore_index),
            class_counts.to(label.device, torch.float64),
            'prior',
            tau=tau,
            weight_power=weight_power,
            max_weight_ratio=max_weight_ratio,
            update=False,
            class_weight=class_weight,
            avg_non_ignore=avg_non_ignore))
    return _shifted_loss(
        logits,
        label,
        shift.to(logits.device),
        weight,
        class_weight,
        reduction,
        avg_factor,
        ignore_index,
        avg_non_ignore,
        denominator=denominator)


def _shifted_loss(logits: Tensor,
                  label: Tensor,
                  shift: Tensor,
                  weight: Optional[Tensor],
                  class_weight: Optional[Tensor],
                  reduction: str,
                  avg_factor: Optional[Union[float, Tensor]],
                  ignore_index: int,
                  avg_non_ignore: bool,
                  loss_weight: float = 1.0,
                  denominator: Optional[Tensor] = None) -> Tensor:
    """Reduced cross-entropy of ``logits + shift`` times ``loss_weight``,
    once logits and labels are known to fit and the label range is checked
    (by ``arb_loss``, or by ARBLoss's estimator in the same pass as the
    counting): the fused CUDA kernels when they apply, else PyTorch. Both
    give bad labels loss 0 (see :func:`arb_loss`). ``reduction``,
    ``avg_factor`` and ``class_weight`` are checked by the callers
    (:func:`check_reduction`, :func:`check_class_weight`).

    The denominator of ``'mean'``: ``avg_factor`` if given (the caller's),
    else ``denominator`` if given (the prepare step's, with count-driven
    weights), else mmseg's over these labels."""
    num_classes = logits.shape[1]
    if weight is not None and \
            torch.broadcast_shapes(weight.shape, label.shape) != label.shape:
        raise ValueError(f'weight of shape {tuple(weight.shape)} does not '
                         f'broadcast to the label shape {tuple(label.shape)}')
    if class_weight is not None:
        class_weight = class_weight.to(logits.device, torch.float32)
    # eps as in mmseg: an all-ignored batch gives 0, not 0/0.
    eps = torch.finfo(torch.float32).eps

    # The fused backward gives no gradient to a per-pixel weight; one that
    # asks for it (a learned weighting) takes the PyTorch path.
    if logits.dtype in FUSED_DTYPES and not asks_for_grad(weight) and \
            cuda_ext.cuda_ops_apply(logits):
        if label.dtype not in KERNEL_LABEL_DTYPES:  # e.g. int16: rare
            label = label.long()
        if weight is not None:
            weight = weight.to(logits.device,
                               torch.float32).expand(label.shape).contiguous()
        if avg_factor is None or reduction == 'none':
            return fused_arb_loss(logits, label, shift, class_weight, weight,
                                  ignore_index, reduction, loss_weight,
                                  avg_non_ignore, denominator)
        # A given avg_factor replaces the mean's denominator (as in mmseg).
        return fused_arb_loss(logits, label, shift, class_weight, weight,
                              ignore_index, 'sum', loss_weight,
                              avg_non_ignore) / (
                                  avg_factor + eps)

    loss = shifted_cross_entropy(logits, label, shift, class_weight,
                                 ignore_index)
    if weight is not None:
        loss = loss * weight.to(loss.dtype)
    if reduction == 'sum':
        loss = loss.sum()
    elif reduction == 'mean':
        if avg_factor is None:
            avg_factor = denominator if denominator is not None else \
                _mean_denominator(label, num_classes, ignore_index,
                                  class_weight, avg_non_ignore)
        loss = loss.sum() / (avg_factor + eps)
    return loss if loss_weight == 1 else loss_weight * loss


@register_loss
class ARBLoss(FixedDtypeBuffers):
    """Attraction-Repulsion-Balanced Loss, a drop-in for mmseg's
    ``CrossEntropyLoss``.

    It owns a :class:`ClassCountEstimator` that turns each batch's labels
    into the class counts ``n`` of the loss (see :func:`arb_loss`): the
    shift ``tau * log n`` and, with ``weight_power > 0``, the class weights
    ``n^-p``. With no arguments it is the paper's loss (batch counts,
    ``tau = 1``, no weights).

    Example config::

        custom_imports = dict(imports=['mmseg_arb'],
                              allow_failed_imports=False)
        model = dict(decode_head=dict(loss_decode=dict(
            type='ARBLoss', count_mode='batch', loss_weight=1.0)))

    Args:
        count_mode (str): How ``n`` is estimated: ``'batch'`` (the current
            batch, all ranks together), ``'cumulative'`` (running totals),
            ``'ema'`` (moving average with ``momentum``) or ``'prior'``
            (fixed ``class_counts``). Default: ``'batch'``.
        num_classes (int, optional): Sizes the count buffers at construction;
            otherwise the first batch does. Default: None.
        momentum (float): Weight of a new batch in ``'ema'`` mode.
            Default: 0.01.
        class_counts (list[float] | str, optional): Counts for ``'prior'``
            mode, or the path of a class-statistics JSON file
            (``tools/class_stats.py``). Default: None.
        smoothing (float): Pseudo-count added to every class count.
            Default: 0 (classes of count 0 drop out, as in the paper).
        tau (float): Exponent of the counts: the logits are shifted by
            ``tau * log n``. ``0`` is cross-entropy exactly, ``1`` the
            paper's ARB-Loss; with ``count_mode='prior'`` and ``tau=1`` it
            is Balanced Softmax (Ren et al., 2020), i.e. the logit-adjusted
            loss of Menon et al. (2021). Default: 1.
        weight_power (float): Each pixel of class ``y`` weighs ``n_y^-p``
            (the same counts as the shift, synced across ranks), normalised
            to a mean of 1 over the step's labelled pixels; multiplies
            ``class_weight``. ``tau=0, weight_power=1`` with
            ``count_mode='prior'`` is cross-entropy with inverse-frequency
            class weights. Default: 0 (no weights: the paper's loss).
        max_weight_ratio (float): Bound of ``w_max / w_min`` for
            ``weight_power > 0``, in ``[1, 1e30]``: a class of one pixel in
            a batch, or none, weighs at most this much more than the most
            frequent one. Default: 1000.
        dist_sync (bool): Sum counts across ranks. Default: True.
        share_step_counts (bool): Share one histogram per training step
            with the model's other ARB losses whose labels have the same
            shape (with ``ClassCountHook``); off for a model that gives
            its losses different label maps of one shape. Default: True.
        label_check (str): ``'deferred'``: bad labels on GPU are counted
            without host syncs and reported at mmengine's logging steps and
            at the end of training (by ``ClassCountHook``; without it, every
            50 training steps); ``'sync'``: at once, one sync per step. CPU
            labels are always checked at once. Default: ``'deferred'``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. With
            ``weight_power > 0`` the mean divides by this rank's share of
            mmseg's denominator over the pixels of all ranks, so that DDP's
            averaged gradients are one process's on all their images;
            otherwise by this rank's own, as mmseg's (docs/arb_loss.md,
            "Many GPUs give the gradients of one"). Default: ``'mean'``.
        class_weight (list[float] | str, optional): Per-class loss weight,
            or a file to read it from (as ``CrossEntropyLoss``).
            Default: None.
        loss_weight (float): Multiplier of the loss. Default: 1.0.
        loss_name (str): Name of the loss in the log; must start with
            ``'loss_'`` to be back-propagated. Default: ``'loss_arb'``.
        avg_non_ignore (bool): Average over non-ignored pixels only.
            Default: False.
        use_sigmoid (bool): Accepted for configs written for
            ``CrossEntropyLoss``; must be False.
        use_mask (bool): Accepted likewise; must be False.
    """

    # A static class weight is configuration, kept float32 like the loss's
    # arithmetic (model.half() would round it, and make one above 65504
    # inf).
    fixed_dtypes = {'class_weight': torch.float32}

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
                 label_check: str = 'deferred',
                 reduction: str = 'mean',
                 class_weight: Optional[Union[Sequence[float], str]] = None,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_arb',
                 avg_non_ignore: bool = False,
                 use_sigmoid: bool = False,
                 use_mask: bool = False) -> None:
        super().__init__()
        if use_sigmoid or use_mask:
            raise ValueError(
                'ARBLoss is a softmax loss: use_sigmoid=True / use_mask=True '
                'are not supported (remove them from loss_decode)')
        if reduction not in REDUCTIONS:
            raise ValueError(f'reduction must be one of {REDUCTIONS}, '
                             f'got {reduction!r}')
        if not loss_name.startswith('loss_'):
            raise ValueError(f"loss_name must start with 'loss_' or mmseg "
                             f'will not back-propagate it, got {loss_name!r}')
        self.estimator = ClassCountEstimator(
            count_mode=count_mode,
            num_classes=num_classes,
            momentum=momentum,
            class_counts=class_counts,
            smoothing=smoothing,
            tau=tau,
            weight_power=weight_power,
            max_weight_ratio=max_weight_ratio,
            dist_sync=dist_sync,
            share_step_counts=share_step_counts,
            label_check=label_check)
        self.reduction = reduction
        weight = load_class_weight(class_weight)
        # A buffer so that it moves with the model (no copy per step), but
        # not saved: it is configuration, not state.
        self.register_buffer(
            'class_weight',
            None if weight is None else torch.tensor(
                weight, dtype=torch.float32),
            persistent=False)
        self.loss_weight = loss_weight
        self.avg_non_ignore = avg_non_ignore
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        """Name of the loss item in the log (``loss_`` prefix: trained)."""
        return self._loss_name

    def extra_repr(self) -> str:
        return (f'reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}, '
                f'avg_non_ignore={self.avg_non_ignore}')

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[str] = None,
                ignore_index: int = 255,
                **kwargs: Any) -> Tensor:
        """Count ``label``, then compute the weighted ARB-Loss.

        Args:
            cls_score (Tensor): Logits (N, C, H, W) or (N, C).
            label (Tensor): Labels (N, H, W) or (N,), integer.
            weight (Tensor, optional): Per-pixel weight. Default: None.
            avg_factor (float | Tensor, optional): Mean denominator,
                instead of the loss's own (as given: per rank).
            reduction_override (str, optional): Overrides ``reduction``.
            ignore_index (int): Label value that gets no loss and is not
                counted. Default: 255.
            **kwargs: Accepted and unused, as by mmseg's other losses.

        Returns:
            Tensor: The loss multiplied by ``loss_weight``.
        """
        reduction = reduction_override or self.reduction
        check_reduction(reduction, avg_factor)
        # The labels' dtype and range are checked by the estimator, before
        # it counts them.
        check_logits_fit_label(cls_score, label)
        num_classes = cls_score.shape[1]
        check_class_weight(self.class_weight, num_classes)
        # With count-driven weights the denominator is this rank's share of
        # that of all ranks; otherwise None: its own, as mmseg's.
        shift, class_weight, denominator = self.estimator(
            label, num_classes, ignore_index, self.class_weight,
            self.avg_non_ignore)
        return _shifted_loss(cls_score, label, shift, weight, class_weight,
                             reduction, avg_factor, ignore_index,
                             self.avg_non_ignore, self.loss_weight,
                             denominator)
