from .long_tail_iou_metric import LongTailIoUMetric, frequency_groups

__all__ = ['LongTailIoUMetric', 'frequency_groups']
