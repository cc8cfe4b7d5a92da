"""The label histogram of a training step, counted once per step.

Every ARB-Loss in a model needs the class counts of the step's labels, and
in mmseg every head of a segmentor sees the same labels: DeepLabV3+'s
decode and auxiliary heads, or a sampler that ranks pixels with the loss
before the loss itself runs. Counting once per step saves a histogram and,
above all, an ``all_reduce`` per extra caller.

Steps are marked by :class:`~mmseg_arb.engine.hooks.ClassCountHook`
(:func:`begin_step` / :func:`end_step` around each training iteration).
Inside a step, calls whose labels have the same device, dtype and shape and
the same ``num_classes``, ``ignore_index`` and synchronisation get the same
histogram; each loss still folds it into its own state with its own
settings. That assumes one label map per shape in a step, as in mmseg's
segmentors; a model that gives its losses different label maps of one
shape (e.g. labels and pseudo-labels) sets ``share_step_counts=False`` on
them. Outside a step (no hook, a loop of one's own) every call counts its
own labels. The shared dictionary is a graph break under ``torch.compile``
(two per call inside a step); the counting and the loss around it compile
as before.
"""
from typing import Dict, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from ..ops.class_count import class_histogram
from ..ops.histogram_layout import summed_entries


class _Step:
    active = False
    histograms: Dict[Tuple, Tensor] = {}


_STEP = _Step()


def begin_step() -> None:
    """Start a training step: calls until :func:`end_step` share counts."""
    _STEP.active = True
    _STEP.histograms.clear()


def end_step() -> None:
    """End the step and drop its histograms."""
    _STEP.active = False
    _STEP.histograms.clear()


def summed_ranks(dist_sync: bool = True) -> int:
    """The ranks whose labels :func:`count_labels` sums: all of them when
    ``dist_sync`` and running distributed, else 1."""
    if dist_sync and dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all ranks in place when running distributed."""
    if summed_ranks() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def count_labels(label: Tensor, num_classes: int, ignore_index: int,
                 dist_sync: bool) -> Tensor:
    """:func:`class_histogram` of ``label`` with its totals (pixels, class
    counts and bad pixels) summed over :func:`summed_ranks` ranks: one
    collective."""
    hist = class_histogram(label, num_classes, ignore_index)
    if dist_sync:
        all_reduce_sum_(summed_entries(hist))
    return hist


def step_histogram(label: Tensor,
                   num_classes: int,
                   ignore_index: int,
                   dist_sync: bool,
                   share: bool = True) -> Tensor:
    """:func:`count_labels`, shared within a training step (see the module
    docstring) unless ``share`` is off. Callers must not modify the
    result."""
    if not (share and _STEP.active):
        return count_labels(label, num_classes, ignore_index, dist_sync)
    key = (label.device, label.dtype, tuple(label.shape), num_classes,
           ignore_index, dist_sync)
    hist = _shared(key)
    if hist is None:
        hist = count_labels(label, num_classes, ignore_index, dist_sync)
        _share(key, hist)
    return hist


# The step's dictionary stays outside compiled graphs (torch.compile would
# otherwise guard on its contents, which change every step).
@torch.compiler.disable
def _shared(key: Tuple):
    return _STEP.histograms.get(key)


@torch.compiler.disable
def _share(key: Tuple, hist: Tensor) -> None:
    _STEP.histograms[key] = hist
