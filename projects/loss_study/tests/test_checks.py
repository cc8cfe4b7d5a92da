"""The CamVid registration's checks (``loss_study.checks``, ``tools/
loss_study.py --checks``): the overrides are the registered
``--cfg-options``; which configurations each check trains; the order
comparison; the tool's scheduling (not before the final stage is complete,
a ``ce-tta`` candidate as an evaluation of the half-schedule CE run, none
without ``--checks``); and end to end on a tiny CamVid: the runs, their
configs, the JSON's ``checks`` and the report's section, kept by a later
call on a lost work dir."""
import argparse
import os.path as osp
import re
import shlex
import time

import pytest

from projects.loss_study.loss_study.checks import (compare, configurations,
                                                   order, overrides)
from projects.loss_study.loss_study.jobs import write_result
from projects.loss_study.loss_study.report import (analyse, check_results,
                                                   render, rule_checks)
from .made_up import BASE, add_checks, camvid_study, finished, shifted
from .test_camvid_study import STUDY, _module, run_study, tiny_camvid

PROJECT = osp.dirname(osp.dirname(osp.abspath(__file__)))
REGISTRATION = osp.join(PROJECT, 'camvid', 'PREREGISTRATION.md')


def registered_options():
    """The ``--cfg-options`` of the registration's two commands ("The SGD
    and convergence checks"), as ``tools/train.py`` parses them."""
    from mmengine.config import DictAction
    with open(REGISTRATION) as f:
        text = f.read()
    block = text[text.index('# SGD check'):]
    block = block[:block.index('```')].replace('\\\n', ' ')
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    found = []
    for line in block.splitlines():
        if 'tools/train.py' in line:
            words = shlex.split(line)
            options = words[words.index('--cfg-options'):]
            found.append(parser.parse_args(options).cfg_options)
    return found


def test_the_overrides_are_the_registered_cfg_options():
    sgd, half = registered_options()
    assert overrides('sgd', 2000, True) == sgd
    # The registered half schedule is written for 1000 iterations (500).
    assert overrides('half', 1000, True) == half
    assert overrides('half', 2000, True)['train_cfg.max_iters'] == 1000
    # A study that saves no checkpoints: the half schedule saves none.
    assert 'default_hooks.checkpoint.interval' not in overrides(
        'half', 1000, False)
    with pytest.raises(ValueError, match='sgd'):
        overrides('twice', 1000, True)


def test_the_overrides_merge_into_a_final_run_config():
    from mmengine.config import Config
    cfg = Config(
        dict(
            optim_wrapper=dict(
                type='OptimWrapper',
                optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4)),
            param_scheduler=[
                dict(type='PolyLR', power=0.9, end=2000, eta_min=1e-5)
            ],
            train_cfg=dict(max_iters=2000, val_interval=250),
            default_hooks=dict(checkpoint=dict(interval=250))))
    sgd = Config(cfg.to_dict())
    sgd.merge_from_dict(overrides('sgd', 2000, True))
    assert sgd.optim_wrapper.optimizer == dict(
        type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4)
    assert sgd.param_scheduler[0].eta_min == 1e-4
    assert sgd.param_scheduler[0].end == 2000
    half = Config(cfg.to_dict())
    half.merge_from_dict(overrides('half', 2000, True))
    assert half.train_cfg == dict(max_iters=1000, val_interval=1000)
    assert half.param_scheduler[0].end == 1000
    assert half.param_scheduler[0].eta_min == 1e-5
    assert half.default_hooks.checkpoint.interval == 1000
    assert half.optim_wrapper.optimizer.type == 'AdamW'


def test_which_configurations_each_check_trains():
    chosen = {
        'ce': 'ce',
        'arb': 'arb-b',
        'arb-weights': 'arb-w',
        'focal': 'focal-1',
        'ce-tta': 'ce-tta-t0.5'
    }
    # The README candidate: the recommended row; ARB + weights for CE.
    assert configurations(chosen, 'focal') == dict(
        sgd=['ce', 'arb-b', 'arb-w'], half=['ce', 'arb-b', 'focal-1'])
    assert configurations(chosen, 'ce')['half'] == ['ce', 'arb-b', 'arb-w']
    assert configurations(chosen, 'arb')['half'] == ['ce', 'arb-b']
    assert configurations(chosen,
                          'ce-tta')['half'] == ['ce', 'arb-b', 'ce-tta-t0.5']
    # A family the study lacks (or without a configuration) is left out.
    assert configurations(dict(chosen, arb=''), 'ce') == dict(
        sgd=['ce', 'arb-w'], half=['ce', 'arb-w'])


