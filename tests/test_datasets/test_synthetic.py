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
    return DATASETS.build(
        dict(
            type=dataset_type,
            data_root=data_root,
            data_prefix=prefix,
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations')
            ]))


def test_ade20k_layout_loads_in_ade20k_dataset(tmp_path):
    spec = SyntheticSpec(
        layout='ade20k',
        num_classes=12,
        num_train=6,
        num_val=2,
        height=48,
        width=64,
        seed=3)
    summary = generate_dataset(str(tmp_path), spec, progress=False)
    assert sorted(
        p.name for p in (tmp_path / 'images' /
                         'training').iterdir())[0] == 'ADE_train_00000001.jpg'
    ds = build(
        'ADE20KDataset',
        str(tmp_path),
        img_path='images/training',
        seg_map_path='annotations/training')
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
    spec = SyntheticSpec(
        layout='cityscapes',
        num_train=6,
        num_val=3,
        height=32,
        width=64,
        seed=4)
    generate_dataset(str(tmp_path), spec, progress=False)
    assert (tmp_path / 'gtFine' / 'val' / 'frankfurt' /
            'frankfurt_000000_000019_gtFine_labelTrainIds.png').exists()
    ds = build(
        'CityscapesDataset',
        str(tmp_path),
        img_path='leftImg8bit/train',
        seg_map_path='gtFine/train')
    assert len(ds) == 6
    gt = ds[0]['gt_seg_map']
    assert set(np.unique(gt)) <= set(range(19)) | {255}


def test_deterministic_and_long_tailed(tmp_path):
    spec = SyntheticSpec(
        layout='ade20k',
        num_classes=20,
        num_train=40,
        num_val=1,
        height=64,
        width=64,
        rarest_share=1e-3,
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


@pytest.mark.slow
def test_class_counts_tool_counts_the_generated_dataset(tmp_path):
    spec = SyntheticSpec(
        layout='ade20k',
        num_classes=10,
        num_train=5,
        num_val=1,
        height=40,
        width=40,
        seed=5)
    summary = generate_dataset(str(tmp_path / 'ade'), spec, progress=False)
    config = osp.join(CONFIGS, 'deeplabv3plus',
                      'deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512.py')
    result = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools',
                 'class_counts.py'), config, '--workers', '2', '--cfg-options',
        f'train_dataloader.dataset.data_root={tmp_path / "ade"}'
    ],
                            capture_output=True,
                            text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / 'ade' / 'class_stats_train.json') as f:
        stats = json.load(f)
    assert stats['counts'][:10] == summary['pixel_counts']['train']
    assert stats['num_images'] == 5 and len(stats['class_names']) == 150
    assert stats['dataset'] == 'ADE20KDataset'
    assert (tmp_path / 'ade' / 'class_stats_train.png').stat().st_size > 0


# Label and image digests of three easy-mode samples (spec seed 3, rng 5),
# drawn by the generator before the hard mode was added.
EASY_DIGEST = ([251648, 7680, 260425], [2058398, 2635879, 1923319])
HARD = dict(
    layout='ade20k',
    num_classes=24,
    num_train=4,
    num_val=4,
    num_test=48,
    height=128,
    width=128,
    rarest_share=1e-3,
    mode='hard')


def test_easy_mode_draws_what_it_drew_before():
    """The demo's data: the hard mode's changes leave it as it was (a
    digest of labels and images drawn by the generator before them)."""
    from mmseg_arb.datasets import SyntheticSegmentationGenerator
    gen = SyntheticSegmentationGenerator(SyntheticSpec(num_classes=24, seed=3))
    rng = np.random.default_rng(5)
    pairs = [gen.sample(rng) for _ in range(3)]
    assert [
        int((l.astype(np.int64) * np.arange(l.size).reshape(l.shape)).sum() %
            1_000_003) for _, l in pairs
    ] == EASY_DIGEST[0]
    assert [int(i.astype(np.int64).sum()) for i, _ in pairs] == \
        EASY_DIGEST[1]


