"""tools/summarize_results.py on two short runs of shipped configs (trained
here, shrunk for CPU, under the configs' own names) and a run of a user's
config: the baseline column holds the mIoU of mmseg's metafile, and the
metafile.yaml written names the shipped config files."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
import yaml
from helpers import CONFIGS, ROOT, shrink_for_cpu
from mmengine.config import Config

import mmseg_arb  # noqa: F401
from mmseg_arb.cli.launch import build_runner
from mmseg_arb.datasets.synthetic import SyntheticSpec, generate_dataset
from mmseg_arb.results.baselines import mmseg_model_index

pytestmark = pytest.mark.slow  # see tests/conftest.py

SHIPPED = {
    'deeplabv3plus/deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512':
    'deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512',
    'segformer/segformer_mit-b0_arb_8xb2-160k_ade20k-512x512':
    'segformer_mit-b0_8xb2-160k_ade20k-512x512',
}


def published_miou(folder: str, model: str) -> float:
    """The mIoU in the installed mmseg's metafile, read here directly."""
    path = osp.join(
        osp.dirname(mmseg_model_index()), 'configs', folder, 'metafile.yaml')
    with open(path) as f:
        return next(m['Results']['Metrics']['mIoU']
                    for m in yaml.safe_load(f)['Models'] if m['Name'] == model)


def user_run(root) -> str:
    """A finished run of a config mmseg has no counterpart of."""
    work_dir = root / 'mine'
    log = work_dir / '20261128_120000' / 'vis_data'
    os.makedirs(log)
    (log / 'scalars.json').write_text(json.dumps({'mIoU': 12.5}) + '\n')
    (work_dir / 'my_config.py').write_text('model = dict()\n')
    return str(work_dir)


def table(stdout: str):
    """The first markdown table printed: {row name: {column: cell}}."""
    lines = [line for line in stdout.splitlines() if line.startswith('|')]
    header = [c.strip() for c in lines[0].strip('|').split('|')]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip('|').split('|')]
        if len(cells) != len(header) or cells[0] == 'class':
            break
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_runs_against_mmseg_baselines_and_their_metafile(tmp_path):
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
    work_dirs = []
    for key in SHIPPED:
        work_dir = str(tmp_path / key.split('/')[0])
        cfg = shrink_for_cpu(
            Config.fromfile(osp.join(CONFIGS, f'{key}.py')),
            data_root,
            work_dir,
            iters=2)
        # Visualizers are per-name singletons: the second run would log into
        # the first one's folder.
        cfg.visualizer.name = f'visualizer_{len(work_dirs)}'
        if not work_dirs:  # the first with head / body / tail mIoU
            cfg.val_evaluator = dict(type='LongTailIoUMetric')
        build_runner(cfg).train()  # dumps <config name>.py to the work dir
        work_dirs.append(work_dir)
    work_dirs.append(user_run(tmp_path))

    out = tmp_path / 'results' / 'ade20k'
    result = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'summarize_results.py'), *work_dirs, '--names',
        'deeplab', 'segformer', 'mine', '--out',
        str(out)
    ],
                            capture_output=True,
                            text=True,
                            timeout=600,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]

    rows = table(result.stdout)
    with open(f'{out}.json') as f:
        runs = json.load(f)['runs']
    for name, run, (key, model) in zip(('deeplab', 'segformer'), runs,
                                       SHIPPED.items()):
        published = published_miou(key.split('/')[0], model)
        assert rows[name]['CE mIoU'] == f'{published:.2f}'
        assert rows[name]['mIoU - CE'] == \
            f"{run['summary']['mIoU'] - published:.2f}"
        assert run['baseline']['model'] == model
        assert run['baseline']['mIoU'] == published
    assert rows['deeplab']['mIoU_tail'] == \
        f"{runs[0]['summary']['mIoU_tail']:.2f}"
    assert rows['segformer']['mIoU_tail'] == '-'  # evaluated by IoUMetric
    assert rows['mine']['mIoU'] == '12.50'
    assert rows['mine']['CE mIoU'] == '-'
    assert rows['mine']['mIoU - CE'] == '-'
    assert runs[2]['baseline']['mIoU'] is None

    with open(tmp_path / 'results' / 'metafile.yaml') as f:
        index = yaml.safe_load(f)
    assert [c['Name'] for c in index['Collections']] == ['ARB-Loss']
    models = index['Models']
    assert [m['Name'] for m in models] == [k.split('/')[1] for k in SHIPPED]
    for model, run in zip(models, runs):
        assert osp.isfile(osp.join(ROOT, model['Config'])), model['Config']
        assert model['In Collection'] == 'ARB-Loss'
        assert model['Results']['Dataset'] == 'ADE20K'
        assert model['Results']['Metrics'] == {
            k: round(v, 2)
            for k, v in run['summary'].items() if not math.isnan(v)
        }
        assert model['Metadata']['Training Resources'] == '1x CPU'
        assert model['Metadata']['Batch Size'] == 2
        assert osp.isfile(model['Weights'])
    # Two iterations are not the schedule the names say: said, not hidden.
    assert 'deeplab: trained 2 iterations (the name says 80000)' in \
        result.stdout
    assert 'not comparable as is: trained with a total batch of 1x2 (the ' \
        'name says 4x4); trained 2 iterations' in result.stdout

    # A later summary into the same folder (another dataset, say) keeps the
    # models of the first one in the metafile.
    again = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'summarize_results.py'), work_dirs[1], '--out',
        str(tmp_path / 'results' / 'other')
    ],
                           capture_output=True,
                           text=True,
                           timeout=600,
                           cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'kept 1 earlier models, replaced 1' in again.stdout
    with open(tmp_path / 'results' / 'metafile.yaml') as f:
        assert [m['Name'] for m in yaml.safe_load(f)['Models']] == \
            [k.split('/')[1] for k in SHIPPED]
    # A metafile.yaml that is not ours is not overwritten.
    foreign = tmp_path / 'elsewhere' / 'metafile.yaml'
    foreign.parent.mkdir()
    foreign.write_text('Models: []\n')
    refused = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'summarize_results.py'), work_dirs[1], '--out',
        str(tmp_path / 'elsewhere' / 'r')
    ],
                             capture_output=True,
                             text=True,
                             timeout=600,
                             cwd=ROOT)
    assert refused.returncode != 0
    assert 'is no ARB-Loss metafile' in refused.stderr
    assert foreign.read_text() == 'Models: []\n'


