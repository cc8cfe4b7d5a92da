from .class_stats import (check_class_counts, load_class_counts,
                          load_class_weight)

__all__ = ['check_class_counts', 'load_class_counts', 'load_class_weight']
