"""Per-class pixel counting of label maps: the one op the count estimator needs.

``count_classes`` is the seam between the estimator and its backends. This
module holds the pure-PyTorch backend; a compiled backend registers itself
through :func:`register_backend` and takes over for the devices it supports.
Every backend must return the same thing: exact per-class counts of the
valid pixels and the number of out-of-range pixels, both as device tensors,
without synchronising the host.
"""
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor

CountFn = Callable[[Tensor, int, int], Tuple[Tensor, Tensor]]

# device type ('cuda', ...) -> counting function of a compiled backend.
_BACKENDS: Dict[str, CountFn] = {}


def register_backend(device_type: str, fn: CountFn) -> None:
    """Route :func:`count_classes` for ``device_type`` tensors to ``fn``."""
    _BACKENDS[device_type] = fn


def backend_name(device_type: str) -> str:
    """Which implementation counts labels on ``device_type``."""
    fn = _BACKENDS.get(device_type)
    return 'pytorch' if fn is None else getattr(fn, '__qualname__', repr(fn))


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
    backend = _BACKENDS.get(label.device.type, count_classes_pytorch)
    return backend(label, num_classes, ignore_index)