def test_training_settings_survive_a_test_into_the_same_work_dir(tmp_path):
    """The README's sequence: train with a shorter schedule and a smaller
    batch than the config file says (here 2 iterations, fewer than the
    logger interval), test the checkpoint into the same work dir (which
    rewrites the work dir's config with the file's settings), summarize
    without --out. The batch and iterations are the training's."""
    name = 'segformer_mit-b0_arb_8xb2-160k_ade20k-512x512'
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
    work_dir = tmp_path / 'work'
    cfg = shrink_for_cpu(
        Config.fromfile(osp.join(CONFIGS, 'segformer', f'{name}.py')),
        data_root,
        str(work_dir),
        iters=160000)
    cfg.default_hooks.logger.interval = 50
    config = tmp_path / 'configs' / f'{name}.py'  # the shipped name
    config.parent.mkdir()
    cfg.dump(str(config))

    def tool(*args):
        result = subprocess.run([sys.executable, *args],
                                capture_output=True,
                                text=True,
                                timeout=600,
                                cwd=str(tmp_path))
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return result.stdout

    tool(
        osp.join(ROOT, 'tools', 'train.py'), str(config), '--work-dir',
        str(work_dir), '--cfg-options', 'train_dataloader.batch_size=1',
        'train_cfg.max_iters=2')
    tool(
        osp.join(ROOT, 'tools', 'test.py'), str(config),
        str(work_dir / 'iter_2.pth'), '--work-dir', str(work_dir))
    # The work dir's config is now the test's: batch 2, 160k iterations.
    assert Config.fromfile(str(work_dir / f'{name}.py')) \
        .train_dataloader.batch_size == 2

    out = tool(osp.join(ROOT, 'tools', 'summarize_results.py'), str(work_dir))
    assert 'work: trained with a total batch of 1x1 (the name says 8x2)' \
        in out
    assert 'trained 2 iterations (the name says 160000)' in out
    assert 'not checked' not in out
    with open(tmp_path / 'results' / 'work.json') as f:
        run = json.load(f)['runs'][0]
    assert run['settings']['batch_size'] == 1
    assert run['settings']['max_iters'] == 2
    assert run['checkpoint'] == str(work_dir / 'iter_2.pth')
    with open(tmp_path / 'results' / 'metafile.yaml') as f:
        model = yaml.safe_load(f)['Models'][0]
    assert model['Metadata']['Batch Size'] == 1


