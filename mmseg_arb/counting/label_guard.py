"""Reporting bad labels without stalling the GPU.

A *bad* label is neither a class in ``[0, C)`` nor ``ignore_index``: a
wrong ``reduce_zero_label``, a head with too few classes, a dataset whose
ignore value is not the head's. ARB-Loss gives such pixels no loss, so they
must be reported, never silently skipped.

The count kernel finds them in the same pass as the classes (see
:func:`~mmseg_arb.ops.class_count.class_histogram`). Reading that number
on the host each step would stall the training loop, so on a GPU the guard
only accumulates it on the device, summed across ranks, with the extreme
offending values of this rank. It is read where mmengine synchronises
anyway: :class:`~mmseg_arb.engine.hooks.ClassCountHook` reads it after the
iterations that mmengine logs and at the end of training, so every rank
raises at the same iteration. Without that hook (a training loop of one's
own) the guard reads it itself every ``interval`` training steps, one host
read each time. CPU labels are checked at once (there is no device to
stall), and ``policy='sync'`` checks GPU labels at once too.
"""
import logging
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..ops.class_count import label_masks
from ..ops.histogram_layout import bad_label_entries

LABEL_CHECK_POLICIES = ('deferred', 'sync')
# Training steps between the guard's own reads when no hook reads it
# (mmengine's default logging interval).
DEFAULT_INTERVAL = 50


class LabelRangeError(ValueError):
    """Labels outside ``[0, num_classes)`` that are not ``ignore_index``."""


def _raise(message: str) -> None:
    """Log ``message`` as an error through mmengine's current logger (the
    run's log file, where a runner made one) and raise it."""
    try:  # the counting also serves without mmengine (torch alone)
        from mmengine.logging import print_log
        print_log(
            f'LabelRangeError: {message}',
            logger='current',
            level=logging.ERROR)
    except ImportError:
        logging.getLogger(__name__).error('LabelRangeError: %s', message)
    raise LabelRangeError(message)


def _message(num_bad: int, num_classes: int, ignore_index: int,
             detail: str) -> str:
    return (f'{num_bad} label pixel(s) are outside [0, {num_classes}) and '
            f'are not ignore_index={ignore_index}{detail}. Check the '
            f"dataset's label mapping (reduce_zero_label, label_map), its "
            f"ignore value and the decode head's num_classes.")


def reads_are_free(device: torch.device) -> bool:
    """Whether reading a value of ``device`` on the host costs no stall
    (the CPU: nothing runs ahead of the host there)."""
    return device.type == 'cpu'


