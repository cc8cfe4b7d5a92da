"""Per-class pixel counting of label maps, and the count-state update.

``count_classes`` runs the CUDA kernel (``csrc/arb_kernels.cu``) for CUDA
tensors when it can be loaded (see :mod:`mmseg_arb.ops.cuda_ext`) and the
pure-PyTorch implementation otherwise. Both return the same thing: exact
per-class counts of the valid pixels and the number of out-of-range pixels,
as device tensors, without synchronising the host.
"""
from typing import Tuple

import torch
from torch import Tensor

from .cuda_ext import load_cuda_ops

# Count-state updates, numbered as the kernel's CountUpdate.
UPDATE_MODES = {'replace': 0, 'accumulate': 1, 'moving_average': 2}
_KERNEL_LABEL_DTYPES = (torch.int64, torch.int32, torch.uint8)


def check_label_dtype(label: Tensor) -> None:
    """Raise ``TypeError`` unless ``label`` holds integers."""
    if label.dtype.is_floating_point or label.dtype.is_complex or \
            label.dtype == torch.bool:
        raise TypeError(
            f'labels must be an integer tensor (int64, int32, uint8, ...), '
            f'got {label.dtype}')


def label_masks(label: Tensor, num_classes: int,
                ignore_index: int) -> Tuple[Tensor, Tensor]:
    """Boolean masks ``(valid, invalid)`` of a label tensor.

    A pixel is valid when its label is in ``[0, num_classes)`` and is not
    ``ignore_index``; invalid when it is neither in range nor
    ``ignore_index``. (An ``ignore_index`` inside the range masks that class.)
    """
    in_range = (label >= 0) & (label < num_classes)
    ignored = label == ignore_index
    return in_range & ~ignored, ~in_range & ~ignored


def count_classes_pytorch(label: Tensor, num_classes: int,
                          ignore_index: int) -> Tuple[Tensor, Tensor]:
    """Reference backend of :func:`count_classes` in plain PyTorch.

    Ignored and out-of-range pixels are routed to an extra bin ``C`` so that
    no boolean indexing (a host sync on GPU) is needed. On CPU
    ``torch.bincount`` is the fastest kernel; elsewhere ``scatter_add_`` is
    used because ``bincount`` reads its input's maximum back to the host.
    """
    flat = label.reshape(-1)
    valid, invalid = label_masks(flat, num_classes, ignore_index)
    bins = torch.where(valid, flat.long(), num_classes)
    if flat.device.type == 'cpu':
        counts = torch.bincount(bins, minlength=num_classes + 1)
    else:
        counts = torch.zeros(
            num_classes + 1, dtype=torch.int64, device=flat.device)
        counts.scatter_add_(0, bins, torch.ones_like(bins))
    return counts[:num_classes], invalid.sum()


def count_classes(label: Tensor, num_classes: int,
                  ignore_index: int = 255) -> Tuple[Tensor, Tensor]:
    """Count pixels per class, skipping ``ignore_index``.

    Args:
        label (Tensor): Integer labels of any shape (int64, int32, uint8...).
        num_classes (int): Number of classes ``C``; labels must lie in
            ``[0, C)`` unless equal to ``ignore_index``.
        ignore_index (int): Label value that is not counted. Default: 255.

    Returns:
        tuple[Tensor, Tensor]: ``counts`` (int64, shape ``(C,)``) on the
        label's device, and ``num_invalid`` (int64 scalar), the number of
        pixels whose label is neither in ``[0, C)`` nor ``ignore_index``.
        Neither is read back to the host here; the caller decides when.

    Raises:
        TypeError: If ``label`` is not an integer tensor.
        ValueError: If ``num_classes`` is not positive.
    """
    check_label_dtype(label)
    if num_classes <= 0:
        raise ValueError(f'num_classes must be positive, got {num_classes}')
    if label.is_cuda and label.dtype in _KERNEL_LABEL_DTYPES and \
            load_cuda_ops():
        return torch.ops.mmseg_arb.count_classes(label, num_classes,
                                                 ignore_index)
    return count_classes_pytorch(label, num_classes, ignore_index)


def update_count_state_(state: Tensor, batch: Tensor, mode: str,
                        momentum: float = 0.0) -> Tensor:
    """Fold int64 batch counts into the float64 ``state`` in place.

    ``mode``: ``'replace'`` (state = batch), ``'accumulate'``
    (state += batch) or ``'moving_average'``
    (state = (1 - momentum) * state + momentum * batch). One tiny kernel
    launch on CUDA when the extension is loaded.
    """
    if state.is_cuda and load_cuda_ops():
        torch.ops.mmseg_arb.update_counts(state, batch, UPDATE_MODES[mode],
                                          momentum)
    elif mode == 'replace':
        state.copy_(batch)
    elif mode == 'accumulate':
        state.add_(batch)
    else:
        state.mul_(1.0 - momentum).add_(batch, alpha=momentum)
    return state
