# The demo's cross-entropy baseline: a small DeepLabV3+ (ResNet-18 at 1/4
# width, no pretrained weights) on the generated long-tailed dataset in the
# ADE20K layout (tools/generate_dataset.py; `make demo` writes it), trainable
# on a CPU in minutes. Everything but size is mmseg's ADE20K DeepLabV3+
# recipe. The ARB config beside it changes only the losses.
_base_ = [
    '../_base_/models/deeplabv3plus_r18-cpu.py',
    'mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmseg_arb'], allow_failed_imports=False)

num_classes = 24
data_root = 'data/synthetic_ade20k'
crop_size = (128, 128)
max_iters = 400
# The CPU model (_base_/models/deeplabv3plus_r18-cpu.py) at half its width:
# ResNet-18 at 1/4 width (16 stem and base channels: stages of 16, 32, 64 and
# 128 channels).
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(stem_channels=16, base_channels=16),
    decode_head=dict(
        in_channels=128, c1_in_channels=16, num_classes=num_classes),
    auxiliary_head=dict(in_channels=64, num_classes=num_classes))

# The generated images are 128x128: resize around that, not 512.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=(512, 128),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
# The first num_classes ADE20K classes (the generator uses those).
metainfo = dict(
    classes=('wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road',
             'bed ', 'windowpane', 'grass', 'cabinet', 'sidewalk', 'person',
             'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair',
             'car', 'water', 'painting', 'sofa')[:num_classes])
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
# mIoU plus mIoU of the head / body / tail thirds of the classes by training
# frequency (class_stats_train.json is written by mmseg-arb class-counts; the
# demo writes it), and per-class IoU for the results table.
val_evaluator = dict(
    type='LongTailIoUMetric',
    class_counts=data_root + '/class_stats_train.json',
    per_class=True)
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