def test_hard_mode_test_split_loads_and_counts_instances(tmp_path):
    spec = SyntheticSpec(**dict(HARD, num_test=3))
    summary = generate_dataset(str(tmp_path), spec, progress=False)
    ds = build(
        'ADE20KDataset',
        str(tmp_path),
        img_path='images/test',
        seg_map_path='annotations/test')
    assert len(ds) == 3
    assert (tmp_path / 'annotations' / 'test' /
            'ADE_test_00000003.png').exists()
    assert set(summary['instance_counts']) == {'train', 'val', 'test'}
    for split, pixels in summary['pixel_counts'].items():
        instances = summary['instance_counts'][split]
        # A class has instances exactly where it has pixels.
        assert [p > 0 for p in pixels] == [n > 0 for n in instances]
    # No test split unless asked for, as before.
    easy = generate_dataset(
        str(tmp_path / 'easy'),
        SyntheticSpec(
            num_classes=8, num_train=2, num_val=1, height=32, width=32),
        progress=False)
    assert not (tmp_path / 'easy' / 'images' / 'test').exists()
    assert set(easy['pixel_counts']) == {'train', 'val'}


def test_hard_mode_has_twins_that_share_a_look():
    from mmseg_arb.datasets import SyntheticSegmentationGenerator
    gen = SyntheticSegmentationGenerator(SyntheticSpec(**HARD))
    kinds = {t.kind for t in gen.twins}
    assert kinds == {'shape', 'context'} and len(gen.twins) == 4
    by_share = np.argsort(-np.array(gen.shares))
    tail = set(by_share[-8:].tolist())
    for twin in gen.twins:
        a, b = gen.looks[twin.cls], gen.looks[twin.source]
        assert twin.cls in tail and twin.source not in tail
        assert np.array_equal(a.colour, b.colour)
        assert (a.texture, a.angle, a.freq) == (b.texture, b.angle, b.freq)
        assert (a.shape == b.shape) == (twin.kind == 'context')
        assert (twin.context in gen.stuff) == (twin.kind == 'context')
    # The same seed draws the same images; classes vary within themselves.
    first = gen.sample(np.random.default_rng(1))
    again = gen.sample(np.random.default_rng(1))
    assert np.array_equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])


def test_context_twins_sit_on_their_context_and_sources_never_do():
    from mmseg_arb.datasets import SyntheticSegmentationGenerator
    gen = SyntheticSegmentationGenerator(SyntheticSpec(**HARD))
    rng = np.random.default_rng(0)
    twin = next(t for t in gen.twins if t.kind == 'context')
    centres = {twin.cls: [], twin.source: []}
    for _ in range(60):
        stuff, _ = gen._stuff_layout(rng)
        for c in centres:
            mask = gen._thing_mask(c, rng, stuff)
            if mask is not None and mask.any():
                ys, xs = np.nonzero(mask)
                centres[c].append(stuff[int(ys.mean()), int(xs.mean())])
    on_context = {
        c: np.mean(np.array(v) == twin.context)
        for c, v in centres.items()
    }
    assert on_context[twin.cls] > 0.8
    assert on_context[twin.source] < 0.1


@pytest.mark.parametrize('seed', [0, 1])
def test_hard_mode_tail_has_instances_to_measure_in_test(tmp_path, seed):
    """With the study's test split (128 images), every class of the tail
    has instances to measure IoU on (the study's report lists them)."""
    spec = SyntheticSpec(**dict(HARD, seed=seed, num_test=128))
    summary = generate_dataset(str(tmp_path), spec, progress=False)
    order = np.argsort(-np.array(spec.shares))
    test = np.array(summary['instance_counts']['test'])
    assert test[order[-8:]].min() >= 10, test[order[-8:]]
    assert len(summary['twins']) == 4
