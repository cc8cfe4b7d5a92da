"""The fused CUDA ARB-Loss as an autograd function.

PyTorch's path, ``F.cross_entropy(logits + shift)``, writes the shifted
logits and the log-softmax (saved for backward), then in backward a dense
one-hot gradient and the log-softmax gradient: several passes over the
(N, C, H, W) tensor. The fused kernels read the logits once in forward
(saving only a per-pixel log-sum-exp) and once in backward, writing the
gradient directly.
"""
from typing import Optional

import torch
from torch import Tensor

FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class _FusedARBCrossEntropy(torch.autograd.Function):

    @staticmethod
    def forward(ctx, logits: Tensor, label: Tensor, shift: Tensor,
                class_weight: Optional[Tensor], ignore_index: int) -> Tensor:
        logits, label = logits.contiguous(), label.contiguous()
        loss, lse = torch.ops.mmseg_arb.arb_loss_forward(
            logits, label, shift, class_weight, ignore_index)
        ctx.save_for_backward(logits, label, shift, class_weight, lse)
        ctx.ignore_index = ignore_index
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        logits, label, shift, class_weight, lse = ctx.saved_tensors
        grad = torch.ops.mmseg_arb.arb_loss_backward(
            grad_loss, logits, label, shift, class_weight, lse,
            ctx.ignore_index)
        return grad, None, None, None, None


def fused_arb_cross_entropy(logits: Tensor, label: Tensor, shift: Tensor,
                            class_weight: Optional[Tensor],
                            ignore_index: int) -> Tensor:
    """Per-pixel ``(lse(z + shift) - z_y - shift_y) * class_weight[y]``.

    Args:
        logits (Tensor): CUDA (N, C, ...) float32/float16/bfloat16.
        label (Tensor): (N, ...) int64/int32/uint8. Labels that are
            ``ignore_index`` or outside ``[0, C)`` get loss and gradient 0
            (reporting bad labels is the count estimator's job).
        shift (Tensor): float32 (C,) log-counts.
        class_weight (Tensor, optional): float32 (C,).
        ignore_index (int): Ignored label.

    Returns:
        Tensor: float32 per-pixel loss of the label's shape.
    """
    return _FusedARBCrossEntropy.apply(logits, label, shift, class_weight,
                                       ignore_index)
