"""tools/benchmark.py runs each section and reports what it measured (the
figures themselves are for the benchmark, not for tests)."""
import json
import os.path as osp
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow  # see tests/conftest.py

BENCHMARK = osp.join(ROOT, 'tools', 'benchmark.py')

# Python code prefix that makes mmcv look as if it had no compiled ops (as
# mmcv-lite on a bare GPU machine): importing mmcv._ext fails.
HIDE_MMCV_EXT = "import runpy, sys; sys.modules['mmcv._ext'] = None; "
RUN_BENCHMARK = ("sys.argv = [{path!r}] + {args!r}; "
                 "runpy.run_path({path!r}, run_name='__main__')")


def run(args, tmp_path, without_mmcv_ext=False):
    out = tmp_path / 'bench.json'
    args = list(args) + ['--repeats', '2', '--warmup', '1', '--json', str(out)]
    if without_mmcv_ext:
        cmd = [
            sys.executable, '-c',
            HIDE_MMCV_EXT + RUN_BENCHMARK.format(path=BENCHMARK, args=args)
        ]
    else:
        cmd = [sys.executable, BENCHMARK] + args
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout, json.loads(out.read_text())


def test_loss_section_reports_ratios_to_mmseg_ce(tmp_path):
    # 2x19x64x64: each buffer is above the mmap threshold, so measurable.
    stdout, report = run(
        ['--sections', 'loss', '--shape', '2', '19', '64', '64'], tmp_path)
    assert set(report['loss']) == {
        'CrossEntropyLoss', 'ARBLoss', 'ARBLoss weight_power=0.5',
        'F.cross_entropy', 'naive'
    }
    assert report['loss']['CrossEntropyLoss']['time_ratio'] == 1.0
    for r in report['loss'].values():
        assert r['time_s'] > 0 and r['peak_bytes'] > 0
    assert 'ARB/CE time ratio' in stdout
    assert 'mmseg not importable' not in stdout


def test_train_section_with_mmcv_ops_stubbed(tmp_path):
    # Without compiled mmcv ops mmseg cannot import; --stub-mmcv-ops lets it,
    # and DeepLabV3+ R-50 and mmseg's CE train without reaching any op.
    stdout, report = run([
        '--sections', 'loss', 'train', '--shape', '2', '19', '16', '16',
        '--skip-naive', '--train-shape', '2', '32', '32', '--stub-mmcv-ops'
    ],
                         tmp_path,
                         without_mmcv_ext=True)
    assert 'mmcv.ops stubbed' in stdout
    assert 'mmseg not importable' not in stdout  # the real CE baseline
    train = report['train']
    assert train['shape'] == [2, 3, 32, 32]
    assert set(train['times_s']) == {'CrossEntropyLoss', 'ARBLoss'}
    assert train['time_ratio'] > 0
    assert 'DeepLabV3+ R-50 training iteration' in stdout


def test_train_section_explains_missing_mmcv_ops(tmp_path):
    stdout, report = run(
        ['--sections', 'train', '--train-shape', '2', '32', '32'],
        tmp_path,
        without_mmcv_ext=True)
    assert 'train' not in report
    assert '--stub-mmcv-ops' in stdout


def test_stubbed_op_refuses_to_run():
    code = (
        HIDE_MMCV_EXT + f"bench = runpy.run_path({BENCHMARK!r}); "
        "assert bench['train'].stub_missing_mmcv_ops(); "
        "from mmcv.ops import point_sample\n"
        "try:\n    point_sample(None, None)\n"
        "except RuntimeError as e:\n    print(e)\n")
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True,
                            text=True,
                            timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'mmcv.ops.point_sample was reached' in result.stdout
