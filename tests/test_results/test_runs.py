import json
import os

from mmseg_arb.results.runs import load_run, results_markdown


def fake_run(root, name, stamp, metrics, checkpoint):
    work_dir = root / name
    log_dir = work_dir / stamp / 'vis_data'
    os.makedirs(log_dir)
    with open(log_dir / 'scalars.json', 'w') as f:
        f.write(json.dumps({'loss': 1.0, 'step': 10}) + '\n')
        f.write(json.dumps(dict(metrics, step=20)) + '\n')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / checkpoint))
    (work_dir / f'{name}_cfg.py').write_text('model = dict()\n')
    return str(work_dir)


def test_markdown_and_json_of_two_runs(tmp_path):
    ce = fake_run(
        tmp_path, 'ce', '20261127_120000', {
            'mIoU': 40.0,
            'mIoU_head': 70.0,
            'mIoU_body': 40.0,
            'mIoU_tail': 10.0,
            'mAcc': 50.0,
            'aAcc': 90.0,
            'IoU.wall': 80.0,
            'IoU.sofa': 5.5
        }, 'iter_600.pth')
    arb = fake_run(
        tmp_path, 'arb', '20261127_130000', {
            'mIoU': 45.25,
            'mIoU_head': 69.0,
            'mIoU_body': 44.0,
            'mIoU_tail': 22.75,
            'mAcc': 60.0,
            'aAcc': 89.5,
            'IoU.wall': 79.0,
            'IoU.sofa': 21.0
        }, 'iter_600.pth')
    runs = [load_run(ce, 'CE'), load_run(arb, 'ARB')]
    md = results_markdown(runs, {'mmseg_arb': '0.1.0', 'git_commit': 'abc'})
    assert md == f"""\
| run | mIoU | mIoU_head | mIoU_body | mIoU_tail | mAcc | aAcc |
|---|---:|---:|---:|---:|---:|---:|
| CE | 40.00 | 70.00 | 40.00 | 10.00 | 50.00 | 90.00 |
| ARB | 45.25 | 69.00 | 44.00 | 22.75 | 60.00 | 89.50 |

| class | CE | ARB |
|---|---:|---:|
| wall | 80.00 | 79.00 |
| sofa | 5.50 | 21.00 |

| run | config | checkpoint |
|---|---|---|
| CE | {ce}/ce_cfg.py | {ce}/iter_600.pth |
| ARB | {arb}/arb_cfg.py | {arb}/iter_600.pth |

Code: mmseg_arb 0.1.0, git_commit abc
"""


def test_newest_log_folder_wins_and_missing_metrics_are_an_error(tmp_path):
    import pytest
    run = fake_run(tmp_path, 'r', '20261127_120000', {'mIoU': 1.0}, 'a.pth')
    newer = tmp_path / 'r' / '20261128_090000'
    os.makedirs(newer)
    with open(newer / '20261128_090000.json', 'w') as f:
        f.write(json.dumps({'mIoU': 2.0, 'aAcc': 3.0}) + '\n')
    assert load_run(run)['summary'] == {'mIoU': 2.0, 'aAcc': 3.0}
    empty = tmp_path / 'empty'
    os.makedirs(empty)
    with pytest.raises(FileNotFoundError, match='no evaluation with mIoU'):
        load_run(str(empty))


def test_a_test_call_names_the_checkpoint_it_loaded_and_its_tta(tmp_path):
    """tools/test.py's metrics belong to the checkpoint it was given (a
    best_mIoU_* one, say), not to the work dir's last; --tta is noted."""
    run = fake_run(tmp_path, 'r', '20261127_120000', {'mIoU': 1.0},
                   'iter_600.pth')
    assert load_run(run)['checkpoint'] == f'{run}/iter_600.pth'
    assert not load_run(run)['tta']
    tested = tmp_path / 'r' / '20261128_090000'
    os.makedirs(tested)
    with open(tested / '20261128_090000.json', 'w') as f:
        f.write(json.dumps({'mIoU': 2.0}) + '\n')
    (tmp_path / 'r' / 'r_cfg.py').write_text(
        "model = dict(type='SegTTAModel', module=dict())\n"
        "load_from = '/ckpt/best_mIoU_iter_400.pth'\n"
        "train_dataloader = dict(batch_size=4)\n"
        "train_cfg = dict(max_iters=80000)\n")
    found = load_run(run)
    assert found['checkpoint'] == '/ckpt/best_mIoU_iter_400.pth'
    assert found['tta']
    # No training log in the work dir: how it trained is not guessed from
    # the test's config.
    assert found['settings']['batch_size'] is None
    assert found['settings']['max_iters'] is None


