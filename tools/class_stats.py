"""Count pixels per class over a config's training set.

Writes a JSON usable as ``class_counts`` by the ``prior`` configs
(``counts``, ``class_names``, ``dataset``, ``num_images``) and a log-scale
bar chart of the distribution. By default both go next to the data:
``<data_root>/class_stats_<split>.json`` and ``.png``.

    python tools/class_stats.py CONFIG [--split train] [--workers 8]
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.registry import init_default_scope

import mmseg_arb  # noqa: F401
from mmseg_arb.datasets.class_statistics import (dataset_class_stats,
                                                 plot_class_distribution)
from mmseg_arb.utils.class_stats import save_class_stats
from mmseg_arb.utils.launch import load_config
from mmseg_arb.utils.quiet_warnings import ignore_pkg_resources_deprecation


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config whose dataset is counted')
    parser.add_argument('--split', default='train', choices=['train', 'val',
                                                             'test'])
    parser.add_argument('--out', help='JSON path (default: '
                        '<data_root>/class_stats_<split>.json)')
    parser.add_argument('--workers', type=int,
                        default=min(8, os.cpu_count() or 1))
    parser.add_argument('--no-progress', action='store_true')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. '
                        'train_dataloader.dataset.data_root=data/my_ade')
    return parser.parse_args()


def main() -> None:
    ignore_pkg_resources_deprecation()
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    from mmseg.registry import DATASETS
    dataset_cfg = cfg[f'{args.split}_dataloader'].dataset
    dataset = DATASETS.build(dataset_cfg)
    stats = dataset_class_stats(dataset, args.workers,
                                progress=not args.no_progress)
    stats['dataset'] = dataset_cfg.get('type', type(dataset).__name__)
    stats['data_root'] = dataset_cfg.get('data_root', '')
    stats['split'] = args.split
    out = args.out or osp.join(stats['data_root'],
                               f'class_stats_{args.split}.json')
    save_class_stats(stats, out)
    png = osp.splitext(out)[0] + '.png'
    plot_class_distribution(stats, png)
    total = sum(stats['counts'])
    rarest = min(range(len(stats['counts'])), key=stats['counts'].__getitem__)
    print(f"{stats['num_images']} images, {total} labelled pixels; rarest "
          f"class {stats['class_names'][rarest]!r} "
          f"({stats['counts'][rarest] / max(total, 1):.2e} of the pixels)")
    print(f'wrote {out} and {png}')


if __name__ == '__main__':
    main()
