"""The README's main command: cross-entropy, the paper's ARB-Loss and the
README's recommendation (class-weighted cross-entropy, weights n^-0.5), on a
CPU.

1. writes the long-tailed dataset in the ADE20K layout (once), its class
   counts and the class weights n^-0.5 of those counts (mmseg-arb
   class-counts' code),
2. trains the demo's small DeepLabV3+ with each loss through mmengine's
   Runner, same schedule and seed, with GradientBalanceHook on; the console
   shows a progress bar, mmengine's lines go to each run's log file,
3. evaluates each with LongTailIoUMetric and prints a side-by-side table
   (mIoU, head / body / tail mIoU, IoU of the five rarest classes) with
   each loss's difference to cross-entropy,
4. saves under the work dir: iou_vs_frequency.png (per-class IoU against
   class frequency, every loss), {ce,arb,cw}/gradient_balance.png, and
   results.md / results.json (tools/summarize_results.py's format).

No download, no GPU.

    python tools/demo.py [--iters 400] [--work-dir work_dirs/demo]
"""
import argparse
import contextlib
import json
import os
import os.path as osp
from typing import Dict, List

import numpy as np
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

import mmseg_arb  # noqa: F401
from mmseg_arb.cli.launch import build_runner, load_config
from mmseg_arb.cli.quiet_warnings import ignore_pkg_resources_deprecation
from mmseg_arb.config.short_run import set_iterations, use_dataset
from mmseg_arb.datasets import SyntheticSpec, prepare_synthetic
from mmseg_arb.results.plots import plot_iou_vs_frequency
from mmseg_arb.results.runs import (SUMMARY_KEYS, code_version, load_run,
                                    results_markdown)
from mmseg_arb.utils.class_counts import (load_class_counts,
                                          parse_class_weight_file,
                                          power_class_weight)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
_MMENGINE_CONSOLE = open(os.devnull, 'w')
CONFIGS = {
    'CE':
    'deeplabv3plus_r18-tiny_1xb8-400iter_synthetic-ade20k-128x128.py',
    'ARB':
    'deeplabv3plus_r18-tiny_arb_1xb8-400iter_synthetic-ade20k-128x128.py',
    'CW':
    'deeplabv3plus_r18-tiny_cw-p0.5_1xb8-400iter_synthetic-ade20k-128x128.py',
}


def demo_spec(num_classes: int) -> SyntheticSpec:
    """The demo's dataset: 24 ADE20K classes, the rarest at 0.1%."""
    return SyntheticSpec(
        layout='ade20k',
        num_classes=num_classes,
        num_train=96,
        num_val=24,
        height=128,
        width=128,
        rarest_share=1e-3,
        seed=0)