def test_the_order_comparison():
    final = dict(ce=dict(mIoU=40.0), a=dict(mIoU=45.0), b=dict(mIoU=42.0))
    same = compare(
        dict(ce=dict(mIoU=30.0), a=dict(mIoU=33.0), b=dict(mIoU=31.0)), final)
    assert same == dict(
        order=['a', 'b', 'ce'],
        final_order=['a', 'b', 'ce'],
        changed=False,
        missing=[])
    swapped = compare(
        dict(ce=dict(mIoU=30.0), a=dict(mIoU=31.0), b=dict(mIoU=31.5)), final)
    assert swapped['changed'] is True
    assert swapped['order'] == ['b', 'a', 'ce']
    # A run not finished (or failed), on either side: undecided.
    for check, finals in ((dict(ce=None, a=dict(mIoU=1.0)), final),
                          (dict(ce=dict(mIoU=1.0)), dict(ce=None))):
        undecided = compare(check, finals)
        assert undecided['changed'] is None and undecided['missing'] == ['ce']
    # Equal values keep the given order (CE first).
    assert order(dict(ce=40.0, a=40.0000001, b=41.0)) == ['b', 'ce', 'a']


def test_the_report_computes_item_7_from_the_check_runs():
    study = camvid_study({
        'ce': BASE,
        'arb': shifted(5.0),
        'arb-weights': shifted(1.0)
    })
    analysis = analyse(study)['adamw']
    assert check_results(study, analysis)['sgd']['changed'] is None
    add_checks(study, 'sgd', {'ce': 30.0, 'arb': 35.0, 'arb-weights': 31.0})
    add_checks(study, 'half', {'ce': 36.0, 'arb': 35.0})
    results = check_results(study, analysis)
    assert results['sgd']['keys'] == ['ce', 'arb', 'arb-weights']
    assert results['half']['keys'] == ['ce', 'arb']  # ARB is recommended
    assert rule_checks(results) == dict(
        sgd_order_changed=False, schedule_order_changed=True)
    text = render(study)
    assert '**Checks (seed 100)**' in text
    assert ('| ARB-Loss (ARB batch tau=1) | 35.00 | 90.00 | 45.10 | 90.00 '
            '|') in text
    assert 'Order changed: **no**' in text and 'Order changed: **yes**' \
        in text
    assert ('> The order changed between 1000 and 2000 iterations') in text
    # A failed check run decides nothing, and says so.
    study['runs']['check/half/arb/d0-s100']['status'] = 'failed'
    results = check_results(study, analysis)
    assert rule_checks(results) == dict(sgd_order_changed=False)
    text = render(study)
    assert '| ARB-Loss (ARB batch tau=1) | failed | failed |' in text
    assert 'not determined (a run not finished or failed: ARB-Loss' in text
    assert '**Placeholder**, item 7: the convergence check' in text


def test_the_ce_curve_statement():
    study = camvid_study({'ce': BASE})
    text = render(study)
    assert ("CE's validation curve at the end of the schedule: no finished "
            'final CE run has a validation curve.') in text
    for i, seed in enumerate(range(100, 105)):
        study['runs'][f'final/adamw/ce/d0-s{seed}']['curve'] = [[2, 30.0],
                                                                [4, 30.4 + i]]
    # Mean at iteration 4: 32.4, +2.4 over 30.0.
    assert ('(mean of 5 final runs): validation mIoU 30.00 at iteration 2, '
            '32.40 at 4 (+2.40): still rising') in render(study)
    for run in study['runs'].values():
        run['curve'][-1][1] = 30.5
    assert 'not rising any more' in render(study)


# The tool ---------------------------------------------------------------


def test_checks_is_refused_where_it_cannot_run(capsys, tmp_path):
    tool = _module('loss_study_tool', STUDY)
    camvid = [
        '--dataset', 'camvid', '--data-root',
        str(tmp_path), '--checks', '--iters', '4'
    ]
    for argv, words in (
        (['--checks'], '--dataset camvid'),
        (camvid + ['--families', 'ce', 'arb'], 'arb and arb-weights'),
        (camvid + ['--families', 'arb', 'arb-weights', '--iters', '5'],
         'even number'),
        (camvid + ['--families', 'arb', 'arb-weights', '--tuning-only'],
         '--tuning-only'),
        (camvid + ['--families', 'arb', 'arb-weights', '--optimizers', 'sgd'],
         '--optimizers adamw'),
    ):
        with pytest.raises(SystemExit):
            tool.parse_args(argv)
        assert words in capsys.readouterr().err, argv
    assert tool.parse_args(camvid +
                           ['--families', 'arb', 'arb-weights']).checks


