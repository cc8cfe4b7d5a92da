from .class_count import (class_histogram, class_histogram_pytorch,
                          count_classes, label_masks, update_count_state_)
from .cuda_ext import cuda_ops_status, load_cuda_ops
from .fused_arb_loss import fused_arb_cross_entropy

__all__ = [
    'class_histogram', 'class_histogram_pytorch', 'count_classes',
    'cuda_ops_status', 'fused_arb_cross_entropy', 'label_masks',
    'load_cuda_ops', 'update_count_state_'
]
