# DeepLabV3+ R50-D8 with cross-entropy on CamVid (11 classes), 360x480, 40k:
# the baseline of deeplabv3plus_r50-d8_arb_4xb4-40k_camvid-360x480.py, as
# mmseg has no CamVid config to compare with. mmseg's Cityscapes recipe
# (SGD, lr 0.01, poly, ImageNet-pretrained ResNet-50) at CamVid's size.
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py',
    '../_base_/datasets/camvid.py', 'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py'
]
crop_size = (360, 480)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=11),
    auxiliary_head=dict(num_classes=11))
