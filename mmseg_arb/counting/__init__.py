from .estimator import COUNT_MODES, ClassCountEstimator
from .label_guard import LabelRangeError, LabelRangeGuard
from .step_histogram import (all_reduce_sum_, begin_step, count_labels,
                             end_step, step_histogram)

__all__ = [
    'COUNT_MODES', 'ClassCountEstimator', 'LabelRangeError',
    'LabelRangeGuard', 'all_reduce_sum_', 'begin_step', 'count_labels',
    'end_step', 'step_histogram'
]
