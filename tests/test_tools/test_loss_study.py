"""tools/loss_study.py on two losses, one seed, a few iterations: the
report and plots; a second call trains nothing."""
import importlib.util
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
    assert 'ce/seed0: ' in out and 'arb-batch/seed0: ' in out
    assert '| ARB batch |' in out and 'Paired difference against CE' in out
    runs = tmp_path / 'study' / 'runs'
    config = (runs / 'arb-batch' / 'seed0' / 'config.py').read_text()
    assert "type='ARBLoss'" in config and 'seed=0' in config
    for name in ('loss_study.md', 'loss_study.json', 'overall_vs_tail.png',
                 'iou_vs_frequency.png'):
        assert (tmp_path / 'docs' / name).stat().st_size > 0, name

    results = sorted(runs.glob('*/seed0/result.json'))
    stamps = [os.stat(p).st_mtime_ns for p in results]
    out, again = study(tmp_path)
    assert '2 runs finished before, not trained again' in out
    assert again['timing']['runs_trained'] == 0
    assert again['calls'] == summary['calls'] == [summary['timing']]
    assert [os.stat(p).st_mtime_ns for p in results] == stamps
    assert again['rows'] == summary['rows']


def test_a_plain_mmseg_config_as_the_base(tmp_path):
    """--config with a user's cross-entropy config built on mmseg's own
    (IoUMetric, no custom_imports): the study's rows train from it."""
    config = tmp_path / 'my_ce.py'
    config.write_text(
        "_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_"
        "ade20k-512x512.py'\n"
        'model = dict(pretrained=None, backbone=dict(depth=18),\n'
        '    decode_head=dict(in_channels=512, c1_in_channels=64,\n'
        '                     channels=64, c1_channels=16),\n'
        '    auxiliary_head=dict(in_channels=256, channels=32))\n')
    tiny = list(TINY)
    tiny[tiny.index('--iters') + 1] = '2'
    result = subprocess.run(
        [sys.executable, STUDY, '--work-dir', str(tmp_path / 'study'),
         '--config', str(config), *tiny], capture_output=True, text=True,
        timeout=600, cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with open(tmp_path / 'study' / 'loss_study.json') as f:
        rows = json.load(f)['rows']
    assert [(r['key'], r['seeds']) for r in rows] == [('ce', [0]),
                                                      ('arb-batch', [0])]
    assert all('mIoU_tail' in r['metrics'] for r in rows)
    run = (tmp_path / 'study' / 'runs' / 'arb-batch' / 'seed0' /
           'config.py').read_text()
    assert "type='LongTailIoUMetric'" in run and 'ClassCountHook' in run


def test_other_settings_in_the_same_work_dir_are_refused(tmp_path):
    (tmp_path / 'study').mkdir()
    (tmp_path / 'study' / 'study.json').write_text(json.dumps({'iters': 1}))
    result = subprocess.run(
        [sys.executable, STUDY, '--work-dir', str(tmp_path / 'study'), *TINY],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert result.returncode != 0
    assert 'other settings' in result.stderr and 'iters' in result.stderr


def load_tool():
    spec = importlib.util.spec_from_file_location('loss_study', STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slots_for_cpus_and_gpu_groups(monkeypatch):
    """The same runs go to CPU threads or GPU groups; several GPUs per run
    go through torchrun on ports of their own."""
    import torch
    tool = load_tool()
    monkeypatch.setattr(tool, 'cpu_cores', lambda: 4)
    cpu = tool.make_slots(tool.parse_args([]))
    assert len(cpu) == 4
    assert {s.env['OMP_NUM_THREADS'] for s in cpu} == {'1'}
    assert cpu[0].env['CUDA_VISIBLE_DEVICES'] == ''
    two = tool.make_slots(tool.parse_args(['--jobs', '2']))
    assert [s.env['OMP_NUM_THREADS'] for s in two] == ['2', '2']

    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 5)
    single = tool.make_slots(tool.parse_args(['--gpus-per-job', '1']))
    assert [s.env['CUDA_VISIBLE_DEVICES'] for s in single] == \
        ['0', '1', '2', '3', '4']
    assert not any(s.distributed for s in single)
    pairs = tool.make_slots(tool.parse_args(['--gpus-per-job', '2']))
    assert [s.env['CUDA_VISIBLE_DEVICES'] for s in pairs] == ['0,1', '2,3']
    assert all(s.distributed and 'torch.distributed.run' in s.launcher
               for s in pairs)
    assert len({next(a for a in s.launcher if 'master_port' in a)
                for s in pairs}) == 2
    # A study that was itself given some GPUs hands out those, not the
    # first ones of the node.
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,5,6,7,1')
    given = tool.make_slots(tool.parse_args(['--gpus-per-job', '2']))
    assert [s.env['CUDA_VISIBLE_DEVICES'] for s in given] == ['4,5', '6,7']


def test_tau_rows_take_the_best_complete_count_mode():
    tool = load_tool()
    args = tool.parse_args(['--losses', 'arb-batch', 'arb-ema', 'arb-tau'])

    def ok(miou):
        return dict(status='ok', summary=dict(mIoU=miou))

    failed = dict(status='failed')
    results = {'arb-batch/seed0': ok(20), 'arb-batch/seed1': ok(22),
               'arb-ema/seed0': ok(30)}
    assert tool.choose_tau_mode(args, results, range(2)) is None  # waits
    results['arb-ema/seed1'] = failed  # one lucky seed does not win
    assert tool.choose_tau_mode(args, results, range(2)) == 'batch'
    everything_failed = {k: failed for k in results}
    assert tool.choose_tau_mode(args, everything_failed, range(2)) == ''
