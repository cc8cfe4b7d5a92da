"""tools/loss_study.py on two losses, one seed, a few iterations: the
report and plots; a second call trains nothing."""
import json
import os
import subprocess
import sys

from helpers import ROOT

STUDY = os.path.join(ROOT, 'tools', 'loss_study.py')
TINY = ['--losses', 'ce', 'arb-batch', '--seeds', '1', '--iters', '4',
        '--num-classes', '8', '--num-train', '8', '--num-val', '4',
        '--size', '64', '64', '--crop', '32', '32', '--batch-size', '2',
        '--no-progress']


def study(tmp_path, *extra):
    result = subprocess.run(
        [sys.executable, STUDY, '--work-dir', str(tmp_path / 'study'), *TINY,
         *extra], capture_output=True, text=True, timeout=600,
        cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with open(tmp_path / 'study' / 'loss_study.json') as f:
        return result.stdout, json.load(f)


def test_two_losses_one_seed_then_resume(tmp_path):
    out, summary = study(tmp_path, '--export', str(tmp_path / 'docs'))
    assert summary['timing']['runs_trained'] == 2
    rows = {r['key']: r for r in summary['rows']}
    assert list(rows) == ['ce', 'arb-batch']
    for row in rows.values():
        assert row['seeds'] == [0] and not row['failed']
        assert set(row['metrics']) == {'mIoU', 'mIoU_head', 'mIoU_body',
                                       'mIoU_tail', 'mAcc', 'aAcc'}
        assert len(row['per_class_iou']) == 8
    assert rows['arb-batch']['vs_baseline']['mIoU']['n'] == 1
    assert '| ARB batch |' in out and 'Paired difference against CE' in out
    runs = tmp_path / 'study' / 'runs'
    config = (runs / 'arb-batch' / 'seed0' / 'config.py').read_text()
    assert "type='ARBLoss'" in config and 'seed=0' in config
    for name in ('loss_study.md', 'loss_study.json', 'overall_vs_tail.png',
                 'iou_vs_frequency.png'):
        assert (tmp_path / 'docs' / name).stat().st_size > 0, name

    results = sorted(runs.glob('*/seed0/result.json'))
    stamps = [os.stat(p).st_mtime_ns for p in results]
    _, again = study(tmp_path)
    assert again['timing']['runs_trained'] == 0
    assert [os.stat(p).st_mtime_ns for p in results] == stamps
    assert again['rows'] == summary['rows']


def test_other_settings_in_the_same_work_dir_are_refused(tmp_path):
    (tmp_path / 'study').mkdir()
    (tmp_path / 'study' / 'study.json').write_text(json.dumps({'iters': 1}))
    result = subprocess.run(
        [sys.executable, STUDY, '--work-dir', str(tmp_path / 'study'), *TINY],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert result.returncode != 0
    assert 'other settings' in result.stderr and 'iters' in result.stderr
