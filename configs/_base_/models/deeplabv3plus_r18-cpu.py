# A DeepLabV3+ small enough to train on a CPU: mmseg's R-50-D8 model with
# ResNet-18 at half width (32 stem and base channels: stages of 32, 64, 128
# and 256 channels), a narrow head (64 channels, dilations 1, 2, 4, 6, the
# low-level features of the first stage reduced to 16), an auxiliary head of
# 32 channels on the third stage, plain BN and no pretrained weights. The
# dataset's config sets num_classes and the crop size (data_preprocessor).
_base_ = 'mmseg::_base_/models/deeplabv3plus_r50-d8.py'
# SyncBN needs several GPUs; one process on CPU uses plain BN.
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        depth=18, stem_channels=32, base_channels=32, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=256,
        channels=64,
        c1_in_channels=32,
        c1_channels=16,
        dilations=(1, 2, 4, 6),
        norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=128, channels=32, norm_cfg=norm_cfg))