def test_the_tool_schedules_the_checks_once_the_final_stage_is_complete(
        tmp_path):
    """In process, with made-up results (no training): a study where
    ``ce-tta`` wins, so it is the README candidate: nothing before the last
    final run, then the SGD and half-schedule runs (their configs: the
    final run's with the registered overrides), and the ``ce-tta`` check
    once ``check/half/ce`` has finished: an evaluation of its last
    checkpoint on val and test. Without ``--checks``: none."""
    from mmengine.config import Config
    tool = _module('loss_study_tool', STUDY)
    data_root = tiny_camvid(tmp_path)

    def call(*extra):
        args = tool.parse_args([
            '--dataset', 'camvid', '--data-root', data_root, '--work-dir',
            str(tmp_path / 'study'), '--families', 'ce', 'arb', 'arb-weights',
            'ce-tta', '--tune-seeds', '1', '--final-seeds', '2', '--iters',
            '4', '--checkpoint-interval', '4', '--crop', '32', '32',
            '--no-progress', *extra
        ])
        work_dir = osp.abspath(args.work_dir)
        plan = tool.prepare_data(args, work_dir)
        study = tool.new_study(args, tool.study_settings(args), plan, {})
        return tool.StudyCall(args, work_dir, study, plan, time.time(),
                              [0.0] * 3)

    checks = call('--checks')
    results = {}

    def finish(key, miou):
        results[key] = finished(miou)
        write_result(str(tmp_path / 'study' / 'runs' / key), results[key])

    first = {}  # each family's first configuration is chosen
    for fam in checks.study['families']:
        first[fam['key']] = fam['losses'][0]['key']
        for i, loss in enumerate(fam['losses']):
            if fam['key'] != 'ce':
                finish(f"tune/adamw/{loss['key']}/d0-s0", 50.0 - i)
    finish('tune/adamw/ce/d0-s0', 40.0)
    for fam, key in first.items():
        for seed in (100, 101):
            # ce-tta 5 points above every other row in both pairs: it
            # beats them all, and the rule recommends it (case 4).
            finish(f'final/adamw/{key}/d0-s{seed}',
                   seed - 60.0 + (5.0 if fam == 'ce-tta' else 0.0))
    last = f"final/adamw/{first['arb']}/d0-s101"
    del results[last]
    (tmp_path / 'study' / 'runs' / last / 'result.json').unlink()

    def check_keys(runs):
        return sorted(r.key for r in runs if r.key.startswith('check/'))

    assert check_keys(checks.first_runs()) == []
    new = checks.after_each_run(results)
    assert check_keys(new) == []  # the final stage is not complete
    assert last in [r.key for r in new]
    finish(last, 41.0)
    new = checks.after_each_run(results)
    arb, weights, tta = first['arb'], first['arb-weights'], first['ce-tta']
    assert check_keys(new) == sorted(
        [f'check/sgd/{k}/d0-s100' for k in ('ce', arb, weights)] +
        [f'check/half/{k}/d0-s100' for k in ('ce', arb)])
    assert checks.after_each_run(results) == []  # scheduled once
    runs = {r.key: r for r in new}
    for key, run in runs.items():
        assert run.args[1] == osp.join(run.run_dir, 'config.py')
        cfg = Config.fromfile(run.args[1])
        assert cfg.randomness.seed == 100 and cfg.work_dir == run.run_dir
        assert 'TestAfterTrainHook' in str(cfg.custom_hooks)
        if key.startswith('check/sgd/'):
            assert cfg.optim_wrapper.optimizer == dict(
                type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4)
            assert cfg.param_scheduler[0].eta_min == 1e-4
            assert cfg.train_cfg.max_iters == 4 and run.iters == 4
        else:
            assert cfg.optim_wrapper.optimizer.type == 'AdamW'
            assert cfg.train_cfg.max_iters == cfg.train_cfg.val_interval \
                == cfg.param_scheduler[0].end == 2 == run.iters
            assert cfg.default_hooks.checkpoint.interval == 2
    # The ce-tta candidate waits for check/half/ce, then evaluates its
    # last checkpoint (iteration 2 of the half schedule).
    ce_dir = tmp_path / 'study' / 'runs' / 'check' / 'half' / 'ce' / 'd0-s100'
    finish('check/half/ce/d0-s100', 20.0)
    (ce_dir / 'iter_2.pth').write_bytes(b'')
    evaluation, = checks.after_each_run(results)
    assert evaluation.key == f'check/half/{tta}/d0-s100'
    assert evaluation.args[-1] == '--test'
    cfg = Config.fromfile(evaluation.args[-2])
    assert cfg.load_from == str(ce_dir / 'iter_2.pth')
    assert 'TestTimeLogitAdjustHook' in str(cfg.custom_hooks)
    assert cfg.train_cfg.max_iters == 2

    # Without --checks: the same complete study schedules none.
    plain = call()
    plain.first_runs()
    assert check_keys(plain.after_each_run(results)) == []


