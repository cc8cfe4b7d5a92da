"""The user's workflow through the real mmengine Runner on CPU: the shipped
configs (shrunk only where CPU forces it) train on generated data in the
real layouts, validate, checkpoint, resume, test; dist_train.sh runs 2
processes. Slow-ish (about a minute each); they run in CI all the same."""
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from helpers import CONFIGS, ROOT, free_port, shrink_for_cpu
from mmengine.config import Config
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

import mmseg_arb  # noqa: F401
from mmseg_arb.cli.launch import build_runner
from mmseg_arb.datasets.synthetic import SyntheticSpec, generate_dataset

pytestmark = pytest.mark.slow  # see tests/conftest.py

FAMILIES = {
    'ade20k-deeplabv3plus':
    'deeplabv3plus/deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512.py',
    'ade20k-segformer':
    'segformer/segformer_mit-b0_arb_8xb2-160k_ade20k-512x512.py',
    'cityscapes-deeplabv3plus':
    'deeplabv3plus/deeplabv3plus_r50-d8_arb_4xb2-40k_cityscapes-512x1024.py',
    'cityscapes-segformer':
    'segformer/segformer_mit-b0_arb_8xb1-160k_cityscapes-1024x1024.py',
}


@pytest.fixture(scope='session')
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    out = {}
    for layout, size in (('ade20k', (64, 64)), ('cityscapes', (64, 128))):
        out[layout] = str(root / layout)
        generate_dataset(
            out[layout],
            SyntheticSpec(
                layout=layout,
                num_train=8,
                num_val=3,
                height=size[0],
                width=size[1],
                rarest_share=2e-3,
                seed=1),
            progress=False)
    return out


@HOOKS.register_module(force=True)
class RecordState(Hook):
    """Remembers the iteration and ARB count state when training starts."""

    def before_train(self, runner):
        runner.recorded = (runner.iter, {
            name: buf.clone()
            for name, buf in runner.model.state_dict().items()
            if 'estimator' in name
        })


def _runner_cfg(family, datasets, work_dir, **loss_override):
    cfg = Config.fromfile(osp.join(CONFIGS, FAMILIES[family]))
    layout = family.split('-')[0]
    cfg = shrink_for_cpu(cfg, datasets[layout], str(work_dir), iters=4)
    for head in ('decode_head', 'auxiliary_head'):
        if cfg.model.get(head):
            cfg.model[head].loss_decode.update(loss_override)
    return cfg


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_train_validate_checkpoint_resume(family, datasets, tmp_path):
    cfg = _runner_cfg(family, datasets, tmp_path, count_mode='cumulative')
    runner = build_runner(cfg)
    runner.train()
    assert 0 <= runner.message_hub.get_scalar('val/mIoU').current() <= 100
    assert osp.exists(tmp_path / 'iter_4.pth')
    saved = torch.load(tmp_path / 'iter_4.pth', map_location='cpu')
    counts = {k: v for k, v in saved['state_dict'].items() if 'estimator' in k}
    assert any(k.endswith('counts') and v.sum() > 0 for k, v in counts.items())

    resumed = _runner_cfg(family, datasets, tmp_path, count_mode='cumulative')
    resumed.train_cfg.max_iters = 6
    resumed.resume = True
    resumed.custom_hooks = [dict(type='RecordState')]
    runner = build_runner(resumed)
    runner.train()
    start_iter, state = runner.recorded
    assert start_iter == 4
    for name, buf in state.items():
        torch.testing.assert_close(buf, counts[name])
    assert runner.iter == 6


