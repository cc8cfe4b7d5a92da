"""What the study's pixel losses share with mmseg's ``CrossEntropyLoss``:
the labelled-pixel mask (``mmseg_arb``'s :func:`label_masks`, bad labels
refused), and the reduction (mean over all pixels of the batch, ignored
pixels contributing 0, ``avg_non_ignore`` to average over the labelled
ones only) with the per-pixel ``weight`` of a sampler, ``avg_factor`` and
``reduction_override``."""
from typing import Optional, Tuple, Union

import torch
from mmseg.models.losses.utils import weight_reduce_loss
from torch import Tensor

from mmseg_arb.ops import label_masks


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
    return weight_reduce_loss(
        loss, weight=weight, reduction=reduction, avg_factor=avg_factor)


def valid_labels(label: Tensor, num_classes: int,
                 ignore_index: int) -> Tuple[Tensor, Tensor]:
    """The labelled-pixel mask and the labels with ignored pixels at 0.

    Raises:
        ValueError: If a label is neither a class in ``[0, num_classes)``
            nor ``ignore_index`` (it would index out of range, or be
            skipped silently).
    """
    valid, invalid = label_masks(label, num_classes, ignore_index)
    if invalid.any():
        values = torch.unique(label[invalid])[:8].tolist()
        raise ValueError(
            f'labels {values} are outside [0, {num_classes}) and are not '
            f"ignore_index={ignore_index}: check the dataset's label "
            "mapping (reduce_zero_label), its ignore value and the decode "
            "head's num_classes")
    return valid, torch.where(valid, label, torch.zeros_like(label))
