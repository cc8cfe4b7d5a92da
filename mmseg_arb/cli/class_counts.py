"""``mmseg-arb class-counts``: the pixels of each class over a config's
dataset (``class-stats``, its earlier name, still works).

Writes a class-counts JSON usable as ``class_counts`` by the ``prior``
configs and by ``LongTailIoUMetric`` (``counts``, ``class_names``,
``dataset``, ``data_root``, ``split``, ``num_images``) and a log-scale bar
chart of the counts. By default both go next to the data:
``<data_root>/class_stats_<split>.json`` and ``.png``, where a prior's
relative ``class_counts`` is looked up. With ``--weight-power p`` it also
writes the class weights ``n^-p`` (a JSON list,
``class_weight_<split>_p<p>.json`` beside the counts) that mmseg's
``CrossEntropyLoss(class_weight=...)`` reads, and prints the loss line.

    mmseg-arb class-counts CONFIG [--split train] [--weight-power 0.5]
"""
import argparse
import json
import os
import os.path as osp
from math import inf
from typing import Dict, List

from mmengine.config import DictAction
from mmengine.registry import init_default_scope

from ..config.shipped import resolve_config
from ..datasets.class_counts import dataset_class_counts, plot_class_counts
from ..utils.class_counts import (class_counts_file, class_weight_file,
                                  power_class_weight, save_class_counts)
from .command import Command, UsageError
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
    parser.add_argument(
        '--weight-power',
        type=float,
        metavar='P',
        help='also write class weights n^-P (scaled to a mean of 1 per '
        'counted pixel) for CrossEntropyLoss(class_weight=...): '
        f"{class_weight_file('<split>', 0.5).replace('0.5', '<P>')} beside "
        'the counts (0.5: the CamVid loss study\'s class-weighted '
        'cross-entropy)')
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


def class_weight_note(path: str, weight: List[float]) -> List[str]:
    """Lines saying where the class weights went and how a config uses
    them."""
    present = [w for w in weight if w > 0]
    return [
        f'wrote {path}: class weights from {min(present):.3g} (the most '
        f'frequent class) to {max(present):.3g}; in a config, for each '
        'head:', "    loss_decode=dict(type='CrossEntropyLoss', "
        f"class_weight='{path}', reduction='none')",
        "(reduction='none': mmseg 1.2.2's weighted mean fails on ignored "
        'pixels, open-mmlab/mmsegmentation#3734; the runner averages the '
        "pixels' losses instead.)"
    ]


def run(args: argparse.Namespace, argv: List[str]) -> None:
    if args.weight_power is not None and not 0 <= args.weight_power < inf:
        # Said at once, not after the counting pass.
        raise UsageError('--weight-power must be a finite number >= 0 (0.5: '
                         'the CamVid study\'s class weights n^-0.5), got '
                         f'{args.weight_power}')
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
    if args.weight_power is not None:
        weight = power_class_weight(stats['counts'], args.weight_power)
        path = osp.join(
            osp.dirname(out), class_weight_file(args.split, args.weight_power))
        with open(path, 'w') as f:
            json.dump(weight, f)
        for line in class_weight_note(path, weight):
            print(line)


COMMAND = Command(
    'class-counts', 'count the pixels of every class over a '
    "config's dataset (class_counts of 'prior' configs)",
    add_arguments,
    run,
    aliases=('class-stats', ))
