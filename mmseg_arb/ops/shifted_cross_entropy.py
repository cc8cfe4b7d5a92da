"""Cross-entropy on shifted logits in plain PyTorch, with a lean backward.

The PyTorch counterpart of :func:`fused_arb_loss` before its reduction,
used on CPU and wherever the CUDA kernels are not loaded. Against
``F.cross_entropy(logits + shift)`` it saves a pass and a logits-sized
buffer in backward: the gradient ``(softmax - onehot) * g`` is formed from
the saved log-softmax directly, instead of NLL's zero-filled one-hot
gradient followed by the log-softmax backward.
"""
from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .class_count import label_masks

CLASS_WEIGHT_GRAD = (
    'class_weight requires grad, but ARB-Loss gives class weights no '
    'gradient (they are configuration, or come from the class counts): '
    'pass class_weight.detach(); to learn weights per class, multiply the '
    "per-pixel loss of reduction='none' by them yourself")


def asks_for_grad(tensor: Optional[Tensor]) -> bool:
    """Whether ``tensor`` would get a gradient from what is computed now."""
    return tensor is not None and tensor.requires_grad and \
        torch.is_grad_enabled()


class _ShiftedCrossEntropy(torch.autograd.Function):

    @staticmethod
    def forward(ctx, logits: Tensor, label: Tensor, shift: Tensor,
                class_weight: Optional[Tensor], ignore_index: int) -> Tensor:
        num_classes = logits.shape[1]
        shift = shift.view((1, num_classes) + (1, ) * (logits.dim() - 2))
        # Type promotion: fp16/bf16 logits give an fp32 sum, in one pass.
        log_prob = torch.log_softmax(logits + shift, dim=1)
        valid, _ = label_masks(label, num_classes, ignore_index)
        target = torch.where(valid, label, 0).long().unsqueeze(1)
        if class_weight is None:
            weight = valid.to(log_prob.dtype)
        else:
            weight = torch.where(valid,
                                 class_weight.to(log_prob.dtype)[target[:, 0]],
                                 0.0)
        loss = -log_prob.gather(1, target)[:, 0] * weight
        ctx.save_for_backward(log_prob, target, weight)
        ctx.logits_dtype = logits.dtype
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor):
        log_prob, target, weight = ctx.saved_tensors
        g = (grad_loss * weight).unsqueeze(1)
        grad = torch.exp(log_prob)
        grad.mul_(g)
        grad.scatter_add_(1, target, -g)
        return grad.to(ctx.logits_dtype), None, None, None, None


def shifted_cross_entropy(logits: Tensor, label: Tensor, shift: Tensor,
                          class_weight: Optional[Tensor],
                          ignore_index: int) -> Tensor:
    """Per-pixel ``-log_softmax(logits + shift)[y] * class_weight[y]``.

    Args:
        logits (Tensor): (N, C, ...) floating point.
        label (Tensor): (N, ...) integer labels. Labels that are
            ``ignore_index`` or outside ``[0, C)`` get loss and gradient 0
            (callers check the range; :class:`ARBLoss` does).
        shift (Tensor): (C,) log-counts.
        class_weight (Tensor, optional): (C,) per-class weight. It gets no
            gradient: one that requires grad is an error.
        ignore_index (int): Ignored label.

    Returns:
        Tensor: Per-pixel loss of the label's shape, in the promoted dtype
        of logits and shift (at least fp32).
    """
    if asks_for_grad(class_weight):
        raise ValueError(CLASS_WEIGHT_GRAD)
    return _ShiftedCrossEntropy.apply(logits, label, shift, class_weight,
                                      ignore_index)
