"""The study's own losses, registered in mmseg's MODELS when imported: a
config adds ``'projects.loss_study.loss_study.losses'`` to its
``custom_imports`` (the repository root on ``PYTHONPATH``)."""
from .blv_loss import BLVLoss
from .dice_loss import ClassAveragedDiceLoss
from .focal_loss import SoftmaxFocalLoss

__all__ = ['BLVLoss', 'ClassAveragedDiceLoss', 'SoftmaxFocalLoss']
