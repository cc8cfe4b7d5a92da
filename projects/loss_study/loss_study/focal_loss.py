"""Focal losses of the study.

``SoftmaxFocalLoss``: the multi-class focal loss of Lin et al. (2017) with
a per-class ``alpha``, ``-alpha_y (1 - p_y)^gamma log p_y`` on softmax
probabilities, the form long-tail papers compare against.

mmseg 1.2.2's own ``FocalLoss`` is the sigmoid form with one scalar
``alpha``, and fails on CPU with index labels
(open-mmlab/mmsegmentation#3249).
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn

from .pixel_loss import reduce_pixel_loss, valid_labels


@MODELS.register_module()
class SoftmaxFocalLoss(nn.Module):
    """``-alpha_y (1 - p_y)^gamma log p_y`` per labelled pixel, reduced as
    mmseg's cross-entropy (mean over all pixels, ignored ones 0).

    Args:
        gamma (float): Focusing exponent (0: weighted cross-entropy).
        alpha (list[float], optional): Per-class weight ``alpha_c``; None
            for 1 everywhere.
        avg_non_ignore (bool): Average over labelled pixels only.
        loss_weight (float): Multiplier of the loss.
        loss_name (str): Name in the logs.
    """

    def __init__(self,
                 gamma: float = 2.0,
                 alpha: Optional[Sequence[float]] = None,
                 avg_non_ignore: bool = False,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_focal') -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f'gamma must be >= 0, got {gamma}')
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else torch.tensor(
            [float(a) for a in alpha])
        self.avg_non_ignore = avg_non_ignore
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight=None,
                avg_factor=None,
                reduction_override=None,
                ignore_index: int = 255,
                **kwargs) -> Tensor:
        valid, safe = valid_labels(target, pred.shape[1], ignore_index)
        if pred.dtype not in (torch.float32, torch.float64):
            pred = pred.float()  # half precision: the loss in fp32
        log_p = F.log_softmax(
            pred, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        loss = -(1 - log_p.exp()).pow(self.gamma) * log_p
        if self.alpha is not None:
            if self.alpha.numel() != pred.shape[1]:
                raise ValueError(
                    f'alpha has {self.alpha.numel()} classes but the '
                    f'logits have {pred.shape[1]}')
            loss = loss * self.alpha.to(pred.device)[safe]
        return self.loss_weight * reduce_pixel_loss(
            loss * valid, target, ignore_index, weight, reduction_override
            or 'mean', avg_factor, self.avg_non_ignore)

    @property
    def loss_name(self) -> str:
        return self._loss_name
