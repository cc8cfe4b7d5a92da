"""``TestTimeLogitAdjustHook``: a CamVid model trained two iterations on a
tiny prepared release, tested through mmengine's Runner (``load_from``,
the config's ``custom_hooks``) with and without the hook, and its
predictions against the argmax of the shifted logits computed here."""
import os.path as osp

import pytest
import torch
from helpers import CONFIGS, write_camvid_release
from mmengine.config import Config
from mmengine.runner import Runner

import mmseg_arb  # noqa: F401
from mmseg_arb.cli import main
from mmseg_arb.engine import TestTimeLogitAdjustHook
from mmseg_arb.utils.class_counts import load_class_counts

pytestmark = pytest.mark.slow  # trains and tests through the Runner

CONFIG = osp.join(
    CONFIGS, 'deeplabv3plus',
    'deeplabv3plus_r18-cpu_1xb8-1000iter_camvid-half-128x128.py')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(data root, checkpoint) of CE trained 2 iterations on a tiny
    prepared CamVid."""
    tmp = tmp_path_factory.mktemp('tta')
    write_camvid_release(tmp / 'src', height=36, width=48)
    root = tmp / 'camvid_half'
    main([
        'prepare', 'camvid',
        str(tmp / 'src'),
        str(root), '--scale', '0.5', '--no-progress'
    ])
    main([
        'train', CONFIG, '--work-dir',
        str(tmp / 'work'), '--cfg-options', *options(root),
        'train_dataloader.batch_size=2', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=2'
    ])
    return root, str(tmp / 'work' / 'iter_2.pth')


def options(root):
    stats = f'{root}/class_stats_train.json'
    return [
        f'{loader}.dataset.data_root={root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ] + [
        f'val_evaluator.class_counts={stats}',
        f'test_evaluator.class_counts={stats}'
    ] + [
        f'{loader}.{key}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
        for key in ('num_workers=0', 'persistent_workers=False')
    ]


def build_runner(root, checkpoint, work_dir, hooks=(), **test_cfg):
    """A Runner of the CPU config that tests ``checkpoint`` on ``root``."""
    cfg = Config.fromfile(CONFIG)
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)
        cfg[loader].dataset.data_root = str(root)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].class_counts = f'{root}/class_stats_train.json'
    cfg.model.test_cfg.update(test_cfg)
    cfg.work_dir = str(work_dir)
    cfg.load_from = checkpoint
    cfg.custom_hooks = list(hooks)
    return Runner.from_cfg(cfg)


def hook_cfg(root, tau):
    return dict(
        type='TestTimeLogitAdjustHook',
        tau=tau,
        class_counts=f'{root}/class_stats_train.json')


def test_tau_zero_changes_nothing_and_tau_changes_the_metrics(
        trained, tmp_path):
    root, checkpoint = trained
    plain = build_runner(root, checkpoint, tmp_path / 'plain').test()
    zero = build_runner(root, checkpoint, tmp_path / 'zero',
                        [hook_cfg(root, 0.0)]).test()
    shifted_runner = build_runner(root, checkpoint, tmp_path / 'tau',
                                  [hook_cfg(root, 3.0)])
    shifted = shifted_runner.test()
    assert zero == plain
    assert shifted != plain
    # The test loop is over: the model predicts as trained again.
    assert 'postprocess_result' not in vars(shifted_runner.model)


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_predictions_are_the_argmax_of_the_shifted_logits(
        trained, tmp_path, mode):
    root, checkpoint = trained
    extra = dict(mode='slide', crop_size=(16, 16), stride=(11, 11)) \
        if mode == 'slide' else dict(mode='whole')
    runner = build_runner(root, checkpoint, tmp_path, **extra)
    runner.load_or_resume()
    model = runner.model.eval()
    batch = next(iter(runner.test_dataloader))
    with torch.no_grad():
        plain = model.test_step(batch)
        tau = 0.75
        hook = TestTimeLogitAdjustHook(f'{root}/class_stats_train.json', tau)
        hook.before_test(runner)
        adjusted = model.test_step(batch)
        hook.after_test(runner)
        after = model.test_step(batch)
    counts = load_class_counts(f'{root}/class_stats_train.json')
    shift = -tau * torch.log(counts / counts.sum())
    changed = 0
    for p, a, q in zip(plain, adjusted, after):
        logits = p.seg_logits.data
        want = (logits.double() + shift.view(-1, 1, 1)).argmax(0)
        assert torch.equal(a.pred_sem_seg.data[0], want)
        assert torch.allclose(a.seg_logits.data,
                              logits + shift.view(-1, 1, 1).float())
        assert torch.equal(q.pred_sem_seg.data, p.pred_sem_seg.data)
        changed += int((want != p.pred_sem_seg.data[0]).sum())
    assert changed > 0  # the shift moved some pixels to other classes


def test_bad_settings_are_errors_that_say_what(trained, tmp_path):
    root, checkpoint = trained
    stats = f'{root}/class_stats_train.json'
    with pytest.raises(ValueError, match='tau must be a finite number >= 0'):
        TestTimeLogitAdjustHook(stats, tau=-1)
    with pytest.raises(ValueError, match=r'no pixels of classes \[1\]'):
        TestTimeLogitAdjustHook([5.0, 0.0, 3.0], tau=1)
    TestTimeLogitAdjustHook([5.0, 0.0, 3.0], tau=0)  # changes nothing
    runner = build_runner(
        root, checkpoint, tmp_path,
        [dict(type='TestTimeLogitAdjustHook', class_counts=[1.0] * 5)])
    with pytest.raises(ValueError, match='5 class counts, the model 11'):
        runner.test()
