"""What the whole package shares: reading and checking class-counts files
(``class_counts``: the loss, the count estimator, the metric, the dataset
tools and ``mmseg-arb class-counts``), loading mmengine
checkpoints under torch >= 2.6 (``checkpoint``: its types registered when
``mmseg_arb`` is imported, its checkpoints written by ``ClassCountHook``),
and buffers whose dtype a model-wide cast must not change
(``fixed_dtype``: the estimator's counts, the loss's class weights)."""
from .class_counts import (check_class_counts, load_class_counts,
                           load_class_weight)

__all__ = ['check_class_counts', 'load_class_counts', 'load_class_weight']
