"""The study's own losses, registered in mmseg's MODELS when imported
(``custom_imports = dict(imports=['mmseg_arb.study.losses'])``)."""
from .blv_loss import BLVLoss
from .dice_loss import ClassAveragedDiceLoss
from .focal_loss import SoftmaxFocalLoss

__all__ = ['BLVLoss', 'ClassAveragedDiceLoss', 'SoftmaxFocalLoss']
