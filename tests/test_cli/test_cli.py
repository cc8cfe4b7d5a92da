"""``mmseg-arb`` from the source tree: shipped configs by name, the merged
config it writes, its errors, and the torchrun command ``--gpus`` runs."""
import glob
import os.path as osp
import subprocess
import sys

import pytest
from helpers import CONFIGS, ROOT
from mmengine.config import Config

from mmseg_arb.cli import main, torchrun
from mmseg_arb.config.shipped import (ConfigNotFoundError, find_config,
                                      resolve_config)

NAME = 'segformer_mit-b0_arb_8xb2-160k_ade20k-512x512'


def test_list_prints_every_shipped_config(capsys):
    main(['list'])
    listed = capsys.readouterr().out.split()
    on_disk = sorted(
        osp.splitext(osp.relpath(p, CONFIGS))[0]
        for p in glob.glob(osp.join(CONFIGS, '*', '*.py')))
    assert listed == on_disk
    assert f'segformer/{NAME}' in listed and '_base_/arb' in listed


def test_names_are_unique_so_a_name_finds_one_config():
    stems = [
        osp.basename(p) for p in glob.glob(osp.join(CONFIGS, '*', '*.py'))
    ]
    assert len(stems) == len(set(stems))


def test_a_config_is_found_by_name_folder_name_or_file():
    path = osp.join(CONFIGS, 'segformer', f'{NAME}.py')
    assert find_config(NAME) == path
    assert find_config(f'segformer/{NAME}.py') == path
    assert find_config('arb') == osp.join(CONFIGS, '_base_', 'arb.py')
    assert resolve_config(path) == path  # a file is taken as it is
    with pytest.raises(
            ConfigNotFoundError,
            match='is not a file, and no '
            "shipped config named 'missing.py'"):
        resolve_config('missing.py')


def test_config_writes_the_merged_config(tmp_path, capsys):
    main(['config', NAME, '--dest', str(tmp_path / 'out')])
    written = tmp_path / 'out' / f'{NAME}.py'
    assert capsys.readouterr().out == f'wrote {written}\n'
    text = written.read_text()
    assert '_base_' not in text and 'mmseg::' not in text
    shipped = Config.fromfile(osp.join(CONFIGS, 'segformer', f'{NAME}.py'))
    assert Config.fromfile(str(written)).to_dict() == shipped.to_dict()

    # A second call does not overwrite the file (the user may have edited
    # it) unless told to.
    written.write_text('# my edits\n')
    with pytest.raises(SystemExit) as exit_:
        main(['config', NAME, '--dest', str(tmp_path / 'out')])
    assert exit_.value.code == 2
    assert '--force to replace it' in capsys.readouterr().err
    assert written.read_text() == '# my edits\n'
    main(['config', NAME, '--dest', str(tmp_path / 'out'), '--force'])
    assert Config.fromfile(str(written)).to_dict() == shipped.to_dict()


@pytest.mark.parametrize('name', [
    'deeplabv3plus_r18-cpu_arb_1xb8-1000iter_camvid-half-128x128',
    'deeplabv3plus_r18-tiny_arb_1xb8-400iter_synthetic-ade20k-128x128'
])
def test_config_merges_the_shipped_model_base(name, tmp_path):
    """The CPU-size configs take their model from
    ``_base_/models/deeplabv3plus_r18-cpu.py``, a base of a base: the file
    written holds it, as it holds mmseg's."""
    main(['config', name, '--dest', str(tmp_path)])
    written = Config.fromfile(str(tmp_path / f'{name}.py'))
    assert '_base_' not in written.pretty_text
    assert written.to_dict() == Config.fromfile(find_config(name)).to_dict()
    assert written.model.backbone.depth == 18