@pytest.mark.slow  # see tests/conftest.py
def test_checks_end_to_end_on_a_tiny_camvid(tmp_path):
    data_root = tiny_camvid(tmp_path)
    work, docs = tmp_path / 'study', tmp_path / 'docs'

    def call(work_dir, *extra):
        return run_study(tmp_path, data_root, work_dir, '--families', 'ce',
                         'arb', 'arb-weights', '--tune-seeds', '1',
                         '--final-seeds', '1', '--iters', '4',
                         '--curve-interval', '2', '--checkpoint-interval', '4',
                         *extra)

    # Without --checks: the study, and no check.
    _, study = call(work, '--export', str(docs))
    assert study['complete'] and len(study['runs']) == 8 + 3
    assert not any(k.startswith('check/') for k in study['runs'])
    assert not (work / 'runs' / 'check').exists()
    assert 'checks' not in study
    assert '* SGD (lr 0.1, momentum 0.9, weight decay 5e-4, poly to 1e-4) ' \
        'against AdamW: not run yet' in (docs / 'loss_study.md').read_text()

    # --checks on the finished study: only the checks are trained. One final
    # seed gives no interval: the rule recommends CE (case 3), so the README
    # candidate is the chosen ARB + weights.
    out, checked = call(work, '--export', str(docs), '--checks')
    assert '11 runs finished before, not trained again' in out
    runs = checked['runs']
    assert {k: runs[k] for k in study['runs']} == study['runs']
    chosen = {
        f: analyse(checked)['adamw']['chosen'][f]
        for f in ('arb', 'arb-weights')
    }
    keys = ['ce', chosen['arb'], chosen['arb-weights']]
    assert sorted(k for k in runs if k.startswith('check/')) == sorted(
        f'check/{kind}/{k}/d0-s100' for kind in ('sgd', 'half') for k in keys)
    from mmengine.config import Config
    for kind in ('sgd', 'half'):
        for key in keys:
            run = runs[f'check/{kind}/{key}/d0-s100']
            assert run['status'] == 'ok', run
            assert len(run['test']['per_class_iou']) == 11
            cfg = Config.fromfile(
                str(work / 'runs' / 'check' / kind / key / 'd0-s100' /
                    'config.py'))
            final = Config.fromfile(
                str(work / 'runs' / 'final' / 'adamw' / key / 'd0-s100' /
                    'config.py'))
            assert cfg.model == final.model  # the same loss and model
            assert cfg.randomness == final.randomness
            if kind == 'sgd':
                assert cfg.optim_wrapper.optimizer.type == 'SGD'
                assert cfg.param_scheduler[0].eta_min == 1e-4
                assert cfg.train_cfg == final.train_cfg
                # The same validations as the final run (a curve for CE
                # and ARB).
                assert [s for s, _ in run['curve']] == [
                    s for s, _ in runs[f'final/adamw/{key}/d0-s100']['curve']
                ]
            else:
                assert cfg.optim_wrapper == final.optim_wrapper
                assert cfg.train_cfg.max_iters == 2
                assert cfg.param_scheduler[0].end == 2
                assert [s for s, _ in run['curve']] == [2]
    # Item 7, from these runs and the AdamW seed-100 runs.
    mious = {
        stage: [
            runs[f'{stage}/{k}/d0-s100']['test']['summary']['mIoU']
            for k in keys
        ]
        for stage in ('check/sgd', 'check/half', 'final/adamw')
    }

    def ranked(values):
        return sorted(range(3), key=lambda i: (-round(values[i], 6), i))

    assert rule_checks(check_results(
        checked,
        analyse(checked)['adamw'])) == dict(
            sgd_order_changed=ranked(mious['check/sgd'])
            != ranked(mious['final/adamw']),
            schedule_order_changed=ranked(mious['check/half'])
            != ranked(mious['final/adamw']))
    report = (docs / 'loss_study.md').read_text()
    assert report == render(checked)
    assert '**Checks (seed 100)**' in report
    assert 'Placeholder' not in report
    assert re.search(
        r'\| Cross-entropy \(CE\) \| [\d.]+ \| [\d.]+ \| '
        r'[\d.]+ \| [\d.]+ \|', report)
    # The study is complete: its accounting has no check in it.
    assert checked['complete'] and '**Partial study**' not in report
    assert checked['planned'] == study['planned']

    # A lost work dir, resumed from the published JSON by a call without
    # --checks: nothing trained, the check runs kept.
    out, kept = call(tmp_path / 'fresh', '--resume-from',
                     str(docs / 'loss_study.json'))
    assert '17 runs finished before, not trained again' in out
    assert kept['runs'] == checked['runs']
    assert rule_checks(check_results(kept, analyse(kept)['adamw'])) == \
        rule_checks(check_results(checked, analyse(checked)['adamw']))
