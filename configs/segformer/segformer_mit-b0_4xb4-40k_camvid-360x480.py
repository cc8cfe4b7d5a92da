# SegFormer MiT-B0 with cross-entropy on CamVid (11 classes), 360x480, 40k:
# the baseline of segformer_mit-b0_arb_4xb4-40k_camvid-360x480.py, as mmseg
# has no CamVid config to compare with. mmseg's SegFormer recipe (AdamW,
# lr 6e-5, warm-up then poly, ImageNet-pretrained MiT-B0) at CamVid's size.
_base_ = [
    'mmseg::_base_/models/segformer_mit-b0.py', '../_base_/datasets/camvid.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py'
]
crop_size = (360, 480)
data_preprocessor = dict(size=crop_size)
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b0_20220624-7e0fe6dd.pth'  # noqa
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=11))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'pos_block': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'head': dict(lr_mult=10.)
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=40000,
        by_epoch=False,
    )
]
