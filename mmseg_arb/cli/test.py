"""``mmseg-arb test``: mmseg's tools/test.py, with mmseg_arb registered.

Same arguments and behaviour as MMSegmentation's; a shipped config may be
given by name.
"""
import argparse
from typing import List

from mmengine.config import Config, DictAction

from .command import Command, UsageError
from .launch import (add_launch_arguments, build_runner, launch, load_config,
                     process_group_ended)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        'config', help='config file, or the name of a shipped config')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the metrics are dumped')
    parser.add_argument(
        '--out', help='directory for the predictions (offline evaluation)')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir', help='directory for images painted with predictions')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='interval of --show (s)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. test_dataloader.batch_size=2')
    parser.add_argument(
        '--tta', action='store_true', help='test-time augmentation')
    add_launch_arguments(parser)


def enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise UsageError('--show/--show-dir need a VisualizationHook in '
                         "default_hooks: visualization=dict("
                         "type='SegVisualizationHook')")
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir


def run(args: argparse.Namespace, argv: List[str]) -> None:
    config = launch('test', args, argv)
    cfg = load_config(config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    with process_group_ended():
        build_runner(cfg).test()


COMMAND = Command('test', 'test (evaluate) a segmentor (mmseg\'s '
                  'tools/test.py)', add_arguments, run)