def test_an_unknown_name_is_an_error_with_the_closest_names(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(['config', 'deeplabv3plus_r50_arb_4xb4-80k_ade20k'])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no shipped config named 'deeplabv3plus_r50_arb_4xb4-80k_ade20k'"\
        in err
    assert 'did you mean: deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512' \
        in err


@pytest.mark.parametrize(
    'argv, message',
    [
        (['train', NAME, '--gpus', '2', '--launcher', 'slurm'
          ], 'give --gpus or --launcher, not both'),
        (['test', NAME, 'x.pth', '--gpus', '0'], '--gpus must be at least 1'),
        (['train', 'no_such_config'], "'no_such_config' is not a file"),
        # Once, here, rather than in every process torchrun would start.
        (['train', 'no_such_config', '--gpus', '2'
          ], "'no_such_config' is not a file"),
        (['test', 'no_such_config', 'x.pth', '--gpus', '2'
          ], "'no_such_config' is not a file"),
    ])
def test_arguments_that_do_not_go_together(argv, message, capsys, monkeypatch):

    def relaunch(command, argv, gpus):
        torchrun.torchrun_command(command, argv, gpus, {})  # its checks
        raise AssertionError('relaunched under torchrun')

    # Both commands launch through cli/launch.py's launch().
    monkeypatch.setattr('mmseg_arb.cli.launch.relaunch_with_torchrun',
                        relaunch)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_gpus_relaunches_the_same_command_under_torchrun(monkeypatch):
    argv = [NAME, '--gpus=2', '--cfg-options', 'a=1', '--work-dir', 'w']
    cmd, env = torchrun.torchrun_command(
        'train', argv, 2, {
            'PORT': '29555',
            'NNODES': '2',
            'NODE_RANK': '1',
            'PYTHONPATH': '/elsewhere'
        })
    assert cmd == [
        sys.executable, '-m', 'torch.distributed.run', '--nnodes=2',
        '--node_rank=1', '--master_addr=127.0.0.1', '--master_port=29555',
        '--nproc_per_node=2', '-m', 'mmseg_arb.cli', 'train', NAME,
        '--cfg-options', 'a=1', '--work-dir', 'w', '--launcher', 'pytorch'
    ]
    # From a source tree the processes import this checkout...
    assert env['PYTHONPATH'] == f'{ROOT}{osp.pathsep}/elsewhere'
    # ...and never one in the working directory ('-m' would put it first).
    assert env['PYTHONSAFEPATH'] == '1'
    # ...an installed package needs (and gets) no PYTHONPATH.
    monkeypatch.setattr(torchrun.site, 'getsitepackages', lambda: [ROOT])
    _, env = torchrun.torchrun_command('test', ['c.py', 'x.pth'], 1, {})
    assert 'PYTHONPATH' not in env


@pytest.mark.slow
def test_the_cli_prints_no_pkg_resources_deprecation(tmp_path):
    """mmengine imports pkg_resources when it resolves ``mmseg::`` bases;
    with setuptools < 81 that printed four deprecation warnings first."""
    env = dict(PYTHONPATH=ROOT, PATH='/usr/bin:/bin')
    quiet = subprocess.run([
        sys.executable, '-m', 'mmseg_arb.cli', 'config', NAME, '--dest',
        str(tmp_path)
    ],
                           capture_output=True,
                           text=True,
                           env=env,
                           timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ''
    assert quiet.stdout == f'wrote {tmp_path}/{NAME}.py\n'


def test_amp_on_cpu_is_a_usage_error_before_mmengine(capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    config = osp.join(
        CONFIGS, 'demo', 'deeplabv3plus_r18-tiny_arb_1xb8-'
        '400iter_synthetic-ade20k-128x128.py')
    with pytest.raises(SystemExit) as exit_:
        main(['train', config, '--amp'])
    assert exit_.value.code == 2
    assert 'AMP (--amp, or AmpOptimWrapper in the config) needs a GPU' in \
        capsys.readouterr().err


def test_missing_class_weight_file_is_a_usage_error_naming_the_fix(
        capsys, monkeypatch, tmp_path):
    """The README's recommendation reads its weights from a file that
    ``class-counts --weight-power`` writes; without it, ``train`` says so
    (and how to write it) before the runner makes a work dir, where mmseg's
    ``CrossEntropyLoss`` stopped with a bare ``FileNotFoundError``."""
    monkeypatch.chdir(tmp_path)  # a fresh checkout: no data, no weights
    config = osp.join(
        CONFIGS, 'demo', 'deeplabv3plus_r18-tiny_cw-p0.5_1xb8-'
        '400iter_synthetic-ade20k-128x128.py')
    with pytest.raises(SystemExit) as exit_:
        main(['train', config])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    weights = 'data/synthetic_ade20k/class_weight_train_p0.5.json'
    for head in ('decode_head', 'auxiliary_head'):
        assert f"model.{head}.loss_decode.class_weight = '{weights}'" in err
    assert 'mmseg-arb class-counts CONFIG --weight-power 0.5' in err
    assert not (tmp_path / 'work_dirs').exists()


def test_class_weight_check_reads_loss_lists_and_leaves_other_strings():
    """A list of losses is walked by index; the command names the split
    and power of a file named as ``class-counts`` names it; a
    ``class_weight`` string that is no file name (a custom loss's own
    keyword) is not refused."""
    from mmengine.config import Config

    from mmseg_arb.cli.command import UsageError
    from mmseg_arb.cli.launch import check_class_weight_files
    losses = [
        dict(type='MyLoss', class_weight='balanced'),
        dict(type='CrossEntropyLoss', class_weight='nowhere/w.npy')
    ]
    cfg = Config(dict(model=dict(decode_head=dict(loss_decode=losses))))
    with pytest.raises(
            UsageError,
            match=r"loss_decode\.1\.class_weight = "
            r"'nowhere/w\.npy'.*--weight-power P"):
        check_class_weight_files(cfg)
    losses[1]['class_weight'] = 'nowhere/class_weight_val_p0.25.json'
    cfg = Config(dict(model=dict(decode_head=dict(loss_decode=losses))))
    with pytest.raises(
            UsageError,
            match='--split val --weight-power 0.25" '
            r'\(class weights n\^-0.25'):
        check_class_weight_files(cfg)
    losses.pop()
    check_class_weight_files(
        Config(dict(model=dict(decode_head=dict(loss_decode=losses)))))


def test_summarize_out_defaults_under_results():
    from mmseg_arb.cli.summarize import default_out
    assert default_out(['work_dirs/arb/']) == osp.join('results', 'arb')
    assert default_out(['a', 'b']) == osp.join('results', 'summary')
