"""projects/loss_study/tools/loss_study.py end to end on a tiny study: the
tuning stage, the selection, the final stage on validation and test, the
report, resume and --report-only; its slots on CPUs and GPUs."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # see tests/conftest.py

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(PROJECT, 'tools', 'loss_study.py')
TINY = [
    '--families', 'ce', 'arb', '--tune-seeds', '1', '--final-seeds', '1',
    '--iters', '4', '--curve-interval', '2', '--num-classes', '12',
    '--num-train', '6', '--num-val', '3', '--num-test', '3', '--size', '64',
    '64', '--crop', '32', '32', '--batch-size', '2', '--no-progress'
]


def study(tmp_path, *extra):
    result = subprocess.run([
        sys.executable, STUDY, '--work-dir',
        str(tmp_path / 'study'), *TINY, *extra
    ],
                            capture_output=True,
                            text=True,
                            timeout=900,
                            cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with open(tmp_path / 'study' / 'loss_study.json') as f:
        return result.stdout, json.load(f)


def test_tune_select_final_report_resume(tmp_path):
    out, summary = study(tmp_path, '--export', str(tmp_path / 'docs'))
    runs = summary['runs']
    tuned = sorted(k for k in runs if k.startswith('tune/'))
    assert tuned == sorted(f'tune/adamw/arb-{m}-tau{t}/d0-s0'
                           for m in ('batch', 'cumulative')
                           for t in ('0.5', '1'))
    assert all('test' not in runs[k] for k in tuned)  # validation only
    best = max(
        tuned, key=lambda k: (runs[k]['summary']['mIoU'], -tuned.index(k)))
    chosen = best.split('/')[2]
    finals = sorted(k for k in runs if k.startswith('final/'))
    assert finals == sorted(
        ['final/adamw/ce/d0-s100', f'final/adamw/{chosen}/d0-s100'])
    for key in finals:
        run = runs[key]
        assert run['status'] == 'ok', run
        assert set(run['test']['summary']) >= {'mIoU', 'mIoU_tail'}
        assert len(run['test']['per_class_iou']) == 12
        # Learning-curve rows validate every 2 iterations.
        assert [s for s, _ in run['curve']] == [2, 4]
    assert summary['data']['instance_counts']['test']
    assert summary['planned'] == dict(tune=4, final=2)
    assert '| ARB-Loss | ARB batch tau=0.5 |' in out
    assert 'Final stage (adamw), test split' in out
    for name in ('loss_study.md', 'loss_study.json',
                 'iou_vs_frequency_adamw.png', 'learning_curves_adamw.png',
                 'overall_vs_tail_adamw.png'):
        assert (tmp_path / 'docs' / name).stat().st_size > 0, name
    config = (tmp_path / 'study' / 'runs' / 'final' / 'adamw' / 'ce' /
              'd0-s100' / 'config.py').read_text()
    assert 'TestAfterTrainHook' in config and "'images/test'" in config

    results = sorted((tmp_path / 'study' / 'runs').glob('**/result.json'))
    stamps = [os.stat(p).st_mtime_ns for p in results]
    out, again = study(tmp_path)
    assert '6 runs finished before, not trained again' in out
    assert again['calls'] == summary['calls']
    assert [os.stat(p).st_mtime_ns for p in results] == stamps
    assert again['runs'] == summary['runs']

    report = tmp_path / 'study' / 'loss_study.md'
    before = report.read_text()
    report.unlink()
    rebuilt = subprocess.run(
        [sys.executable, STUDY, '--report-only',
         str(tmp_path / 'study')],
        capture_output=True,
        text=True,
        timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert report.read_text() == before


def test_a_plain_mmseg_config_as_the_base(tmp_path):
    """--config with a user's cross-entropy config built on mmseg's own
    (IoUMetric, no custom_imports): the study trains and tests from it."""
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
    tiny[tiny.index('--curve-interval') + 1] = '1'
    tiny[tiny.index('arb')] = 'ce'
    result = subprocess.run([
        sys.executable, STUDY, '--work-dir',
        str(tmp_path / 'study'), '--config',
        str(config), *tiny
    ],
                            capture_output=True,
                            text=True,
                            timeout=600,
                            cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with open(tmp_path / 'study' / 'loss_study.json') as f:
        runs = json.load(f)['runs']
    run, = runs.values()
    assert run['status'] == 'ok' and 'mIoU_tail' in run['test']['summary']
    from mmengine.config import Config
    dumped = Config.fromfile(
        str(tmp_path / 'study' / 'runs' / 'final' / 'adamw' / 'ce' /
            'd0-s100' / 'config.py'))
    assert dumped.val_evaluator.type == 'LongTailIoUMetric'
    # The study's optimiser replaces the config's SGD.
    assert dumped.optim_wrapper.optimizer.type == 'AdamW'
    assert dumped.test_dataloader.dataset.data_prefix.img_path == \
        'images/test'


def test_other_settings_in_the_same_work_dir_are_refused(tmp_path):
    (tmp_path / 'study').mkdir()
    (tmp_path / 'study' / 'study.json').write_text(json.dumps({'iters': 1}))
    result = subprocess.run(
        [sys.executable, STUDY, '--work-dir',
         str(tmp_path / 'study'), *TINY],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(tmp_path))
    assert result.returncode != 0
    assert 'other settings' in result.stderr and 'iters' in result.stderr


def load_tool():
    spec = importlib.util.spec_from_file_location('loss_study', STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slots_for_cpus_and_one_job_per_gpu(monkeypatch):
    """The same runs go to CPU threads or GPUs: by default one job per
    visible GPU; several GPUs per run go through torchrun."""
    import torch
    tool = load_tool()
    monkeypatch.setattr(tool, 'cpu_cores', lambda: 4)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cpu = tool.make_slots(tool.parse_args([]))
    assert len(cpu) == 4
    assert {s.env['OMP_NUM_THREADS'] for s in cpu} == {'1'}
    assert cpu[0].env['CUDA_VISIBLE_DEVICES'] == ''
    # The runs import the study's losses and hook from the repository root.
    monkeypatch.setenv('PYTHONPATH', '/elsewhere')
    root = os.path.dirname(os.path.dirname(PROJECT))
    assert tool.make_slots(tool.parse_args([]))[0].env['PYTHONPATH'] == \
        os.pathsep.join([root, '/elsewhere'])
    two = tool.make_slots(tool.parse_args(['--jobs', '2']))
    assert [s.env['OMP_NUM_THREADS'] for s in two] == ['2', '2']

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 5)
    default = tool.make_slots(tool.parse_args([]))
    assert [s.env['CUDA_VISIBLE_DEVICES'] for s in default] == \
        ['0', '1', '2', '3', '4']
    assert not any(s.distributed for s in default)
    assert tool.loader_workers(tool.parse_args([])) == 2
    pairs = tool.make_slots(tool.parse_args(['--gpus-per-job', '2']))
    assert [s.env['CUDA_VISIBLE_DEVICES'] for s in pairs] == ['0,1', '2,3']
    assert all(s.distributed and 'torch.distributed.run' in s.launcher
               for s in pairs)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,5,6,7,1')
    given = tool.make_slots(tool.parse_args(['--gpus-per-job', '2']))
    assert [s.env['CUDA_VISIBLE_DEVICES'] for s in given] == ['4,5', '6,7']
    on_cpu = tool.make_slots(tool.parse_args(['--gpus-per-job', '0']))
    assert on_cpu[0].env['CUDA_VISIBLE_DEVICES'] == ''


def test_published_protocol_sizes():
    """The published command's plan: 7 tuned families x 4 configurations x
    2 seeds, and 8 final rows x 5 seeds x 2 data seeds, per optimiser."""
    tool = load_tool()
    args = tool.parse_args([
        '--tune-seeds', '2', '--final-seeds', '5', '--data-seeds', '2',
        '--optimizers', 'adamw', 'sgd'
    ])

    class F:

        def __init__(self, n, key='f'):
            self.key, self.losses = key, [0] * n

    families = [F(1)] + [F(4) for _ in range(7)]
    assert tool.planned_runs(args, families) == dict(tune=112, final=160)
    # The CamVid study's registered command with ce-tta added: 5 tuned
    # families x 4 x 2 seeds and CE at the 2 tuning seeds; 6 trained rows
    # x 5 seeds; 4 tau x 2 tuning seeds and the chosen tau x 5 evaluated.
    camvid = tool.parse_args([
        '--dataset', 'camvid', '--data-root', 'data', '--tune-seeds', '2',
        '--final-seeds', '5', '--checkpoint-interval', '250', '--families',
        'ce', 'arb', 'arb-weights', 'class-weights', 'focal',
        'logit-adjustment', 'ce-tta'
    ])
    families = [F(1)] + [F(4) for _ in range(5)] + [F(4, 'ce-tta')]
    assert tool.planned_runs(camvid, families) == dict(
        tune=42, final=30, evaluate=13)
    proto = tool.protocol(args)
    assert proto['final_seeds'] == [100, 101, 102, 103, 104]
    assert proto['data_seeds'] == [0, 1] and proto['tune_seeds'] == [0, 1]


def test_an_interrupted_study_keeps_its_runs_and_resumes_elsewhere(tmp_path):
    """The JSON is saved after every run: a study stopped mid-way (SIGTERM,
    as a session's end or a scheduler sends) keeps what finished, says it
    is partial, and ``--resume-from`` that JSON in an empty work dir (a
    fresh machine) trains only the rest, to the same plan."""
    import signal
    import time
    docs = tmp_path / 'docs'
    first = tmp_path / 'first'
    proc = subprocess.Popen([
        sys.executable, STUDY, '--work-dir',
        str(first), '--export',
        str(docs), *TINY
    ],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True,
                            cwd=str(tmp_path))
    saved = first / 'loss_study.json'
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if saved.exists() and json.loads(saved.read_text())['runs']:
            break
        time.sleep(0.5)
    assert proc.poll() is None, 'the study ended before it could be stopped'
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and 'interrupted' in err, err[-3000:]
    partial = json.loads((docs / 'loss_study.json').read_text())
    assert partial['complete'] is False
    assert 1 <= len(partial['runs']) < 6
    assert partial['calls'][0]['runs_trained'] == len(partial['runs'])
    assert '**Partial study**' in (docs / 'loss_study.md').read_text()

    second = tmp_path / 'second'
    result = subprocess.run([
        sys.executable, STUDY, '--work-dir',
        str(second), '--resume-from',
        str(docs / 'loss_study.json'), *TINY
    ],
                            capture_output=True,
                            text=True,
                            timeout=900,
                            cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert f"{len(partial['runs'])} finished runs taken from" in \
        result.stdout
    done = json.loads((second / 'loss_study.json').read_text())
    assert done['complete'] is True and len(done['runs']) == 6
    for key, run in partial['runs'].items():
        assert done['runs'][key] == run  # taken over, not trained again
    assert [c['runs_trained'] for c in done['calls']] == \
        [len(partial['runs']), 6 - len(partial['runs'])]
    assert '**Partial study**' not in (second / 'loss_study.md').read_text()
    # The published pair matches: the report is the JSON's.
    from projects.loss_study.loss_study.report import render
    assert (docs / 'loss_study.md').read_text() == render(partial)

    # The same command again, where the work dir survived: nothing is
    # restored or trained, and no call is counted twice.
    again = subprocess.run([
        sys.executable, STUDY, '--work-dir',
        str(second), '--resume-from',
        str(docs / 'loss_study.json'), *TINY
    ],
                           capture_output=True,
                           text=True,
                           timeout=600,
                           cwd=str(tmp_path))
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert '0 finished runs taken from' in again.stdout
    assert json.loads((second / 'loss_study.json').read_text())['calls'] \
        == done['calls']

    # A JSON made with other settings (a device included) or none at all
    # is refused, naming why, before the work dir is touched.
    other = dict(
        partial, settings=dict(partial['settings'], iters=5, gpus_per_job=1))
    (tmp_path / 'other.json').write_text(json.dumps(other))
    for source, why in (('other.json', 'other settings (gpus_per_job, '
                         'iters differ)'), ('missing.json',
                                            'missing.json: no such file')):
        refused = subprocess.run([
            sys.executable, STUDY, '--work-dir',
            str(tmp_path / 'third'), '--resume-from',
            str(tmp_path / source), *TINY
        ],
                                 capture_output=True,
                                 text=True,
                                 timeout=600,
                                 cwd=str(tmp_path))
        assert refused.returncode != 0
        assert why in refused.stderr, refused.stderr[-2000:]
        assert not (tmp_path / 'third').exists()

    # A later call that would publish the study without some of its runs
    # (other seeds, fewer families) is refused before anything is touched.
    for extra, words in ((['--final-seeds', '2'], 'final_seeds differ'),
                         (['--families', 'ce'], 'leaves out arb')):
        refused = subprocess.run(
            [sys.executable, STUDY, '--work-dir',
             str(second), *TINY, *extra],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=str(tmp_path))
        assert refused.returncode != 0 and words in refused.stderr, \
            refused.stderr[-2000:]
    assert json.loads((second / 'loss_study.json').read_text()) == done


def test_retry_failed_keeps_the_tuning_stage_once_finals_exist(tmp_path):
    """``--retry-failed`` forgets failed runs, but not a failed tuning run
    once the final stage has started from the choices it gave."""
    tool = load_tool()
    work = tmp_path / 'study'
    args = tool.parse_args(TINY + ['--work-dir', str(work), '--retry-failed'])
    settings = tool.study_settings(args)
    failed = work / 'runs' / 'tune' / 'adamw' / 'arb-batch-tau1' / 'd0-s0'
    final = work / 'runs' / 'final' / 'adamw' / 'ce' / 'd0-s100'
    tool.write_result(str(failed), dict(status='failed', error='E'))
    tool.prepare_work_dir(args, str(work), settings)
    assert not (failed / 'result.json').exists()  # no final run: retried
    tool.write_result(str(failed), dict(status='failed', error='E'))
    tool.write_result(str(final), dict(status='ok'))
    tool.prepare_work_dir(args, str(work), settings)
    assert (failed / 'result.json').exists()  # kept: the finals use it
