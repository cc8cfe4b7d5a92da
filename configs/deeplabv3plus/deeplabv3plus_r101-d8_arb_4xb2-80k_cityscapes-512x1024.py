# mmseg's namesake (without _arb) with ARB-Loss: docs/datasets.md#configs
_base_ = './deeplabv3plus_r50-d8_arb_4xb2-80k_cityscapes-512x1024.py'
model = dict(pretrained='open-mmlab://resnet101_v1c', backbone=dict(depth=101))
