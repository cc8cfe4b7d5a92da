from .class_count import class_histogram, class_histogram_pytorch, label_masks
from .cuda_ext import cuda_ops_status, load_cuda_ops
from .fused_arb_loss import fused_arb_loss

__all__ = [
    'class_histogram', 'class_histogram_pytorch', 'cuda_ops_status',
    'fused_arb_loss', 'label_masks', 'load_cuda_ops'
]
