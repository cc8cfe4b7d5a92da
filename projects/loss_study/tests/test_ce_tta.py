"""``--families ... ce-tta`` (the CamVid study's test-time logit
adjustment of CE): CE trained at the tuning seeds, the last checkpoints of
the CE runs evaluated with ``TestTimeLogitAdjustHook`` through the Runner,
``tau`` chosen on ``val`` by the study's rule, the chosen ``tau`` on the
final CE checkpoints' ``val`` and ``test`` as a row paired with CE; added
by ``--resume-from`` to a study that ran without it, and after a lost work
dir."""
import json
import os

import pytest

from .test_camvid_study import STUDY, _module, run_study, tiny_camvid

TAUS = ('0.25', '0.5', '0.75', '1')


def call(tmp_path, data_root, work_dir, *extra):
    return run_study(tmp_path, data_root, work_dir, '--tune-seeds', '1',
                     '--final-seeds', '2', '--iters', '2', '--curve-interval',
                     '1', '--checkpoint-interval', '2', *extra)


def mtimes(work_dir):
    return {
        str(p): os.stat(p).st_mtime_ns
        for p in (work_dir / 'runs').glob('**/result.json')
    }


@pytest.mark.slow  # see tests/conftest.py
def test_ce_tta_added_by_resume_then_after_a_lost_work_dir(tmp_path):
    data_root = tiny_camvid(tmp_path)
    work, docs = tmp_path / 'study', tmp_path / 'docs'
    _, first = call(tmp_path, data_root, work, '--families', 'ce', '--export',
                    str(docs))
    assert sorted(
        first['runs']) == ['final/adamw/ce/d0-s100', 'final/adamw/ce/d0-s101']
    before = mtimes(work)

    # The same study resumed with ce-tta: nothing retrained, only CE at the
    # tuning seed and the evaluations added.
    out, study = call(tmp_path, data_root, work, '--families',
                      'ce', 'ce-tta', '--resume-from',
                      str(docs / 'loss_study.json'), '--export', str(docs))
    assert '2 runs finished before, not trained again' in out
    assert {p: t for p, t in mtimes(work).items() if p in before} == before
    runs = study['runs']
    assert {k: runs[k] for k in first['runs']} == first['runs']
    tuning = [runs[f'tune/adamw/ce-tta-t{t}/d0-s0'] for t in TAUS]
    # The registered rule: highest val mIoU, ties to the smaller tau.
    best = max(
        range(len(TAUS)),
        key=lambda i: (round(tuning[i]['summary']['mIoU'], 6), -i))
    chosen = f'ce-tta-t{TAUS[best]}'
    finals = [f'final/adamw/{chosen}/d0-s{s}' for s in (100, 101)]
    assert sorted(set(runs) - set(first['runs'])) == sorted(
        ['tune/adamw/ce/d0-s0'] +
        [f'tune/adamw/ce-tta-t{t}/d0-s0' for t in TAUS] + finals)
    assert study['planned'] == dict(tune=1, final=2, evaluate=6)
    assert all(r['status'] == 'ok' for r in runs.values())
    assert not any('test' in r for r in tuning)  # val only
    for key in finals:
        assert len(runs[key]['test']['per_class_iou']) == 11
        assert set(runs[key]['summary']) >= {'mIoU', 'mIoU_tail', 'aAcc'}
    # Each evaluation loaded its CE run's last checkpoint, with the hook.
    from mmengine.config import Config
    ce_dir = work / 'runs' / 'final' / 'adamw' / 'ce' / 'd0-s101'
    run_dir = work / 'runs' / finals[1]
    cfg = Config.fromfile(str(run_dir / 'config.py'))
    assert cfg.load_from == str(ce_dir / 'iter_2.pth')
    assert dict(
        type='TestTimeLogitAdjustHook',
        tau=float(TAUS[best]),
        class_counts=os.path.join(
            data_root, 'class_stats_train.json')) in cfg.custom_hooks
    assert f'Load checkpoint from {ce_dir}/iter_2.pth' in (
        run_dir / 'train.log').read_text()
    # The report: ce-tta's tuning rows, its final row, paired with CE.
    report = (docs / 'loss_study.md').read_text()
    assert report.count('| Test-time logit adjustment of CE | CE + '
                        'test-time adjustment tau=') == 4 + 2
    name = f'CE + test-time adjustment tau={TAUS[best]}'
    assert f'| {name} - CE |' in report
    assert f'* {name} ' in report  # its verdict against CE

    # A lost work dir: CE's final checkpoints are gone, and an evaluation
    # that had not finished fails, naming the checkpoint and the fix;
    # --retry-failed trains that CE run again and evaluates it.
    partial = dict(study, runs=dict(runs))
    del partial['runs'][finals[1]]
    (tmp_path / 'partial.json').write_text(json.dumps(partial))
    fresh = tmp_path / 'fresh'
    _, lost = call(tmp_path, data_root, fresh, '--families', 'ce', 'ce-tta',
                   '--resume-from', str(tmp_path / 'partial.json'))
    failed = lost['runs'][finals[1]]
    assert failed['status'] == 'failed'
    for words in (f'{fresh}/runs/final/adamw/ce/d0-s101/iter_2.pth',
                  '--retry-failed trains final/adamw/ce/d0-s101 again'):
        assert words in failed['error']
    assert '**Final runs that failed**' in (fresh /
                                            'loss_study.md').read_text()
    assert {k: r for k, r in lost['runs'].items() if k != finals[1]} == \
        partial['runs']
    out, fixed = call(tmp_path, data_root, fresh, '--families', 'ce', 'ce-tta',
                      '--retry-failed')
    assert 'final/adamw/ce/d0-s101 is trained again' in out
    retrained = {'final/adamw/ce/d0-s101', finals[1]}
    assert all(fixed['runs'][k]['status'] == 'ok' for k in retrained)
    assert {k: r for k, r in fixed['runs'].items() if k not in retrained} \
        == {k: r for k, r in partial['runs'].items() if k not in retrained}


def test_ce_tta_needs_the_checkpoints_it_evaluates(capsys):
    tool = _module('loss_study_tool', STUDY)
    with pytest.raises(SystemExit):
        tool.parse_args(['--families', 'ce-tta'])
    assert '--checkpoint-interval' in capsys.readouterr().err
    args = tool.parse_args(
        ['--families', 'ce-tta', '--checkpoint-interval', '250'])
    assert args.families == ['ce', 'ce-tta']
    assert 'ce-tta' not in tool.parse_args([]).families  # not a default


def test_an_evaluation_without_its_checkpoint_says_why(tmp_path):
    """A failed CE run, or a finished one whose checkpoint is gone, gives
    the evaluation's error: the run, the checkpoint, the fix."""
    from projects.loss_study.loss_study.jobs import write_result
    tool = _module('loss_study_tool', STUDY)
    key = 'final/adamw/ce/d0-s100'
    run_dir = tmp_path / 'runs' / key
    write_result(str(run_dir), dict(status='failed', error='IndexError'))
    error = tool.missing_checkpoint(str(tmp_path), key, 4)
    assert error.startswith(f'{key} failed, no checkpoint to evaluate')
    assert f'--retry-failed trains {key} again' in error
    write_result(str(run_dir), dict(status='ok'))
    error = tool.missing_checkpoint(str(tmp_path), key, 4)
    assert error.startswith(f'no checkpoint {run_dir}/iter_4.pth')
    (run_dir / 'iter_4.pth').write_bytes(b'')
    assert tool.missing_checkpoint(str(tmp_path), key, 4) is None