def test_count_driven_class_weights_train_and_resume(datasets, tmp_path):
    # weight_power through the Runner: the dumped config keeps it, the
    # weighted loss trains, and --resume continues from the saved counts.
    family = 'ade20k-segformer'
    loss = dict(count_mode='cumulative', weight_power=0.5)
    runner = build_runner(_runner_cfg(family, datasets, tmp_path, **loss))
    runner.train()
    assert torch.isfinite(
        torch.tensor(runner.message_hub.get_scalar('train/loss').current()))
    # The config the Runner dumped to the work dir (what --resume and
    # mmseg's test.py read).
    dumped, = glob.glob(str(tmp_path / '*.py'))
    dumped = Config.fromfile(dumped)
    assert dumped.model.decode_head.loss_decode.weight_power == 0.5
    resumed = _runner_cfg(family, datasets, tmp_path, **loss)
    resumed.train_cfg.max_iters = 6
    resumed.resume = True
    runner = build_runner(resumed)
    runner.train()
    estimator = runner.model.decode_head.loss_decode.estimator
    assert estimator.weight_power == 0.5 and estimator.counts.sum() > 0
    assert runner.iter == 6


def test_test_tool_evaluates_a_checkpoint(datasets, tmp_path):
    family = 'ade20k-deeplabv3plus'
    cfg = _runner_cfg(family, datasets, tmp_path)
    build_runner(cfg).train()
    cfg_path = tmp_path / 'cfg.py'
    cfg.dump(str(cfg_path))
    result = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'test.py'),
        str(cfg_path),
        str(tmp_path / 'iter_4.pth'), '--work-dir',
        str(tmp_path / 'test')
    ],
                            capture_output=True,
                            text=True,
                            timeout=600,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'mIoU' in result.stdout + result.stderr


def test_dist_train_two_processes_on_cpu(datasets, tmp_path):
    """Two processes on CPU run gloo, and the log says so, whatever backend
    the config names (mmseg's runtime config says nccl)."""
    cfg = _runner_cfg('ade20k-deeplabv3plus', datasets, tmp_path)
    cfg.env_cfg.dist_cfg = dict(backend='nccl')
    cfg_path = tmp_path / 'cfg.py'
    cfg.dump(str(cfg_path))
    env = dict(
        os.environ,
        PORT=str(free_port()),
        PYTHON=sys.executable,
        OMP_NUM_THREADS='1')
    result = subprocess.run([
        'bash',
        osp.join(ROOT, 'tools', 'dist_train.sh'),
        str(cfg_path), '2', '--work-dir',
        str(tmp_path / 'dist')
    ],
                            capture_output=True,
                            text=True,
                            timeout=900,
                            cwd=ROOT,
                            env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'Iter(train) [4/4]' in log
    assert glob.glob(str(tmp_path / 'dist' / 'iter_4.pth'))
    runtime = log[log.index('Runtime environment:'):log.
                  index('Distributed launcher')]
    assert "dist_cfg: {'backend': 'gloo'}" in runtime, runtime


# Runs `mmseg-arb train` as one rank of a gloo group and reports whether
# the threads that starting the group made outlive the command.
GROUP_THREADS = r"""
import json, os, sys, weakref
import torch.distributed as dist

start_group, seen = dist.init_process_group, {}


def tasks():
    return set(os.listdir('/proc/self/task'))


def init_process_group(*args, **kwargs):
    from mmseg import registry
    from mmengine.registry import Registry
    seen['late'] = sorted({
        m for r in vars(registry).values() if isinstance(r, Registry)
        for m in r._locations if m not in sys.modules})
    before = tasks()
    start_group(*args, **kwargs)
    seen['threads'] = tasks() - before
    seen['group'] = weakref.ref(dist.group.WORLD)


dist.init_process_group = init_process_group
from mmseg_arb.cli import main
main(sys.argv[1:])
print(json.dumps(dict(late=seen['late'], started=len(seen['threads']),
                      alive=len(seen['threads'] & tasks()),
                      group_alive=seen['group']() is not None,
                      initialized=dist.is_initialized())))
"""


@pytest.mark.skipif(
    not osp.isdir('/proc/self/task'), reason='threads are listed from /proc')
def test_a_distributed_run_ends_its_process_group(datasets, tmp_path):
    """Once `mmseg-arb train --launcher pytorch` returns, the gloo group it
    started is gone, threads and all: a group left to the interpreter's
    exit lets a gloo worker thread free its last work while Python
    finalizes, and that thread aborts the process (SIGABRT, "terminate
    called without an active exception"; docs/upstream/
    gloo_abort_at_exit.md). And the modules mmseg's registries import were
    imported before the group started (one imported later may keep the
    group alive)."""
    cfg = _runner_cfg('ade20k-deeplabv3plus', datasets, tmp_path)
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 2
    cfg_path = tmp_path / 'cfg.py'
    cfg.dump(str(cfg_path))
    env = dict(
        os.environ,
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(free_port()),
        RANK='0',
        LOCAL_RANK='0',
        WORLD_SIZE='1',
        OMP_NUM_THREADS='1')
    result = subprocess.run([
        sys.executable, '-c', GROUP_THREADS, 'train',
        str(cfg_path), '--work-dir',
        str(tmp_path / 'dist'), '--launcher', 'pytorch'
    ],
                            capture_output=True,
                            text=True,
                            timeout=600,
                            cwd=ROOT,
                            env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['started'] > 0  # what the check below looks for
    assert report == dict(
        late=[],
        started=report['started'],
        alive=0,
        group_alive=False,
        initialized=False), report


def _trained(family, datasets, work_dir):
    cfg = _runner_cfg(family, datasets, work_dir)
    build_runner(cfg).train()
    cfg_path = work_dir / 'cfg.py'
    cfg.dump(str(cfg_path))
    return str(cfg_path), str(work_dir / 'iter_4.pth')


def _test_tool(cfg_path, checkpoint, *options):
    return subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'test.py'), cfg_path, checkpoint,
        '--cfg-options', *options
    ],
                          capture_output=True,
                          text=True,
                          timeout=600,
                          cwd=ROOT)


