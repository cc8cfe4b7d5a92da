"""``mmseg-arb class-counts``: a command of the installed package (what a
wheel user has), ``tools/class_counts.py`` its caller in a clone; classes
without pixels are named with the config key that makes a prior usable.
The earlier names (``class-stats``, ``tools/class_stats.py``) still work,
and files written under them still load. ``--weight-power`` writes the
class weights that mmseg's ``CrossEntropyLoss`` reads."""
import json
import os.path as osp
import subprocess
import sys
from typing import Dict

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from mmseg_arb.cli import main
from mmseg_arb.counting import ClassCountEstimator
from mmseg_arb.datasets.synthetic import SyntheticSpec, generate_dataset
from mmseg_arb.utils.class_counts import (class_counts_file, class_weight_file,
                                          load_class_counts,
                                          power_class_weight)

SHIPPED = 'deeplabv3plus_r50-d8_arb-prior_4xb4-80k_ade20k-512x512'


def small_ade(root,
              num_classes: int = 4,
              num_train: int = 2,
              seed: int = 1) -> Dict:
    """Writes a small dataset in the ADE20K layout (32x32 images, one for
    validation) and returns the generator's summary."""
    spec = SyntheticSpec(
        layout='ade20k',
        num_classes=num_classes,
        num_train=num_train,
        num_val=1,
        height=32,
        width=32,
        seed=seed)
    return generate_dataset(str(root), spec, progress=False)


@pytest.mark.slow
def test_class_counts_by_shipped_name_names_classes_without_pixels(tmp_path):
    summary = small_ade(tmp_path / 'ade', num_classes=10, num_train=3, seed=5)
    result = subprocess.run([
        sys.executable, '-m', 'mmseg_arb.cli', 'class-counts', SHIPPED,
        '--workers', '1', '--no-progress', '--cfg-options',
        f'train_dataloader.dataset.data_root={tmp_path / "ade"}'
    ],
                            capture_output=True,
                            text=True,
                            timeout=600,
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / 'ade' / 'class_stats_train.json') as f:
        stats = json.load(f)
    assert stats['counts'][:10] == summary['pixel_counts']['train']
    # The classes the generator did not draw (10 to 149) are said, by name.
    zero = [n for n, c in zip(stats['class_names'], stats['counts']) if c == 0]
    assert len(zero) >= 140
    assert f'{len(zero)} of 150 classes have no pixel in this split: ' \
        in result.stdout
    assert ', '.join(map(repr, zero[:20])) in result.stdout
    assert f'and {len(zero) - 20} more' in result.stdout
    assert 'model.decode_head.loss_decode.smoothing=1.0' in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['class_counts.py', 'class_stats.py'])
def test_the_tools_are_the_command(tool):
    help_text = subprocess.run(
        [sys.executable,
         osp.join(ROOT, 'tools', tool), '--help'],
        capture_output=True,
        text=True,
        timeout=300)
    assert help_text.returncode == 0
    assert help_text.stdout.startswith('usage: mmseg-arb class-counts')


def test_the_earlier_command_name_runs_the_command(tmp_path):
    summary = small_ade(tmp_path / 'ade')
    out = tmp_path / 'counts.json'
    main([
        'class-stats', SHIPPED, '--workers', '1', '--no-progress', '--out',
        str(out), '--cfg-options',
        f'train_dataloader.dataset.data_root={tmp_path / "ade"}'
    ])
    assert json.loads(out.read_text())['counts'][:4] == \
        summary['pixel_counts']['train']


def test_files_written_by_earlier_versions_load(tmp_path):
    """The object ``class-stats`` wrote (a sample of one, as written) and
    a plain list, under the file name the shipped priors look for."""
    written = tmp_path / class_counts_file('train')
    assert written.name == 'class_stats_train.json'
    written.write_text(
        '{\n "counts": [\n  5,\n  0,\n  7\n ],\n "class_names": [\n'
        '  "a",\n  "b",\n  "c"\n ],\n "num_images": 2,\n'
        ' "dataset": "ADE20KDataset",\n "data_root": "data/ade",\n'
        ' "split": "train"\n}')
    assert load_class_counts(str(written)).tolist() == [5.0, 0.0, 7.0]
    written.write_text('[5, 0, 7]')
    assert load_class_counts(written).tolist() == [5.0, 0.0, 7.0]


def test_missing_prior_points_to_the_installed_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    estimator = ClassCountEstimator(
        'prior', class_counts='class_stats_train.json')
    with pytest.raises(FileNotFoundError) as error:
        estimator.resolve_prior(str(tmp_path / 'data'))
    assert 'mmseg-arb class-stats CONFIG' in str(error.value)


def test_the_written_file_weighs_mmsegs_loss_and_ignored_pixels_count_zero(
        tmp_path):
    """What the command writes, read by mmseg's loss as a config names it
    (``reduction='none'``; mmseg's weighted mean fails on the 255s), is
    ``w_y * CE`` per pixel and 0 on ignored pixels."""
    summary = small_ade(tmp_path / 'ade')
    main([
        'class-counts', SHIPPED, '--workers', '1', '--no-progress',
        '--weight-power', '0.5', '--cfg-options',
        f'train_dataloader.dataset.data_root={tmp_path / "ade"}'
    ])
    path = tmp_path / 'ade' / class_weight_file('train', 0.5)
    assert path.name == 'class_weight_train_p0.5.json'
    weight = json.loads(path.read_text())
    counts = summary['pixel_counts']['train'] + [0] * (150 - 4)
    assert weight == power_class_weight(counts, 0.5)

    init_default_scope('mmseg')
    loss = MODELS.build(
        dict(
            type='CrossEntropyLoss', class_weight=str(path), reduction='none'))
    torch.manual_seed(0)
    logits = torch.randn(2, 150, 5, 5)
    label = torch.randint(0, 4, (2, 5, 5))
    label[0, :2] = 255
    per_pixel = loss(logits, label, ignore_index=255)
    w = torch.tensor(weight)[label.clamp(max=149)]
    expected = w * F.cross_entropy(
        logits, label, ignore_index=255, reduction='none')
    torch.testing.assert_close(per_pixel, expected)
    assert (per_pixel[0, :2] == 0).all()


def test_a_bad_power_is_said_before_counting(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(['class-counts', SHIPPED, '--weight-power', '-1'])
    assert exit_.value.code == 2
    assert '--weight-power must be a finite number >= 0' in \
        capsys.readouterr().err
