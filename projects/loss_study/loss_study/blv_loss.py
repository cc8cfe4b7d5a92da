"""BLV, Balancing Logit Variation (Wang et al., CVPR 2023, arXiv
2306.02061): cross-entropy on logits perturbed during training by noise
that grows with a class's rarity.

For pixel ``i`` and class ``c``, with training pixel counts ``n`` and
``N = sum(n)``::

    z'_ic = z_ic + |delta_ic| * s_c,  delta_ic ~ N(0, sigma) clamped to [-1, 1]
    s_c   = (log N - log n_c) / max_j (log N - log n_j)

so the rarest class gets up to 1 (in logit units) and a frequent one
little. This is the form of the authors' public mmseg implementation (the
paper writes the scale as a normalised ``-log`` frequency; ``log n_max -
log n_c`` would give the most frequent class no noise at all, the public
code gives it ``log(N / n_max) / max``). The noise exists only in the
loss: inference sees the raw logits. The study's configuration of the
published method, written from its description, not copied.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn

from mmseg_arb.utils import load_class_counts
from .pixel_loss import reduce_pixel_loss, valid_labels


def blv_scale(counts: Tensor) -> Tensor:
    """``s_c``: ``-log`` frequency divided by its maximum, in [0, 1].

    A class without pixels gets 1, as the rarest class (the public code
    would take ``log 0``); a class holding every pixel gets 0 (not 0 / 0).
    Equal counts give every class 1: the same variation for all.
    """
    counts = counts.to(torch.float64)
    if counts.sum() <= 0:
        raise ValueError('BLV needs class counts with some pixels')
    present = counts > 0
    rarity = torch.log(counts.sum()) - torch.log(counts.clamp_min(1e-300))
    top = rarity[present].max()
    if top <= 0:  # one class holds every pixel
        return (~present).to(counts.dtype)
    return torch.where(present, rarity / top, torch.ones_like(counts))


@MODELS.register_module()
class BLVLoss(nn.Module):
    """Cross-entropy with BLV's training-time logit variation.

    Args:
        class_counts: Training pixel counts per class (a list, or the path
            of a class-statistics JSON as ``tools/class_stats.py`` writes).
        sigma (float): Standard deviation of ``delta`` (the public code's
            default is 4; with the clamp to [-1, 1] larger values make
            ``|delta|`` nearly always 1).
        avg_non_ignore (bool): Average over labelled pixels only (mmseg's
            CrossEntropyLoss option). Default: False.
        loss_weight (float): Multiplier of the loss.
        loss_name (str): Name in the logs.
    """

    def __init__(self,
                 class_counts: Union[str, Sequence[float]],
                 sigma: float = 4.0,
                 avg_non_ignore: bool = False,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_blv') -> None:
        super().__init__()
        if not sigma > 0:
            raise ValueError(f'sigma must be positive, got {sigma}')
        self.sigma = float(sigma)
        self.avg_non_ignore = avg_non_ignore
        self.loss_weight = loss_weight
        self._loss_name = loss_name
        scale = blv_scale(load_class_counts(class_counts))
        self.register_buffer('scale', scale.float(), persistent=False)

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor=None,
                reduction_override: Optional[str] = None,
                ignore_index: int = 255,
                **kwargs) -> Tensor:
        if pred.shape[1] != self.scale.numel():
            raise ValueError(f'BLVLoss has counts of {self.scale.numel()} '
                             f'classes but the logits have {pred.shape[1]}')
        reduction = reduction_override or 'mean'
        delta = torch.randn(
            pred.shape, device=pred.device, dtype=pred.dtype) * self.sigma
        shape = (1, -1) + (1, ) * (pred.dim() - 2)
        shifted = pred + delta.clamp(-1, 1).abs() * \
            self.scale.to(pred.dtype).view(shape)
        valid, safe = valid_labels(target, pred.shape[1], ignore_index)
        loss = F.cross_entropy(shifted, safe, reduction='none') * valid
        return self.loss_weight * reduce_pixel_loss(
            loss, target, ignore_index, weight, reduction, avg_factor,
            self.avg_non_ignore)

    @property
    def loss_name(self) -> str:
        return self._loss_name