def test_ade20k_test_server_pngs(datasets, tmp_path):
    """format_only: one PNG per image, labels back in ADE20K's 1..150."""
    import numpy as np
    from PIL import Image
    cfg_path, ckpt = _trained('ade20k-deeplabv3plus', datasets, tmp_path)
    out = tmp_path / 'ade_submission'
    result = _test_tool(cfg_path, ckpt, 'test_evaluator.format_only=True',
                        f'test_evaluator.output_dir={out}')
    assert result.returncode == 0, result.stderr[-3000:]
    pngs = sorted(out.glob('ADE_val_*.png'))
    assert len(pngs) == 3
    values = np.unique(np.asarray(Image.open(pngs[0])))
    assert values.min() >= 1 and values.max() <= 150


def test_cityscapes_test_server_format(datasets, tmp_path):
    """CityscapesMetric format_only: labelIds PNGs named after the images."""
    import cityscapesscripts.helpers.labels as cs_labels
    import numpy as np
    from PIL import Image
    cfg_path, ckpt = _trained('cityscapes-deeplabv3plus', datasets, tmp_path)
    out = tmp_path / 'cityscapes_submission'
    result = _test_tool(cfg_path, ckpt, 'test_evaluator.type=CityscapesMetric',
                        'test_evaluator.format_only=True',
                        'test_evaluator.keep_results=True',
                        f'test_evaluator.output_dir={out}')
    assert result.returncode == 0, result.stderr[-3000:]
    pngs = sorted(out.glob('*_leftImg8bit.png'))
    assert len(pngs) == 3
    label_ids = {cs_labels.trainId2label[t].id for t in range(19)}
    assert set(np.unique(np.asarray(Image.open(pngs[0])))) <= label_ids


