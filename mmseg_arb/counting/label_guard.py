"""Reporting out-of-range labels without stalling the GPU.

Reading a device value on the host waits for every kernel queued before it,
so checking labels with ``.item()`` each step would serialise the training
loop. The guard below keeps a running device-side total of bad pixels and
copies it to pinned host memory asynchronously; a later step reads the copy
once its CUDA event has completed (``Event.query`` never blocks). A bad batch
is therefore reported one or a few iterations late, by count rather than by
value, and never silently. CPU tensors are checked at once (no sync to save),
and ``policy='sync'`` checks GPU labels at once too, for debugging.
"""
from typing import Optional

import torch
from torch import Tensor

from ..ops.class_count import label_masks

LABEL_CHECK_POLICIES = ('deferred', 'sync')


class LabelRangeError(ValueError):
    """Labels outside ``[0, num_classes)`` that are not ``ignore_index``."""


def _message(num_bad: int, num_classes: int, ignore_index: int,
             detail: str = '') -> str:
    return (f'{num_bad} label pixel(s) are outside [0, {num_classes}) and '
            f'are not ignore_index={ignore_index}{detail}. Check the '
            f'dataset\'s label mapping (e.g. reduce_zero_label) and the '
            f'decode head\'s num_classes.')


class LabelRangeGuard:
    """Raises :class:`LabelRangeError` when bad labels were counted.

    Args:
        policy (str): ``'deferred'`` (default) checks GPU counts
            asynchronously, reporting within a few iterations at no sync
            cost; ``'sync'`` reads them at once (one host sync per step).
            CPU counts are always checked at once.
    """

    def __init__(self, policy: str = 'deferred') -> None:
        if policy not in LABEL_CHECK_POLICIES:
            raise ValueError(f'label_check must be one of '
                             f'{LABEL_CHECK_POLICIES}, got {policy!r}')
        self.policy = policy
        self._device_total: Optional[Tensor] = None
        self._host_copy: Optional[Tensor] = None
        self._copy_done: Optional['torch.cuda.Event'] = None
        self._context = (0, 0)

    def observe(self, num_invalid: Tensor, num_classes: int,
                ignore_index: int, label: Optional[Tensor] = None) -> None:
        """Record this step's count of bad pixels and raise if any is known.

        Args:
            num_invalid (Tensor): int64 scalar on the labels' device.
            num_classes (int): ``C`` of the valid range, for the message.
            ignore_index (int): The ignored label, for the message.
            label (Tensor, optional): The labels, used only to name offending
                values when the check is immediate.
        """
        if num_invalid.device.type != 'cuda' or self.policy == 'sync':
            _raise_if_bad(int(num_invalid), num_classes, ignore_index, label)
            return
        self._context = (num_classes, ignore_index)
        if self._device_total is None or \
                self._device_total.device != num_invalid.device:
            self._device_total = torch.zeros_like(num_invalid)
            self._host_copy = torch.zeros((), dtype=num_invalid.dtype,
                                          pin_memory=True)
            self._copy_done = torch.cuda.Event()
        self._device_total.add_(num_invalid)
        if self._copy_done.query():
            self._raise_if_reported()
            self._host_copy.copy_(self._device_total, non_blocking=True)
            self._copy_done.record()

    def flush(self) -> None:
        """Wait for the pending copy and raise if it reports bad labels."""
        if self._copy_done is not None:
            self._copy_done.synchronize()
            self._raise_if_reported()
            self._host_copy.copy_(self._device_total)
            self._raise_if_reported()

    def _raise_if_reported(self) -> None:
        num_bad = int(self._host_copy)
        if num_bad:
            raise LabelRangeError(
                _message(num_bad, *self._context,
                         ' (counted on the GPU in the last few iterations; '
                         "set label_check='sync' to stop at the bad batch)"))


def check_labels_now(label: Tensor, num_classes: int,
                     ignore_index: int) -> None:
    """Raise :class:`LabelRangeError` if ``label`` has a value outside
    ``[0, num_classes)`` other than ``ignore_index`` (reads the device)."""
    _, invalid = label_masks(label, num_classes, ignore_index)
    _raise_if_bad(int(invalid.sum()), num_classes, ignore_index, label)


def _raise_if_bad(num_bad: int, num_classes: int, ignore_index: int,
                  label: Optional[Tensor]) -> None:
    if num_bad:
        raise LabelRangeError(
            _message(num_bad, num_classes, ignore_index,
                     _offending_values(label, num_classes, ignore_index)))


def _offending_values(label: Optional[Tensor], num_classes: int,
                      ignore_index: int) -> str:
    if label is None:
        return ''
    _, invalid = label_masks(label, num_classes, ignore_index)
    values = torch.unique(label[invalid])[:8].tolist()
    return f' (values: {values})' if values else ' (on another rank)'
