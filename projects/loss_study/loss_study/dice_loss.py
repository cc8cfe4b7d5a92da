"""A Dice loss averaged over classes, on softmax probabilities: what
"Dice loss" means in most segmentation papers, and not what mmseg 1.2.2's
``DiceLoss`` computes (sigmoid by default, and one V-Net Dice per image
over all C x H x W entries pooled, so the frequent classes dominate it).

Per class ``c`` over the labelled pixels of the batch (batch Dice)::

    dice_c = (2 sum_i p_ic y_ic + smooth) / (sum_i p_ic + sum_i y_ic + smooth)
    loss   = mean_c (1 - dice_c)

Every class weighs the same, whatever its pixel count: a rebalancing loss.
"""
from typing import Optional

import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn

from .pixel_loss import valid_labels


@MODELS.register_module()
class ClassAveragedDiceLoss(nn.Module):
    """Softmax Dice per class over the batch, averaged over all classes.

    Args:
        smooth (float): Added to numerator and denominator; a class absent
            from the batch then scores 1 only if it is not predicted.
        loss_weight (float): Multiplier of the loss.
        loss_name (str): Name in the logs.
    """

    def __init__(self,
                 smooth: float = 1.0,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_dice') -> None:
        super().__init__()
        self.smooth = smooth
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor=None,
                reduction_override: Optional[str] = None,
                ignore_index: int = 255,
                **kwargs) -> Tensor:
        valid, safe = valid_labels(target, pred.shape[1], ignore_index)
        mask = valid.unsqueeze(1).to(pred.dtype)
        if weight is not None:  # a sampler's per-pixel weight
            mask = mask * weight.reshape(valid.shape).unsqueeze(1)
        prob = pred.softmax(dim=1) * mask
        onehot = F.one_hot(safe, pred.shape[1]).movedim(-1, 1) * mask
        dims = [0] + list(range(2, pred.dim()))
        inter = (prob * onehot).sum(dims)
        total = prob.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (total + self.smooth)
        return self.loss_weight * (1 - dice).mean()

    @property
    def loss_name(self) -> str:
        return self._loss_name