@HOOKS.register_module(force=True)
class DemoProgressBar(Hook):
    """A tqdm bar over the training iterations, with the current loss."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar = None

    def before_train(self, runner) -> None:
        from tqdm import tqdm
        self.bar = tqdm(
            total=runner.max_iters,
            initial=runner.iter,
            desc=self.desc,
            unit='it',
            dynamic_ncols=True)

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        self.bar.update()
        if outputs and 'loss' in outputs:
            # The loss still holds its graph: read it detached.
            loss = float(outputs['loss'].detach())
            self.bar.set_postfix(loss=f'{loss:.3f}')

    def after_train(self, runner) -> None:
        self.bar.close()


def use_class_weight(cfg, data_root: str, stats_path: str) -> None:
    """A head loss that reads its class weights from a file (the one
    ``mmseg-arb class-counts --weight-power p`` writes) reads it from
    ``data_root``, written there from the training counts."""
    for head in ('decode_head', 'auxiliary_head'):
        loss = cfg.model[head].loss_decode
        name = osp.basename(str(loss.get('class_weight') or ''))
        split, power = parse_class_weight_file(name) or (None, None)
        if split == 'train':
            loss.class_weight = osp.join(data_root, name)
            with open(loss.class_weight, 'w') as f:
                json.dump(power_class_weight(stats_path, float(power)), f)


def train_one(name: str, args: argparse.Namespace, data_root: str,
              stats_path: str) -> Dict:
    cfg = load_config(
        osp.join(ROOT, 'configs', 'demo', CONFIGS[name]),
        work_dir=osp.join(args.work_dir, name.lower()))
    use_dataset(cfg, data_root, stats_path)
    use_class_weight(cfg, data_root, stats_path)
    iters = args.iters or cfg.train_cfg.max_iters
    set_iterations(cfg, iters)
    # Visualizers are per-name singletons: a second runner in this process
    # would otherwise write into the first run's folder.
    cfg.visualizer.name = f'visualizer_{name.lower()}'
    cfg.custom_hooks = [
        dict(type='GradientBalanceHook', interval=max(1, iters // 20)),
        dict(type='DemoProgressBar', desc=f'{name:>3} training'),
    ]
    # mmengine's console lines (environment, the whole config, hooks, a
    # line per logged iteration: about 600 a run) go to the run's log file
    # only; the console keeps the progress bar (stderr) and our table.
    # mmengine's stream handler keeps the stream it was made with, so the
    # sink stays open for the process.
    with contextlib.redirect_stdout(_MMENGINE_CONSOLE):
        runner = build_runner(cfg)
        runner.train()  # validates after the last iteration
    print(f'{name}: log in {osp.join(runner.log_dir, runner.timestamp)}.log')
    return load_run(cfg.work_dir, name)


def print_table(runs: List[Dict], counts: np.ndarray,
                names: List[str]) -> None:
    """The runs side by side, then each run's difference to the first
    (cross-entropy)."""
    rarest = [names[i] for i in np.argsort(counts, kind='stable')[:5]]
    share = dict(zip(names, counts / counts.sum()))
    width = 26
    base = runs[0]['name']
    print('\n' + f"{'':<{width}}" + ''.join(f"{r['name']:>9}" for r in runs) +
          ''.join(f"{r['name'] + '-' + base:>9}" for r in runs[1:]))
    rows = [(key, [r['summary'].get(key) for r in runs])
            for key in SUMMARY_KEYS]
    rows += [(f'IoU {n.strip()} ({share[n]:.1e})',
              [r['per_class_iou'].get(n) for r in runs]) for n in rarest]
    for label, values in rows:
        cells = ''.join(f'{v:>9.2f}' if v is not None else f"{'-':>9}"
                        for v in values)
        diffs = ''.join(f'{v - values[0]:>+9.2f}' if None not in (
            v, values[0]) else f"{'-':>9}" for v in values[1:])
        print(f'{label:<{width}}{cells}{diffs}')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--iters',
        type=int,
        help='training iterations of '
        "each run (default: the configs')")
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic_ade20k')
    return parser.parse_args()


def main() -> None:
    ignore_pkg_resources_deprecation()
    args = parse_args()
    base_cfg = load_config(osp.join(ROOT, 'configs', 'demo', CONFIGS['CE']))
    stats_path = prepare_synthetic(args.data_root,
                                   demo_spec(base_cfg.num_classes),
                                   base_cfg.train_dataloader.dataset)
    runs = [
        train_one(name, args, args.data_root, stats_path) for name in CONFIGS
    ]

    names = list(base_cfg.metainfo.classes)
    counts = load_class_counts(stats_path).numpy()
    print_table(runs, counts, names)
    os.makedirs(args.work_dir, exist_ok=True)
    plot = osp.join(args.work_dir, 'iou_vs_frequency.png')
    plot_iou_vs_frequency(
        [(run['name'], [run['per_class_iou'].get(n, np.nan)
                        for n in names], None) for run in runs], counts, plot)
    version = code_version()
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(results_markdown(runs, version))
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump({'runs': runs, 'code': version}, f, indent=1)
    folders = ','.join(name.lower() for name in CONFIGS)
    print(f'\nsaved {plot}, {args.work_dir}/{{{folders}}}/'
          f'gradient_balance.png and {args.work_dir}/results.md')
    print('validation mIoU: ' +
          ', '.join(f"{run['name']} {run['summary']['mIoU']:.2f}"
                    for run in runs))


if __name__ == '__main__':
    main()
