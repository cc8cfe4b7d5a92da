"""``--gpus N``: the same sub-command again in N processes under torchrun.

Multi-node jobs take ``NNODES``, ``NODE_RANK``, ``MASTER_ADDR`` and
``PORT`` from the environment, as mmseg's ``dist_train.sh`` does.
"""
import argparse
import os
import os.path as osp
import site
import sys
from typing import Dict, List, Mapping, Tuple

from .command import UsageError

# The folder holding this mmseg_arb package.
PACKAGE_PARENT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def add_gpus_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--gpus',
        type=int,
        help='launch this many processes per node with torchrun '
        '(--launcher pytorch); multi-node: NNODES, NODE_RANK, MASTER_ADDR '
        'and PORT in the environment')


def without_gpus(argv: List[str]) -> List[str]:
    """``argv`` without its ``--gpus N`` (or ``--gpus=N``), the rest in
    order."""
    parser = argparse.ArgumentParser(add_help=False)
    add_gpus_argument(parser)
    return parser.parse_known_args(argv)[1]


def torchrun_command(
        command: str, argv: List[str], gpus: int,
        environ: Mapping[str, str]) -> Tuple[List[str], Dict[str, str]]:
    """torchrun's command line and environment that run ``mmseg-arb
    command argv`` (``--gpus`` dropped) in ``gpus`` processes per node.

    Raises:
        UsageError: If ``gpus`` is not positive.
    """
    if gpus < 1:
        raise UsageError(f'--gpus must be at least 1, got {gpus}')
    rest = without_gpus(argv)
    env = dict(environ)
    # The processes must import this very package, also where it is only
    # on PYTHONPATH (a source checkout); adding site-packages itself to
    # PYTHONPATH would put it before the standard library.
    if PACKAGE_PARENT not in site.getsitepackages() + [
            site.getusersitepackages()
    ]:
        env['PYTHONPATH'] = os.pathsep.join([PACKAGE_PARENT] + (
            [env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    # 'python -m' would put the working directory first on the path: run
    # from a clone next to an installed package, the processes would
    # import the clone (Python 3.11+ honours this; older ones ignore it).
    env['PYTHONSAFEPATH'] = '1'
    cmd = [
        sys.executable, '-m', 'torch.distributed.run',
        f"--nnodes={env.get('NNODES', '1')}",
        f"--node_rank={env.get('NODE_RANK', '0')}",
        f"--master_addr={env.get('MASTER_ADDR', '127.0.0.1')}",
        f"--master_port={env.get('PORT', '29500')}",
        f'--nproc_per_node={gpus}', '-m', 'mmseg_arb.cli', command, *rest,
        '--launcher', 'pytorch'
    ]
    return cmd, env


def relaunch_with_torchrun(command: str, argv: List[str], gpus: int) -> None:
    """Replace this process with torchrun running ``command`` in ``gpus``
    processes per node (signals and the exit status are torchrun's)."""
    cmd, env = torchrun_command(command, argv, gpus, os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, env)