def test_a_batch_that_cannot_be_checked_is_said(tmp_path):
    """A training log folder without the dumped config: the comparison is
    listed with a note, not as if the schedule had been checked."""
    name = 'segformer_mit-b0_arb_8xb2-160k_ade20k-512x512'
    work_dir = tmp_path / 'run'
    folder = work_dir / '20261128_120000'
    os.makedirs(folder / 'vis_data')
    (folder / '20261128_120000.log').write_text(
        '    GPU number: 1\n'
        'mmengine - INFO - Checkpoints will be saved to /somewhere.\n')
    (folder / 'vis_data' /
     'scalars.json').write_text(json.dumps({'mIoU': 12.5}) + '\n')
    (work_dir / f'{name}.py').write_text('model = dict()\n')
    result = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'summarize_results.py'),
        str(work_dir), '--out',
        str(tmp_path / 'r')
    ],
                            capture_output=True,
                            text=True,
                            timeout=600,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'run: batch and iterations not checked: the training\'s log ' \
        'folder holds no dumped config' in result.stdout
    assert 'batch and iterations not checked' in \
        (tmp_path / 'r.md').read_text()


CAMVID = 'deeplabv3plus_r18-cpu{}_1xb8-1000iter_camvid-half-128x128'


def camvid_run(root,
               name: str,
               config: str,
               miou: float,
               max_iters: int = 1000) -> str:
    """A finished CamVid run as a training leaves it: the config dumped to
    the work dir and to its log folder, the log, the validation's mIoU."""
    work_dir = root / name
    folder = work_dir / '20261206_010000'
    os.makedirs(folder / 'vis_data')
    settings = (f"train_dataloader = dict(batch_size=8, dataset=dict("
                f"type='CamVidDataset'))\n"
                f"train_cfg = dict(max_iters={max_iters})\n")
    (work_dir / f'{config}.py').write_text(settings)
    (folder / 'vis_data' / 'config.py').write_text(settings)
    (folder / '20261206_010000.log').write_text(
        '    GPU number: 1\n'
        'mmengine - INFO - Checkpoints will be saved to /somewhere.\n')
    (folder / 'vis_data' / 'scalars.json'
     ).write_text(json.dumps({
         'mIoU': miou,
         'IoU.Bicyclist': 1.5
     }) + '\n')
    return str(work_dir)


def test_a_camvid_run_is_compared_with_its_cross_entropy_run(tmp_path, capsys):
    """mmseg publishes no CamVid model: the output says so, names the
    shipped config whose run would be the baseline, and takes that run's
    mIoU when it is given (flagging a schedule that differs)."""
    from mmseg_arb.cli import main
    arb = camvid_run(tmp_path, 'arb', CAMVID.format('_arb'), 30.0)
    main(['summarize', arb, '--out', str(tmp_path / 'alone')])
    out = capsys.readouterr().out
    note = ('mmseg publishes no CamVid model, so no published baseline; '
            f"give the work dir of a run of {CAMVID.format('')} (shipped) "
            'too to compare with it')
    assert f'arb: {note}' in out
    assert table(out)['arb']['CE mIoU'] == '-'

    ce = camvid_run(tmp_path, 'ce', CAMVID.format(''), 27.5, max_iters=500)
    main(['summarize', arb, ce, '--out', str(tmp_path / 'both')])
    out = capsys.readouterr().out
    rows = table(out)
    assert rows['arb']['CE mIoU'] == '27.50'
    assert rows['arb']['mIoU - CE'] == '2.50'
    assert rows['ce']['CE mIoU'] == '-'
    assert 'ce: mmseg publishes no CamVid model, so no published baseline' \
        in out
    assert "arb: trained 1000 iterations, ce 500: its difference to ce is " \
        "not the loss's alone" in out
    with open(tmp_path / 'both.json') as f:
        baseline = json.load(f)['runs'][0]['baseline']
    assert baseline['run'] == 'ce' and baseline['work_dir'] == ce
    assert f"run ce of {CAMVID.format('')} ({ce}); not comparable as is: " \
        'trained 1000 iterations, ce 500' in out
