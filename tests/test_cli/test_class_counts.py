"""``mmseg-arb class-counts``: a command of the installed package (what a
wheel user has), ``tools/class_counts.py`` its caller in a clone; classes
without pixels are named with the config key that makes a prior usable.
The earlier names (``class-stats``, ``tools/class_stats.py``) still work,
and files written under them still load."""
import json
import os.path as osp
import subprocess
import sys

import pytest
from helpers import ROOT

from mmseg_arb.cli import main
from mmseg_arb.counting import ClassCountEstimator
from mmseg_arb.datasets.synthetic import SyntheticSpec, generate_dataset
from mmseg_arb.utils.class_counts import class_counts_file, load_class_counts

SHIPPED = 'deeplabv3plus_r50-d8_arb-prior_4xb4-80k_ade20k-512x512'


@pytest.mark.slow
def test_class_counts_by_shipped_name_names_classes_without_pixels(tmp_path):
    spec = SyntheticSpec(
        layout='ade20k',
        num_classes=10,
        num_train=3,
        num_val=1,
        height=32,
        width=32,
        seed=5)
    summary = generate_dataset(str(tmp_path / 'ade'), spec, progress=False)
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
    spec = SyntheticSpec(
        layout='ade20k',
        num_classes=4,
        num_train=2,
        num_val=1,
        height=32,
        width=32,
        seed=1)
    summary = generate_dataset(str(tmp_path / 'ade'), spec, progress=False)
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