def test_batch_and_iterations_are_the_trainings_own(tmp_path):
    """The training's dumped config (its log folder's vis_data/config.py)
    decides batch and iterations, not the top-level config a later test
    rewrote; the training folder is found by its log lines when the run was
    shorter than the logger interval (no training records)."""
    run = fake_run(tmp_path, 'r', '20261127_120000', {'mIoU': 1.0},
                   'iter_2.pth')
    trained = tmp_path / 'r' / '20261127_120000'
    (trained / 'vis_data' / 'scalars.json').write_text('{"mIoU": 1.0}\n')
    (trained / '20261127_120000.log').write_text(
        '    GPU number: 2\n'
        'mmengine - INFO - Checkpoints will be saved to /w.\n')
    (trained / 'vis_data' / 'config.py').write_text(
        "train_dataloader = dict(batch_size=1, dataset=dict(type='A'))\n"
        'train_cfg = dict(max_iters=2)\n')
    tested = tmp_path / 'r' / '20261128_090000'
    os.makedirs(tested / 'vis_data')
    (tested / '20261128_090000.log').write_text('    GPU number: 1\n')
    (tested / '20261128_090000.json').write_text('{"mIoU": 2.0}\n')
    (tested / 'vis_data' / 'config.py').write_text(
        "load_from = '/w/iter_2.pth'\n"
        "train_dataloader = dict(batch_size=4, dataset=dict(type='A'))\n"
        'train_cfg = dict(max_iters=80000)\n')
    (tmp_path / 'r' / 'r_cfg.py').write_text(
        (tested / 'vis_data' / 'config.py').read_text())
    found = load_run(run)
    assert found['summary'] == {'mIoU': 2.0}
    assert found['checkpoint'] == '/w/iter_2.pth'
    assert found['settings']['batch_size'] == 1
    assert found['settings']['max_iters'] == 2
    assert found['settings']['training_config'] == \
        str(trained / 'vis_data' / 'config.py')
    assert found['training']['processes'] == 2


def test_training_resources_from_mmengine_logs(tmp_path):
    """Processes and GPU model from the environment mmengine logs at the
    top of the training log, peak memory from its training records; a
    later test run's log folder (no training records) is passed over."""
    from mmseg_arb.results.runs import training_resources
    train = tmp_path / '20261127_120000'
    os.makedirs(train / 'vis_data')
    (train / '20261127_120000.log').write_text(
        '11/27 12:00:00 - mmengine - INFO - \n'
        'System environment:\n'
        '    CUDA available: True\n'
        '    GPU 0,1,2,3: NVIDIA H200\n'
        '    PyTorch compiling details: PyTorch built with:\n'
        '  - GCC 13.3\n'
        'Runtime environment:\n'
        '    Distributed training: True\n'
        '    GPU number: 4\n'
        '    GPU 9: not the environment block any more\n')
    with open(train / 'vis_data' / 'scalars.json', 'w') as f:
        for memory in (9000, 10854, 10100):
            f.write(json.dumps({'loss': 1.0, 'memory': memory}) + '\n')
        f.write(json.dumps({'mIoU': 40.0}) + '\n')
    test = tmp_path / '20261128_090000'
    os.makedirs(test / 'vis_data')
    (test / '20261128_090000.log').write_text('    GPU number: 1\n')
    (test / 'vis_data' / 'scalars.json').write_text('{"mIoU": 41.0}\n')
    assert training_resources(str(tmp_path)) == {
        'processes': 4,
        'device': 'NVIDIA H200',
        'memory_gb': 10.6,
        'log': str(train / 'vis_data' / 'scalars.json'),
        'config': None
    }
    assert training_resources(str(test)) == {}
