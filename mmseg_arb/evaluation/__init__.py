from .metrics import LongTailIoUMetric, frequency_groups

__all__ = ['LongTailIoUMetric', 'frequency_groups']
