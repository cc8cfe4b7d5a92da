"""``mmseg-arb list`` and ``mmseg-arb config``: the shipped configs.

``config`` writes a config with every ``_base_`` (``mmseg::`` ones too)
merged into one file, as ``mim download --config`` does, so that a user's
own config can start with ``_base_ = './NAME.py'`` wherever the package is
installed.
"""
import argparse
import os
import os.path as osp
from typing import List

from mmengine.config import Config

from ..config.shipped import find_config, shipped_configs
from .command import Command, UsageError


def run_list(args: argparse.Namespace, argv: List[str]) -> None:
    for name in shipped_configs():
        print(name)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        'name',
        help='a shipped config, e.g. '
        'deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512 (see list)')
    parser.add_argument(
        '--dest', default='.', help='folder to write NAME.py in (default: .)')
    parser.add_argument(
        '--force', action='store_true', help='replace an existing NAME.py')


def run_config(args: argparse.Namespace, argv: List[str]) -> None:
    path = find_config(args.name)
    cfg = Config.fromfile(path)
    os.makedirs(args.dest, exist_ok=True)
    out = osp.join(args.dest, osp.basename(path))
    if osp.exists(out) and not args.force:
        raise UsageError(f'{out} exists (your edits?): --force to replace '
                         'it, or another --dest')
    cfg.dump(out)
    print(f'wrote {out}')


LIST = Command('list', 'print the names of the shipped configs',
               lambda parser: None, run_list)
CONFIG = Command('config', 'write a shipped config with all its bases '
                 'merged', add_config_arguments, run_config)
