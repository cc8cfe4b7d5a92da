from .estimator import COUNT_MODES, ClassCountEstimator, all_reduce_sum_
from .label_guard import LabelRangeError, LabelRangeGuard

__all__ = [
    'COUNT_MODES', 'ClassCountEstimator', 'LabelRangeError',
    'LabelRangeGuard', 'all_reduce_sum_'
]