class LabelRangeGuard(nn.Module):
    """Raises :class:`LabelRangeError` when bad labels were counted.

    Its state, ``bad_labels`` (int64: the bad pixels counted so far on all
    ranks, the largest bad value above the range and minus the smallest
    below zero seen on this rank), is a buffer so that it follows the model
    to its device, but it is not saved in checkpoints.

    Args:
        policy (str): ``'deferred'`` (default): GPU counts are read at
            logging steps and at the end of training, at no sync cost;
            ``'sync'``: read at once (one host sync per step). CPU counts are
            always checked at once.
    """

    def __init__(self, policy: str = 'deferred') -> None:
        super().__init__()
        if policy not in LABEL_CHECK_POLICIES:
            raise ValueError(f'label_check must be one of '
                             f'{LABEL_CHECK_POLICIES}, got {policy!r}')
        self.policy = policy
        self.register_buffer(
            'bad_labels', torch.zeros(3, dtype=torch.int64), persistent=False)
        # Set by ClassCountHook when it reads the guard at logging steps.
        self.read_by_hook = False
        self.interval = DEFAULT_INTERVAL
        self._steps = 0
        self._context = (0, 0)
        self._iteration: Optional[int] = None
        self._files: Sequence[str] = ()

    def set_step(self, iteration: Optional[int],
                 files: Sequence[str] = ()) -> None:
        """Name the training step about to run, for the messages:
        ``iteration`` (1-based, as mmengine logs it; None: outside a
        training loop) and the label (or image) file of each sample of the
        batch, in batch order."""
        self._iteration = iteration
        self._files = tuple(files)

    def _where_in_step(self, label: Tensor) -> str:
        if self._iteration is None:
            return ''
        text = f' at training iteration {self._iteration}'
        if label.dim() >= 2 and self._files and \
                label.shape[0] == len(self._files):
            _, invalid = label_masks(label, *self._context)
            bad = invalid.flatten(1).any(1).nonzero().flatten().tolist()
            names = [self._files[i] for i in bad[:8]]
            more = f' and {len(bad) - 8} more' if len(bad) > 8 else ''
            if names:
                text += f', in {", ".join(names)}{more}'
        return text

    def observe(self,
                hist: Tensor,
                num_classes: int,
                ignore_index: int,
                label: Tensor,
                step: bool,
                at_once: bool = False) -> None:
        """Take a call's bad labels from its histogram: add a training
        step's to the totals, and check them at once where that is free or
        asked for; otherwise leave them to the deferred reads.

        Args:
            hist (Tensor): The call's histogram (summed across ranks or
                not), see :mod:`~mmseg_arb.ops.histogram_layout`.
            num_classes (int): ``C`` of the valid range, for the message.
            ignore_index (int): The ignored label, for the message.
            label (Tensor): The labels, to name offending values when the
                check is immediate.
            step (bool): Whether this call is a training step: only those
                add to the totals (a sampler's call in the same step sees
                the same labels and adds nothing), and the interval of the
                guard's own reads counts them.
            at_once (bool): Check now whatever the device (an evaluation
                call, outside the training loop's hot path).
        """
        self._context = (num_classes, ignore_index)
        entries = bad_label_entries(hist)
        if step:
            # On the device: the bad pixels add up, the extremes are
            # maxima.
            self.bad_labels[:1].add_(entries[:1])
            self.bad_labels[1:].clamp_(min=entries[1:])
        if at_once or self.policy == 'sync' or reads_are_free(hist.device):
            num_bad = int(entries[0])
            if num_bad:
                where = self._where_in_step(label) if step else ''
                _raise(
                    _message(
                        num_bad, num_classes, ignore_index,
                        _offending_values(label, num_classes, ignore_index) +
                        where))
        elif step and not self.read_by_hook:
            self._count_step()

    @torch.compiler.disable
    def _count_step(self) -> None:
        # Outside any compiled graph: a Python counter there would be a
        # guard that changes every step.
        self._steps += 1
        if self._steps % self.interval == 0:
            self.check()

    def check(self, where: str = '', iteration: Optional[int] = None) -> None:
        """Read the accumulated bad-label count (one host read) and raise
        :class:`LabelRangeError` if there is any.

        Args:
            where (str): Names the loss in the message (e.g. the module
                path), for models with several.
            iteration (int, optional): The training iteration of the read,
                for the message.
        """
        num_bad, above, below = self.bad_labels.tolist()
        if not num_bad:
            return
        values = []
        if below:
            values.append(f'as low as {-below}')
        if above:
            values.append(f'as high as {above}')
        detail = (f' (values on this rank: {" and ".join(values)})'
                  if values else ' (none on this rank; see the other ranks)')
        if where:
            detail += f' in the labels of {where}'
        detail += ', counted on the GPU since training started'
        if iteration is not None:
            detail += f' and read at iteration {iteration}'
        detail += ("; label_check='sync' stops at the first bad batch and "
                   'names its files')
        _raise(_message(num_bad, *self._context, detail))


def check_labels_now(label: Tensor, num_classes: int,
                     ignore_index: int) -> None:
    """Raise :class:`LabelRangeError` if ``label`` has a value outside
    ``[0, num_classes)`` other than ``ignore_index`` (reads the device)."""
    _, invalid = label_masks(label, num_classes, ignore_index)
    num_bad = int(invalid.sum())
    if num_bad:
        _raise(
            _message(num_bad, num_classes, ignore_index,
                     _offending_values(label, num_classes, ignore_index)))


def _offending_values(label: Optional[Tensor], num_classes: int,
                      ignore_index: int) -> str:
    if label is None:
        return ''
    _, invalid = label_masks(label, num_classes, ignore_index)
    values = torch.unique(label[invalid])[:8].tolist()
    return f' (values: {values})' if values else ' (on another rank)'
