"""The layout of a label histogram, defined here once.

:func:`~mmseg_arb.ops.class_count.class_histogram` returns one int64 vector
per call, and everything downstream reads it through the accessors below:
the counting sums part of it across ranks, the prepare step reads the
pixel and class counts, the label guard the bad labels. The count kernel
writes entries ``[1, C + 4)`` (``launch_count_classes`` in
``csrc/arb_kernels.cuh``), its binding the pixel total.

* ``0``: the pixels of the labels, whatever their value (``numel``);
* ``[1, C + 1)``: the pixels of each class (``ignore_index`` not counted);
* ``C + 1``: the *bad* pixels, whose label is neither a class nor
  ``ignore_index``;
* ``C + 2``: the largest bad label above the range (0 if none);
* ``C + 3``: minus the smallest bad label below zero (0 if none; at most
  ``INT64_MAX``, so a label of ``INT64_MIN`` reads as ``-INT64_MAX``).

Everything before the two extremes is a total, which ranks sum
(:func:`summed_entries`); the extremes are this rank's, so that an error
can name the offending values without reading the labels.
"""
from torch import Tensor

# Where the class counts start (the pixel total comes first).
CLASSES_FROM = 1
# Entries besides the C class counts: the pixel total before them, the bad
# pixels and their two extremes after them.
EXTRA_ENTRIES = 4
# The trailing entries that are this rank's own, not summed.
EXTREMES = 2


def histogram_size(num_classes: int) -> int:
    """Entries of the histogram of ``num_classes`` classes."""
    return num_classes + EXTRA_ENTRIES


def pixel_total(hist: Tensor) -> Tensor:
    """The pixels counted, labelled or not (a 0-d view)."""
    return hist[0]


def class_counts(hist: Tensor) -> Tensor:
    """The ``(C,)`` pixels of each class (a view)."""
    return hist[CLASSES_FROM:-3]


def summed_entries(hist: Tensor) -> Tensor:
    """The totals that ranks sum: pixels, class counts and bad pixels (a
    view)."""
    return hist[:-EXTREMES]


def bad_label_entries(hist: Tensor) -> Tensor:
    """The ``(3,)`` bad pixels, the largest bad label above the range and
    minus the smallest below zero (a view)."""
    return hist[-3:]
