"""``mmseg-arb class-stats``: a command of the installed package (what a
wheel user has), ``tools/class_stats.py`` its caller in a clone; classes
without pixels are named with the config key that makes a prior usable."""
import json
import os.path as osp
import subprocess
import sys

import pytest
from helpers import ROOT

from mmseg_arb.counting import ClassCountEstimator
from mmseg_arb.datasets.synthetic import SyntheticSpec, generate_dataset

SHIPPED = 'deeplabv3plus_r50-d8_arb-prior_4xb4-80k_ade20k-512x512'


def test_class_stats_by_shipped_name_names_classes_without_pixels(tmp_path):
    spec = SyntheticSpec(layout='ade20k', num_classes=10, num_train=3,
                         num_val=1, height=32, width=32, seed=5)
    summary = generate_dataset(str(tmp_path / 'ade'), spec, progress=False)
    result = subprocess.run(
        [sys.executable, '-m', 'mmseg_arb.cli', 'class-stats', SHIPPED,
         '--workers', '1', '--no-progress', '--cfg-options',
         f'train_dataloader.dataset.data_root={tmp_path / "ade"}'],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / 'ade' / 'class_stats_train.json') as f:
        stats = json.load(f)
    assert stats['counts'][:10] == summary['pixel_counts']['train']
    # The classes the generator did not draw (10 to 149) are said, by name.
    zero = [n for n, c in zip(stats['class_names'], stats['counts'])
            if c == 0]
    assert len(zero) >= 140
    assert f'{len(zero)} of 150 classes have no pixel in this split: ' \
        in result.stdout
    assert ', '.join(map(repr, zero[:20])) in result.stdout
    assert f'and {len(zero) - 20} more' in result.stdout
    assert 'model.decode_head.loss_decode.smoothing=1.0' in result.stdout


def test_the_tool_is_the_command(tmp_path):
    help_text = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'class_stats.py'), '--help'],
        capture_output=True, text=True, timeout=300)
    assert help_text.returncode == 0
    assert help_text.stdout.startswith('usage: mmseg-arb class-stats')


def test_missing_prior_points_to_the_installed_command(tmp_path,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    estimator = ClassCountEstimator('prior',
                                    class_counts='class_stats_train.json')
    with pytest.raises(FileNotFoundError) as error:
        estimator.resolve_prior(str(tmp_path / 'data'))
    assert 'mmseg-arb class-stats CONFIG' in str(error.value)
