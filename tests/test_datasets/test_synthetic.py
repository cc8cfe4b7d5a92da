"""Generated datasets load in mmseg's own dataset classes, unchanged."""
import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from helpers import CONFIGS, ROOT
from mmengine.registry import init_default_scope

from mmseg_arb.datasets.synthetic import (SyntheticSpec, generate_dataset,
                                          target_shares)


def build(dataset_type, data_root, **prefix):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    return DATASETS.build(dict(
        type=dataset_type, data_root=data_root, data_prefix=prefix,
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations')]))


def test_ade20k_layout_loads_in_ade20k_dataset(tmp_path):
    spec = SyntheticSpec(layout='ade20k', num_classes=12, num_train=6,
                         num_val=2, height=48, width=64, seed=3)
    summary = generate_dataset(str(tmp_path), spec, progress=False)
    assert sorted(p.name for p in (tmp_path / 'images' / 'training').iterdir()
                  )[0] == 'ADE_train_00000001.jpg'
    ds = build('ADE20KDataset', str(tmp_path),
               img_path='images/training', seg_map_path='annotations/training')
    assert len(ds) == 6
    item = ds[0]
    assert item['img'].shape == (48, 64, 3)
    gt = item['gt_seg_map']  # reduce_zero_label: "other" (0) -> 255
    assert set(np.unique(gt)) <= set(range(12)) | {255}
    assert (gt == 255).any()
    counts = np.zeros(150, dtype=np.int64)
    for i in range(len(ds)):
        gt = ds[i]['gt_seg_map']
        counts += np.bincount(gt[gt < 150].ravel(), minlength=150)
    assert counts[:12].tolist() == summary['pixel_counts']['train']


def test_cityscapes_layout_loads_in_cityscapes_dataset(tmp_path):
    spec = SyntheticSpec(layout='cityscapes', num_train=6, num_val=3,
                         height=32, width=64, seed=4)
    generate_dataset(str(tmp_path), spec, progress=False)
    assert (tmp_path / 'gtFine' / 'val' / 'frankfurt' /
            'frankfurt_000000_000019_gtFine_labelTrainIds.png').exists()
    ds = build('CityscapesDataset', str(tmp_path),
               img_path='leftImg8bit/train', seg_map_path='gtFine/train')
    assert len(ds) == 6
    gt = ds[0]['gt_seg_map']
    assert set(np.unique(gt)) <= set(range(19)) | {255}


def test_deterministic_and_long_tailed(tmp_path):
    spec = SyntheticSpec(layout='ade20k', num_classes=20, num_train=40,
                         num_val=1, height=64, width=64, rarest_share=1e-3,
                         seed=7)
    a = generate_dataset(str(tmp_path / 'a'), spec, progress=False)
    b = generate_dataset(str(tmp_path / 'b'), spec, progress=False)
    assert a == b
    img_a = (tmp_path / 'a' / 'images' / 'training' /
             'ADE_train_00000005.jpg').read_bytes()
    img_b = (tmp_path / 'b' / 'images' / 'training' /
             'ADE_train_00000005.jpg').read_bytes()
    assert img_a == img_b
    shares = np.array(spec.shares)
    assert shares.min() == pytest.approx(1e-3) and shares.sum() == \
        pytest.approx(1.0)
    counts = np.array(a['pixel_counts']['train'], dtype=float)
    assert counts.max() / counts.sum() > 0.3  # a dominant stuff class
    assert counts.min() / counts.sum() < 0.01  # and a tail


def test_target_shares_reach_the_rarest_share():
    for rarest in (5e-3, 1e-3, 1e-4):
        s = target_shares(1.0 / np.arange(1, 151), rarest)
        assert s.min() == pytest.approx(rarest, rel=1e-6)
        assert np.all(np.diff(s) <= 0)
    with pytest.raises(ValueError, match='rarest_share'):
        target_shares(1.0 / np.arange(1, 151), 1e-2)  # above uniform


@pytest.mark.parametrize('kwargs,match', [
    (dict(layout='coco'), 'layout'),
    (dict(layout='cityscapes', num_classes=30), 'num_classes'),
    (dict(rarest_share=0.5), 'rarest_share'),
    (dict(height=8), 'at least 32'),
])
def test_bad_spec_is_an_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticSpec(**kwargs)


def test_class_stats_tool_counts_the_generated_dataset(tmp_path):
    spec = SyntheticSpec(layout='ade20k', num_classes=10, num_train=5,
                         num_val=1, height=40, width=40, seed=5)
    summary = generate_dataset(str(tmp_path / 'ade'), spec, progress=False)
    config = osp.join(CONFIGS, 'deeplabv3plus',
                      'deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512.py')
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'class_stats.py'), config,
         '--workers', '2', '--cfg-options',
         f'train_dataloader.dataset.data_root={tmp_path / "ade"}'],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / 'ade' / 'class_stats_train.json') as f:
        stats = json.load(f)
    assert stats['counts'][:10] == summary['pixel_counts']['train']
    assert stats['num_images'] == 5 and len(stats['class_names']) == 150
    assert stats['dataset'] == 'ADE20KDataset'
    assert (tmp_path / 'ade' / 'class_stats_train.png').stat().st_size > 0
