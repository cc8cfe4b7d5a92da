"""Per-class pixel counting of label maps.

``class_histogram`` runs the CUDA kernel (``csrc/arb_kernels.cu``) for CUDA
tensors when it can be loaded (see :mod:`mmseg_arb.ops.cuda_ext`) and the
pure-PyTorch implementation otherwise. Both return the same histogram in one
device tensor, without synchronising the host, laid out as
:mod:`~mmseg_arb.ops.histogram_layout` defines.
"""
from typing import Tuple

import torch
from torch import Tensor

from . import cuda_ext
from .histogram_layout import (CLASSES_FROM, bad_label_entries, histogram_size,
                               pixel_total)

KERNEL_LABEL_DTYPES = (torch.int64, torch.int32, torch.uint8)


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
    in_range = (label >= 0) & _less_than(label, num_classes)
    if _representable(label, ignore_index):
        ignored = label == ignore_index
    else:  # e.g. -1 with uint8 labels, which would wrap round to 255
        ignored = torch.zeros_like(label, dtype=torch.bool)
    return in_range & ~ignored, ~in_range & ~ignored


def _representable(label: Tensor, value: int) -> bool:
    info = torch.iinfo(label.dtype)
    return info.min <= value <= info.max


def _less_than(label: Tensor, bound: int) -> Tensor:
    # A comparison with a number the dtype cannot hold wraps it round
    # (uint8 < 20000 is uint8 < 32); such a bound is above every label.
    if _representable(label, bound):
        return label < bound
    return torch.ones_like(label, dtype=torch.bool)


def class_histogram_pytorch(label: Tensor, num_classes: int,
                            ignore_index: int) -> Tensor:
    """PyTorch backend of :func:`class_histogram`.

    On CPU ``torch.bincount`` is the fastest kernel; elsewhere
    ``scatter_add_`` is used because ``bincount`` reads its input's maximum
    back to the host.
    """
    flat = label.reshape(-1)
    valid, invalid = label_masks(flat, num_classes, ignore_index)
    wide = flat.long()
    size = histogram_size(num_classes)
    # Class c counts in bin CLASSES_FROM + c, bad pixels in the bin after
    # the classes, ignored ones in a spare bin after the extremes, dropped:
    # no boolean indexing (a host sync on GPU).
    bins = torch.where(valid, wide + CLASSES_FROM,
                       torch.where(invalid, num_classes + CLASSES_FROM, size))
    if flat.device.type == 'cpu':
        hist = torch.bincount(bins, minlength=size + 1)[:size]
    else:
        hist = torch.zeros(size + 1, dtype=torch.int64, device=flat.device)
        hist = hist.scatter_add_(0, bins, torch.ones_like(bins))[:size]
    pixel_total(hist).fill_(flat.numel())
    bad = bad_label_entries(hist)
    # Reading a CPU value stalls nothing: find the extremes only when there
    # are bad labels (two more passes over the labels otherwise).
    if flat.device.type == 'cpu' and not bad[0]:
        return hist
    # amax of an empty tensor is an error: a zero in front keeps it defined
    # and is the "none" value of both extremes.
    zero = wide.new_zeros(1)
    above = torch.cat([zero, torch.where(invalid, wide, 0)]).amax()
    # -INT64_MIN does not exist: that label reads as -INT64_MAX.
    negated = -wide.clamp_min(-torch.iinfo(torch.int64).max)
    below = torch.cat([zero, torch.where(invalid, negated, 0)]).amax()
    bad[1:].copy_(torch.stack([above, below]))
    return hist


def class_histogram(label: Tensor,
                    num_classes: int,
                    ignore_index: int = 255) -> Tensor:
    """Count pixels per class, skipping ``ignore_index``; count bad labels.

    Args:
        label (Tensor): Integer labels of any shape (int64, int32, uint8...).
        num_classes (int): Number of classes ``C``; labels must lie in
            ``[0, C)`` unless equal to ``ignore_index``.
        ignore_index (int): Label value that is not counted. Default: 255.

    Returns:
        Tensor: int64 ``(C + 4,)`` on the label's device, laid out as
        :mod:`~mmseg_arb.ops.histogram_layout` says. Not read back to the
        host here; the caller decides when.

    Raises:
        TypeError: If ``label`` is not an integer tensor.
        ValueError: If ``num_classes`` is not positive.
    """
    check_label_dtype(label)
    if num_classes <= 0:
        raise ValueError(f'num_classes must be positive, got {num_classes}')
    if label.dtype in KERNEL_LABEL_DTYPES and \
            cuda_ext.cuda_ops_apply(label):
        return torch.ops.mmseg_arb.class_histogram(label, num_classes,
                                                   ignore_index)
    return class_histogram_pytorch(label, num_classes, ignore_index)
