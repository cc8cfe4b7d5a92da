"""``mmseg-arb class-counts``: the pixels of each class over a config's
dataset (``class-stats``, its earlier name, still works).

Writes a class-counts JSON usable as ``class_counts`` by the ``prior``
configs and by ``LongTailIoUMetric`` (``counts``, ``class_names``,
``dataset``, ``data_root``, ``split``, ``num_images``) and a log-scale bar
chart of the counts. By default both go next to the data:
``<data_root>/class_stats_<split>.json`` and ``.png``, where a prior's
relative ``class_counts`` is looked up.

    mmseg-arb class-counts CONFIG [--split train] [--workers 8]
"""
import argparse
import os
import os.path as osp
from typing import Dict, List

from mmengine.config import DictAction
from mmengine.registry import init_default_scope

from ..config.shipped import resolve_config
from ..datasets.class_counts import dataset_class_counts, plot_class_counts
from ..utils.class_counts import class_counts_file, save_class_counts
from .command import Command
from .launch import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        'config',
        help='config whose dataset is counted (a file, or the '
        'name of a shipped config)')
    parser.add_argument(
        '--split', default='train', choices=['train', 'val', 'test'])
    parser.add_argument(
        '--out',
        help='JSON path (default: <data_root>/'
        f"{class_counts_file('<split>')})")
    parser.add_argument(
        '--workers', type=int, default=min(8,
                                           os.cpu_count() or 1))
    parser.add_argument('--no-progress', action='store_true')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. '
        'train_dataloader.dataset.data_root=data/my_ade')


def zero_pixel_note(stats: Dict) -> List[str]:
    """Lines saying which classes have no pixel, and what a ``prior``
    config reading these counts needs then (an empty list if none)."""
    names = stats['class_names']
    zero = [names[i] for i, n in enumerate(stats['counts']) if n == 0]
    if not zero:
        return []
    shown = ', '.join(repr(n) for n in zero[:20])
    more = f' and {len(zero) - 20} more' if len(zero) > 20 else ''
    return [
        f'{len(zero)} of {len(names)} classes have no pixel in this split: '
        f'{shown}{more}.',
        "An ARBLoss with count_mode='prior' reading these counts needs a "
        'pseudo-count for them, else a pixel of such a class gets an '
        'infinite loss: set smoothing in the loss config, e.g. '
        "model.decode_head.loss_decode.smoothing=1.0 (and the auxiliary "
        "head's), or --cfg-options "
        'model.decode_head.loss_decode.smoothing=1.0 when training.'
    ]


def run(args: argparse.Namespace, argv: List[str]) -> None:
    cfg = load_config(resolve_config(args.config), args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    from mmseg.registry import DATASETS
    dataset_cfg = cfg[f'{args.split}_dataloader'].dataset
    dataset = DATASETS.build(dataset_cfg)
    stats = dataset_class_counts(
        dataset, args.workers, progress=not args.no_progress)
    stats['dataset'] = dataset_cfg.get('type', type(dataset).__name__)
    stats['data_root'] = dataset_cfg.get('data_root', '')
    stats['split'] = args.split
    out = args.out or osp.join(stats['data_root'], class_counts_file(
        args.split))
    save_class_counts(stats, out)
    png = osp.splitext(out)[0] + '.png'
    plot_class_counts(stats, png)
    total = sum(stats['counts'])
    counted = [i for i, n in enumerate(stats['counts']) if n > 0] or [0]
    rarest = min(counted, key=stats['counts'].__getitem__)
    print(f"{stats['num_images']} images, {total} labelled pixels; rarest "
          f"counted class {stats['class_names'][rarest]!r} "
          f"({stats['counts'][rarest] / max(total, 1):.2e} of the pixels)")
    for line in zero_pixel_note(stats):
        print(line)
    print(f'wrote {out} and {png}')


COMMAND = Command(
    'class-counts', 'count the pixels of every class over a '
    "config's dataset (class_counts of 'prior' configs)",
    add_arguments,
    run,
    aliases=('class-stats', ))
