"""The README's main command, shortened to 20 iterations per loss: CE, the
paper's ARB-Loss and the README's recommendation (class-weighted CE,
its weights written from the generated data's counts)."""
import json
import os.path as osp
import subprocess
import sys

import pytest
from helpers import ROOT

from mmseg_arb.utils.class_counts import power_class_weight

pytestmark = pytest.mark.slow  # see tests/conftest.py


def test_short_demo_prints_the_table_and_saves_the_plots(tmp_path):
    work_dir, data_root = tmp_path / 'demo', tmp_path / 'data'
    result = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'demo.py'), '--iters', '20', '--work-dir',
        str(work_dir), '--data-root',
        str(data_root)
    ],
                            capture_output=True,
                            text=True,
                            timeout=900,
                            cwd=str(tmp_path))
    out = result.stdout
    assert result.returncode == 0, (out + result.stderr)[-3000:]
    # Our lines first, not setuptools' notice to mmengine (four copies).
    assert out.startswith(f'generating the dataset in {data_root}')
    assert 'pkg_resources is deprecated' not in result.stderr
    assert 'Converting a tensor with requires_grad=True' not in \
        result.stderr
    # mmengine's lines (the per-class tables among them) are in the runs'
    # logs, not on the console, which says where they are.
    assert 'per class results (groups by' not in out
    assert 'Config:' not in out and len(out.splitlines()) < 40, out
    assert f"CE: log in {work_dir / 'ce'}" in out
    for run in ('ce', 'arb', 'cw'):
        log = next((work_dir / run).glob('2*/2*.log')).read_text()
        assert 'per class results (groups by training statistics)' in log
    header = next(line for line in out.splitlines()
                  if line.split() == ['CE', 'ARB', 'CW', 'ARB-CE', 'CW-CE'])
    rows = out[out.index(header):].splitlines()[1:12]
    labels = [r.split()[0] for r in rows]
    assert labels[:6] == [
        'mIoU', 'mIoU_head', 'mIoU_body', 'mIoU_tail', 'mAcc', 'aAcc'
    ]
    assert sum(label == 'IoU' for label in labels) == 5  # five rarest
    for name in ('iou_vs_frequency.png', 'ce/gradient_balance.png',
                 'arb/gradient_balance.png', 'cw/gradient_balance.png',
                 'results.md'):
        assert (work_dir / name).stat().st_size > 0, name
    with open(work_dir / 'results.json') as f:
        runs = json.load(f)['runs']
    assert [r['name'] for r in runs] == ['CE', 'ARB', 'CW']
    assert len(runs[1]['per_class_iou']) == 24
    assert (data_root / 'class_stats_train.json').exists()
    # The CW run read the weights written from these counts, n^-0.5.
    counts = json.loads(
        (data_root / 'class_stats_train.json').read_text())['counts']
    weight = json.loads(
        (data_root / 'class_weight_train_p0.5.json').read_text())
    assert weight == power_class_weight(counts, 0.5)
    dumped = next((work_dir / 'cw').glob('2*/vis_data/config.py')).read_text()
    assert repr(str(data_root / 'class_weight_train_p0.5.json')) in dumped
    assert "reduction='none'" in dumped
