"""``mmseg-arb train``: mmseg's tools/train.py, with mmseg_arb registered.

Same arguments and behaviour as MMSegmentation's, so any mmseg config works,
with or without ``custom_imports``; a shipped config may be given by name.
"""
import argparse
import logging
from typing import List

from mmengine.config import DictAction
from mmengine.logging import print_log

from .command import Command, UsageError
from .launch import (add_launch_arguments, build_runner, launch, load_config,
                     process_group_ended)


def check_amp_device() -> None:
    """``--amp`` is mmengine's ``AmpOptimWrapper``: float16 autocast with
    loss scaling, which runs on a GPU (CUDA, or an NPU / MLU / MUSA) and
    stops at an assertion elsewhere.

    Raises:
        UsageError: If no such device is available.
    """
    from mmengine import device
    checks = ('is_cuda_available', 'is_npu_available', 'is_mlu_available',
              'is_musa_available')  # AmpOptimWrapper's assertion
    if not any(getattr(device, c, lambda: False)() for c in checks):
        raise UsageError(
            'AMP (--amp, or AmpOptimWrapper in the config) needs a GPU: '
            "mmengine's AmpOptimWrapper autocasts to float16 on CUDA (or "
            'NPU / MLU / MUSA) devices, and none is available here. Train on '
            'CPU without it (float32: no --amp, '
            'optim_wrapper.type=OptimWrapper).')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        'config', help='config file, or the name of a shipped config')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--resume',
        action='store_true',
        help='resume from the latest checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision (float16, needs a GPU)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. train_cfg.max_iters=1000 '
        'model.decode_head.loss_decode.count_mode=ema')
    add_launch_arguments(parser)


def run(args: argparse.Namespace, argv: List[str]) -> None:
    config = launch('train', args, argv)
    cfg = load_config(config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp or cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
        check_amp_device()
    if args.amp:
        if cfg.optim_wrapper.type == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        elif cfg.optim_wrapper.type != 'OptimWrapper':
            raise UsageError('--amp needs optim_wrapper.type OptimWrapper, '
                             f'got {cfg.optim_wrapper.type}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.resume = args.resume
    with process_group_ended():
        build_runner(cfg).train()


COMMAND = Command('train', 'train a segmentor (mmseg\'s tools/train.py)',
                  add_arguments, run)
