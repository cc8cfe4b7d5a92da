"""Per-class pixel counting of label maps, and the count-state update.

``class_histogram`` runs the CUDA kernel (``csrc/arb_kernels.cu``) for CUDA
tensors when it can be loaded (see :mod:`mmseg_arb.ops.cuda_ext`) and the
pure-PyTorch implementation otherwise. Both return the same thing: exact
per-class counts of the valid pixels followed by the number of out-of-range
pixels, in one device tensor (one buffer to sum across GPUs), without
synchronising the host.
"""
from typing import Tuple

import torch
from torch import Tensor

from . import cuda_ext

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


def class_histogram_pytorch(label: Tensor, num_classes: int,
                            ignore_index: int) -> Tensor:
    """Reference backend of :func:`class_histogram` in plain PyTorch.

    Out-of-range pixels go to bin ``C`` and ignored ones to an extra bin
    ``C + 1``, dropped at the end, so that no boolean indexing (a host sync
    on GPU) is needed. On CPU ``torch.bincount`` is the fastest kernel;
    elsewhere ``scatter_add_`` is used because ``bincount`` reads its
    input's maximum back to the host.
    """
    flat = label.reshape(-1)
    valid, invalid = label_masks(flat, num_classes, ignore_index)
    bins = torch.where(valid, flat.long(),
                       torch.where(invalid, num_classes, num_classes + 1))
    if flat.device.type == 'cpu':
        hist = torch.bincount(bins, minlength=num_classes + 2)
    else:
        hist = torch.zeros(
            num_classes + 2, dtype=torch.int64, device=flat.device)
        hist.scatter_add_(0, bins, torch.ones_like(bins))
    return hist[:num_classes + 1]


def class_histogram(label: Tensor, num_classes: int,
                    ignore_index: int = 255) -> Tensor:
    """Count pixels per class, skipping ``ignore_index``; count bad labels.

    Args:
        label (Tensor): Integer labels of any shape (int64, int32, uint8...).
        num_classes (int): Number of classes ``C``; labels must lie in
            ``[0, C)`` unless equal to ``ignore_index``.
        ignore_index (int): Label value that is not counted. Default: 255.

    Returns:
        Tensor: int64 ``(C + 1,)`` on the label's device: the pixels of each
        class ``0 .. C-1``, then the number of pixels whose label is neither
        in ``[0, C)`` nor ``ignore_index``. Not read back to the host here;
        the caller decides when.

    Raises:
        TypeError: If ``label`` is not an integer tensor.
        ValueError: If ``num_classes`` is not positive.
    """
    check_label_dtype(label)
    if num_classes <= 0:
        raise ValueError(f'num_classes must be positive, got {num_classes}')
    if label.dtype in _KERNEL_LABEL_DTYPES and \
            cuda_ext.cuda_ops_apply(label):
        return torch.ops.mmseg_arb.class_histogram(label, num_classes,
                                                   ignore_index)
    return class_histogram_pytorch(label, num_classes, ignore_index)


def count_classes(label: Tensor, num_classes: int,
                  ignore_index: int = 255) -> Tuple[Tensor, Tensor]:
    """:func:`class_histogram` split into ``counts`` (int64 ``(C,)``) and
    ``num_invalid`` (int64 scalar, the out-of-range pixels)."""
    hist = class_histogram(label, num_classes, ignore_index)
    return hist[:num_classes], hist[num_classes]


def update_count_state_(state: Tensor, batch: Tensor, mode: str,
                        momentum: float = 0.0) -> Tensor:
    """Fold int64 batch counts into the float64 ``state`` in place.

    ``mode``: ``'replace'`` (state = batch), ``'accumulate'``
    (state += batch) or ``'moving_average'``
    (state = (1 - momentum) * state + momentum * batch). One tiny kernel
    launch on CUDA when the extension is loaded.
    """
    if cuda_ext.cuda_ops_apply(state):
        torch.ops.mmseg_arb.update_counts(state, batch, UPDATE_MODES[mode],
                                          momentum)
    elif mode == 'replace':
        state.copy_(batch)
    elif mode == 'accumulate':
        state.add_(batch)
    else:
        state.mul_(1.0 - momentum).add_(batch, alpha=momentum)
    return state
