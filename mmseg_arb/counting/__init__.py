from .estimator import ClassCountEstimator
from .label_guard import LabelRangeError, LabelRangeGuard
from .prepare import (COUNT_MODES, MAX_WEIGHT_RATIO, count_class_weight,
                      log_count_shift, prepare_counts)
from .step_histogram import (all_reduce_sum_, begin_step, count_labels,
                             end_step, step_histogram)

__all__ = [
    'COUNT_MODES', 'ClassCountEstimator', 'LabelRangeError', 'LabelRangeGuard',
    'MAX_WEIGHT_RATIO', 'all_reduce_sum_', 'begin_step', 'count_class_weight',
    'count_labels', 'end_step', 'log_count_shift', 'prepare_counts',
    'step_histogram'
]
