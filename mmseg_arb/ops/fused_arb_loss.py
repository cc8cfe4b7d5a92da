"""The fused CUDA ARB-Loss as an autograd function.

PyTorch's path, ``F.cross_entropy(logits + shift)`` followed by the mean,
writes the shifted logits and the log-softmax (saved for backward), then in
backward a dense one-hot gradient and the log-softmax gradient, plus a
handful of small launches for the weights, the denominator and the scaling:
several passes over the (N, C, H, W) tensor. The fused kernels read the
logits once in forward, saving only two floats per pixel (the softmax's
largest shifted logit and the log of its sum), and reduce the
loss (class and pixel weights, mmseg's mean denominator, ``loss_weight``)
in the same launch and one small one after it; backward reads the logits
once, reads its incoming gradient on the device, and writes the gradient.
"""
from typing import Optional

import torch
from torch import Tensor

from .shifted_cross_entropy import CLASS_WEIGHT_GRAD, asks_for_grad

FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class _FusedARBLoss(torch.autograd.Function):

    @staticmethod
    def forward(ctx, logits: Tensor, label: Tensor, shift: Tensor,
                class_weight: Optional[Tensor], weight: Optional[Tensor],
                ignore_index: int, reduction: str, loss_weight: float,
                avg_non_ignore: bool, denominator: Optional[Tensor]) -> Tensor:
        logits, label = logits.contiguous(), label.contiguous()
        loss, softmax_stats, scale = torch.ops.mmseg_arb.arb_loss_forward(
            logits, label, shift, class_weight, weight, ignore_index,
            reduction, loss_weight, avg_non_ignore, denominator)
        ctx.save_for_backward(logits, label, shift, class_weight, weight,
                              softmax_stats, scale)
        ctx.ignore_index = ignore_index
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        logits, label, shift, class_weight, weight, softmax_stats, scale = \
            ctx.saved_tensors
        grad = torch.ops.mmseg_arb.arb_loss_backward(grad_loss, logits, label,
                                                     shift, class_weight,
                                                     weight, softmax_stats,
                                                     scale, ctx.ignore_index)
        return grad, None, None, None, None, None, None, None, None, None


def fused_arb_loss(logits: Tensor,
                   label: Tensor,
                   shift: Tensor,
                   class_weight: Optional[Tensor] = None,
                   weight: Optional[Tensor] = None,
                   ignore_index: int = 255,
                   reduction: str = 'mean',
                   loss_weight: float = 1.0,
                   avg_non_ignore: bool = False,
                   denominator: Optional[Tensor] = None) -> Tensor:
    """ARB-Loss of CUDA logits for a given shift, reduced in the kernels.

    Per pixel of target ``t``, with ``x = z + shift``: ``(max(x) - x_t +
    log sum_c exp(x_c - max(x))) * class_weight[t] * weight[p]`` (two
    non-negative terms: never below zero), 0 where ``t`` is
    ``ignore_index`` or outside ``[0, C)`` (reporting bad labels is the
    count estimator's job).

    Args:
        logits (Tensor): CUDA (N, C, ...) float32/float16/bfloat16.
        label (Tensor): (N, ...) int64/int32/uint8.
        shift (Tensor): float32 (C,) log-counts.
        class_weight (Tensor, optional): float32 (C,), without gradient
            (as ``weight``: one that requires grad is an error).
        weight (Tensor, optional): float32 per-pixel weight of the label's
            shape (e.g. an OHEM sampler's).
        ignore_index (int): Ignored label.
        reduction (str): ``'none'`` (per pixel), ``'sum'`` or ``'mean'``
            (mmseg's denominator: all pixels, or the labelled ones with
            ``avg_non_ignore``, each counted with its class weight).
        loss_weight (float): Multiplier of the loss.
        avg_non_ignore (bool): See ``reduction``.
        denominator (Tensor, optional): float32, one value on the logits'
            device: the denominator of ``'mean'`` instead of mmseg's (read
            on the device; it gets no gradient).

    Returns:
        Tensor: float32: per pixel of the label's shape for ``'none'``, else
        a scalar, multiplied by ``loss_weight``.
    """
    if asks_for_grad(class_weight):
        raise ValueError(CLASS_WEIGHT_GRAD)
    if asks_for_grad(weight):
        raise ValueError(
            'fused_arb_loss gives no gradient to a per-pixel weight; for a '
            'weight that requires grad use arb_loss or ARBLoss, which take '
            'the PyTorch path for it')
    return _FusedARBLoss.apply(logits, label, shift, class_weight, weight,
                               ignore_index, reduction, loss_weight,
                               avg_non_ignore, denominator)