def test_mmseg_own_train_tool_resumes(datasets, tmp_path):
    """mmseg's tools/train.py --resume works once the config imports
    mmseg_arb (torch >= 2.6 weights_only loading)."""
    import mmseg
    mmseg_train = osp.join(
        osp.dirname(mmseg.__file__), '.mim', 'tools', 'train.py')
    cfg = _runner_cfg(
        'ade20k-deeplabv3plus', datasets, tmp_path, count_mode='cumulative')
    cfg_path = tmp_path / 'cfg.py'
    cfg.dump(str(cfg_path))
    first = subprocess.run([sys.executable, mmseg_train,
                            str(cfg_path)],
                           capture_output=True,
                           text=True,
                           timeout=600,
                           cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run([
        sys.executable, mmseg_train,
        str(cfg_path), '--resume', '--cfg-options', 'train_cfg.max_iters=6'
    ],
                            capture_output=True,
                            text=True,
                            timeout=600,
                            cwd=ROOT)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert 'resumed epoch: 0, iter: 4' in log
    assert 'Iter(train) [6/6]' in log


def _mmseg_tool(name):
    import mmseg
    return osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', name)


def test_config_dumped_by_the_base_switch_tests_and_resumes(
        datasets, tmp_path):
    """The one-line `_base_` switch: the config mmengine dumps to the work
    dir holds ARBLoss and ARBRunner already; mmseg's own test.py and
    train.py --resume take it as it is."""
    user = tmp_path / 'my_deeplab.py'
    user.write_text(
        "_base_ = ['mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_"
        f"ade20k-512x512.py', '{osp.join(CONFIGS, '_base_', 'arb.py')}']\n"
        "arb = dict(count_mode='cumulative')\n")
    cfg = shrink_for_cpu(
        Config.fromfile(str(user)),
        datasets['ade20k'],
        str(tmp_path / 'work'),
        iters=4)
    cfg_path = tmp_path / 'shrunk.py'
    cfg.dump(str(cfg_path))
    train = subprocess.run(
        [sys.executable,
         _mmseg_tool('train.py'),
         str(cfg_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT)
    assert train.returncode == 0, train.stderr[-3000:]
    dumped = tmp_path / 'work' / 'shrunk.py'
    dumped_cfg = Config.fromfile(str(dumped))
    assert dumped_cfg.model.decode_head.loss_decode.type == 'ARBLoss'
    assert dumped_cfg.custom_hooks == [dict(type='ClassCountHook')]

    test = subprocess.run([
        sys.executable,
        _mmseg_tool('test.py'),
        str(dumped),
        str(tmp_path / 'work' / 'iter_4.pth')
    ],
                          capture_output=True,
                          text=True,
                          timeout=600,
                          cwd=ROOT)
    assert test.returncode == 0, test.stderr[-3000:]
    assert 'mIoU' in test.stdout + test.stderr
    resume = subprocess.run([
        sys.executable,
        _mmseg_tool('train.py'),
        str(dumped), '--resume', '--cfg-options', 'train_cfg.max_iters=6'
    ],
                            capture_output=True,
                            text=True,
                            timeout=600,
                            cwd=ROOT)
    log = resume.stdout + resume.stderr
    assert resume.returncode == 0, log[-3000:]
    assert 'resumed epoch: 0, iter: 4' in log
    assert 'Iter(train) [6/6]' in log


@HOOKS.register_module(force=True)
class RecordLosses(Hook):
    """Remembers every training iteration's total loss."""

    def before_train(self, runner):
        runner.losses = []

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        runner.losses.append(float(outputs['loss'].detach()))


def test_prior_config_fine_tunes_from_a_batch_mode_checkpoint(
        datasets, tmp_path, monkeypatch):
    """class_counts.py writes the prior next to the data; the arb-prior
    config finds it there from any working directory, and a load_from of a
    batch-mode checkpoint (whose last-batch counts miss classes) neither
    replaces it nor makes the loss infinite."""
    import json
    data_root = datasets['ade20k']
    pretrain = _runner_cfg('ade20k-deeplabv3plus', datasets,
                           tmp_path / 'batch')
    build_runner(pretrain).train()

    prior_config = osp.join(
        CONFIGS, 'deeplabv3plus',
        'deeplabv3plus_r50-d8_arb-prior_4xb4-80k_ade20k-512x512.py')
    stats = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'class_counts.py'), prior_config, '--workers',
        '1', '--no-progress', '--cfg-options',
        f'train_dataloader.dataset.data_root={data_root}'
    ],
                           capture_output=True,
                           text=True,
                           timeout=600,
                           cwd=ROOT)
    assert stats.returncode == 0, stats.stderr[-3000:]
    with open(osp.join(data_root, 'class_stats_train.json')) as f:
        prior = json.load(f)['counts']

    cfg = shrink_for_cpu(
        Config.fromfile(prior_config),
        data_root,
        str(tmp_path / 'prior'),
        iters=2)
    # 8 small generated images miss some of the 150 classes: a pixel of
    # those would get an infinite loss without a pseudo-count.
    for head in ('decode_head', 'auxiliary_head'):
        cfg.model[head].loss_decode.smoothing = 1.0
    cfg.load_from = str(tmp_path / 'batch' / 'iter_4.pth')
    cfg.custom_hooks.append(dict(type='RecordLosses'))
    monkeypatch.chdir(tmp_path)  # no data below the working directory
    runner = build_runner(cfg)
    runner.train()
    assert len(runner.losses) == 2
    assert all(0 < loss < 100 for loss in runner.losses)
    for name, buf in runner.model.named_buffers():
        if name.endswith('estimator.counts'):
            assert buf.tolist() == prior, name


