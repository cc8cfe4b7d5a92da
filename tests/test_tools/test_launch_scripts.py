"""The Slurm scripts compose the srun command line mmseg users expect
(run against a stand-in srun that prints its arguments)."""
import os
import os.path as osp
import subprocess

from helpers import ROOT


def run_with_fake_srun(tmp_path, script, *args, **env):
    fake = tmp_path / 'srun'
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    full_env = dict(
        os.environ,
        PATH=f"{tmp_path}:{os.environ['PATH']}",
        PYTHON='python3',
        **env)
    out = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', script), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_slurm_train(tmp_path):
    argv = run_with_fake_srun(
        tmp_path,
        'slurm_train.sh',
        'gpu',
        'arb',
        'my_cfg.py',
        '--resume',
        GPUS='16',
        GPUS_PER_NODE='8')
    assert argv[:2] == ['-p', 'gpu']
    assert {
        '--job-name=arb', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
        '--cpus-per-task=5', '--kill-on-bad-exit=1'
    } <= set(argv)
    tail = argv[argv.index('python3'):]
    assert tail[1:] == [
        '-u',
        osp.join(ROOT, 'tools', 'train.py'), 'my_cfg.py', '--resume',
        '--launcher', 'slurm'
    ]


def test_slurm_test(tmp_path):
    argv = run_with_fake_srun(tmp_path, 'slurm_test.sh', 'gpu', 'arb',
                              'my_cfg.py', 'ckpt.pth', '--tta')
    tail = argv[argv.index('python3'):]
    assert tail[1:] == [
        '-u',
        osp.join(ROOT, 'tools', 'test.py'), 'my_cfg.py', 'ckpt.pth', '--tta',
        '--launcher', 'slurm'
    ]
    assert '--ntasks=4' in argv  # GPUS defaults to 4
