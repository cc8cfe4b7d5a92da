"""mmseg's ``FocalLoss`` in a form that trains on CPU: the loss study's
nearest working variant of the focal-loss row.

mmseg 1.2.2's ``FocalLoss`` takes class-index labels on GPU (mmcv's kernel
expands them), but on CPU it keeps the wrong column of their one-hot
encoding (``target[:, num_classes]`` for ``[:, :num_classes]``,
open-mmlab/mmsegmentation#3249) and fails on a shape mismatch at the first
iteration. Given one-hot targets it works on both devices; only its own
``ignore_index`` handling is lost with them, so ignored pixels are carried
as a zero per-pixel weight instead.
"""
import torch
import torch.nn.functional as F
from mmseg.models.losses import FocalLoss
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class OneHotFocalLoss(FocalLoss):
    """``FocalLoss`` (same arguments) fed one-hot targets: on CPU it then
    computes what mmseg's GPU path computes from index labels, the sigmoid
    focal loss of every (pixel, class) pair, ignored pixels weighted 0,
    averaged over all pairs."""

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight=None,
                avg_factor=None,
                reduction_override=None,
                ignore_index: int = 255,
                **kwargs) -> Tensor:
        valid = target != ignore_index
        one_hot = F.one_hot(torch.where(valid, target, 0), pred.shape[1])
        one_hot = one_hot.movedim(-1, 1).to(pred.dtype)
        pixel_weight = valid.to(pred.dtype)
        if weight is not None:  # e.g. an OHEM sampler's
            pixel_weight = pixel_weight * weight
        # FocalLoss flattens pixels to rows; a per-row weight is (P,).
        return super().forward(
            pred, one_hot, weight=pixel_weight.reshape(-1),
            avg_factor=avg_factor, reduction_override=reduction_override,
            ignore_index=ignore_index)