def test_bad_labels_of_the_last_iterations_stop_training(
        datasets, tmp_path, monkeypatch):
    """A label outside the classes in the data (ADE20K value 201 is 200
    after reduce_zero_label, beyond its 150 classes) is counted on the
    device, as on a GPU, and read by ClassCountHook where mmengine logs and
    at the end: with a logging interval longer than the run, the end."""
    from mmseg_arb.counting import LabelRangeError, label_guard
    monkeypatch.setattr(label_guard, 'reads_are_free', lambda device: False)
    cfg = _bad_label_run(datasets, tmp_path)
    with pytest.raises(LabelRangeError) as error:
        build_runner(cfg).train()
    message = str(error.value)
    assert 'outside [0, 150)' in message and 'as high as 200' in message
    assert 'in the labels of decode_head.loss_decode' in message
    assert 'read at iteration 4' in message
    # In the run's log too, not only in the traceback.
    log, = glob.glob(str(tmp_path / 'work' / '2*' / '2*.log'))
    with open(log) as f:
        assert 'read at iteration 4' in f.read()


def _bad_label_run(datasets, tmp_path) -> Config:
    """A shrunk DeepLabV3+ run on a copy of the ADE20K data whose
    ADE_train_00000003.png holds the value 201 (200 after
    reduce_zero_label, beyond the 150 classes), with a logging interval
    longer than the run."""
    import shutil

    import cv2
    data_root = str(tmp_path / 'bad_ade20k')
    shutil.copytree(datasets['ade20k'], data_root)
    annotation = osp.join(data_root, 'annotations', 'training',
                          'ADE_train_00000003.png')
    label = cv2.imread(annotation, cv2.IMREAD_UNCHANGED)
    label[0, :5] = 201
    cv2.imwrite(annotation, label)
    cfg = Config.fromfile(osp.join(CONFIGS, FAMILIES['ade20k-deeplabv3plus']))
    cfg = shrink_for_cpu(cfg, data_root, str(tmp_path / 'work'), iters=4)
    cfg.default_hooks.logger.interval = 10
    cfg.train_dataloader.dataset.pipeline = [
        t for t in cfg.train_dataloader.dataset.pipeline
        if t.type not in ('RandomResize', 'RandomCrop', 'RandomFlip')
    ][:2] + [dict(type='Resize', scale=(64, 64)),
             dict(type='PackSegInputs')]
    return cfg


def test_bad_labels_checked_in_their_step_name_iteration_and_file(
        datasets, tmp_path):
    """On CPU the labels are checked in their own step: the error names the
    iteration and the label file of the offending sample (not the other
    sample of its batch), and is in the run's log."""
    from mmseg_arb.counting import LabelRangeError
    cfg = _bad_label_run(datasets, tmp_path)
    with pytest.raises(LabelRangeError) as error:
        build_runner(cfg).train()
    message = str(error.value)
    assert re.search(
        r'at training iteration [1-4], in \S+'
        r'ADE_train_00000003\.png\. ', message), message
    assert message.count('ADE_train_') == 1
    log, = glob.glob(str(tmp_path / 'work' / '2*' / '2*.log'))
    with open(log) as f:
        assert 'ADE_train_00000003.png' in f.read()
