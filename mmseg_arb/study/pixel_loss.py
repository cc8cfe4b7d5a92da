"""What the study's pixel losses share with mmseg's ``CrossEntropyLoss``:
the reduction (mean over all pixels of the batch, ignored pixels
contributing 0, ``avg_non_ignore`` to average over the labelled ones
only), the per-pixel ``weight`` of a sampler, ``avg_factor`` and
``reduction_override``."""
from typing import Optional, Union

import torch
from mmseg.models.losses.utils import weight_reduce_loss
from torch import Tensor


def reduce_pixel_loss(loss: Tensor, label: Tensor, ignore_index: int,
                      weight: Optional[Tensor], reduction: str,
                      avg_factor: Optional[Union[float, Tensor]],
                      avg_non_ignore: bool) -> Tensor:
    """Reduce a per-pixel loss ``(N, ...)`` (0 at ignored pixels) as mmseg's
    cross-entropy does."""
    if weight is not None:
        weight = weight.float()
    if avg_factor is None and avg_non_ignore and reduction == 'mean':
        avg_factor = (label != ignore_index).sum().clamp_min(1).float()
    return weight_reduce_loss(loss, weight=weight, reduction=reduction,
                              avg_factor=avg_factor)


def load_counts(class_counts) -> Tensor:
    """Per-class pixel counts (a list, or a class-statistics JSON path)."""
    from ..utils.class_counts import load_class_counts
    return load_class_counts(class_counts)


def valid_labels(label: Tensor, ignore_index: int):
    """The labelled-pixel mask and the labels with ignored pixels at 0."""
    valid = label != ignore_index
    return valid, torch.where(valid, label, torch.zeros_like(label))
