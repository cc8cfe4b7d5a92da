"""What the whole package shares: reading and checking class-statistics
files (``class_stats``: the loss, the count estimator, the metric, the
dataset tools and ``mmseg-arb class-stats``) and loading mmengine
checkpoints under torch >= 2.6 (``checkpoint``, applied when ``mmseg_arb``
is imported)."""
from .class_stats import (check_class_counts, load_class_counts,
                          load_class_weight)

__all__ = ['check_class_counts', 'load_class_counts', 'load_class_weight']
