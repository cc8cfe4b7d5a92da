"""Which loss should I use? ARB-Loss against the losses MMSegmentation users
pick instead, over several seeds, on one generated long-tailed dataset.

1. writes the dataset (ADE20K layout; classes, size and tail steepness by
   flag) and the class statistics of its training split, once;
2. writes one mmseg config per loss and seed into its run folder (the
   study's base config with that loss, written as a user writes it) and
   trains each with ``tools/train.py`` through mmengine's Runner, as many
   at once as the machine allows, validating with LongTailIoUMetric at the
   end; the ``tau`` rows follow once the count modes are in, with the mode
   of the best mean mIoU;
3. writes ``loss_study.md`` / ``.json`` (mean ± std over seeds, paired
   differences against cross-entropy, failed runs with their errors) and
   two plots into the work dir (``--export`` copies them elsewhere).

Run again with the same work dir, it trains only what has no result yet
(an interrupted run restarts from its last checkpoint, if it saved one).
The same code runs on GPUs: ``--gpus-per-job`` (torchrun for more than
one), ``--iters``, ``--crop``, ``--batch-size`` and ``--config`` for a
bigger model.

    python tools/loss_study.py [--seeds 3] [--work-dir work_dirs/loss_study]
"""
import argparse
import json
import os
import os.path as osp
import platform
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from typing import Dict, List, Optional

import mmseg_arb  # noqa: F401
from mmseg_arb.datasets import SyntheticSpec, prepare_synthetic
from mmseg_arb.study.jobs import Run, Slot, read_result, run_all
from mmseg_arb.study.matrix import (COUNT_MODES, StudyLoss, apply_loss,
                                    arb_loss, inverse_frequency_weights,
                                    mmseg_losses)
from mmseg_arb.study.report import (best_row, markdown_tables,
                                    paired_difference, plot_class_iou,
                                    plot_overall_vs_tail, run_key, summarize)
from mmseg_arb.utils.class_stats import load_class_counts
from mmseg_arb.utils.launch import load_config
from mmseg_arb.utils.quiet_warnings import ignore_pkg_resources_deprecation
from mmseg_arb.utils.results import code_version
from mmseg_arb.utils.short_run import set_iterations, use_dataset

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(ROOT, 'tools', 'train.py')
DEFAULT_CONFIG = osp.join(
    ROOT, 'configs', 'demo',
    'deeplabv3plus_r18-tiny_1xb8-400iter_synthetic-ade20k-128x128.py')
ARB_MODES = [f'arb-{m}' for m in COUNT_MODES]
TAU_KEY = 'arb-tau'  # the tau variants of the best count mode
OUTPUTS = ('loss_study.md', 'loss_study.json', 'overall_vs_tail.png',
           'iou_vs_frequency.png')


def all_loss_keys() -> List[str]:
    return [l.key for l in mmseg_losses([1.0], 1)] + ARB_MODES + [TAU_KEY]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/loss_study')
    parser.add_argument('--losses', nargs='+', default=all_loss_keys(),
                        choices=all_loss_keys(), metavar='KEY',
                        help=f'rows to run, of: {" ".join(all_loss_keys())}'
                        f' ({TAU_KEY}: the --taus with the best count mode)')
    parser.add_argument('--seeds', type=int, default=3,
                        help='seeds 0 .. N-1 of every row')
    parser.add_argument('--taus', type=float, nargs='+', default=[0.5, 1.5],
                        help=f'tau of the {TAU_KEY} rows (1 is the count '
                        "mode's own row)")
    parser.add_argument('--tau-mode', default='auto',
                        choices=['auto'] + list(COUNT_MODES),
                        help='count mode of the tau rows; auto: the mode of '
                        'the best mean mIoU among those run')
    data = parser.add_argument_group('dataset (generated, ADE20K layout)')
    data.add_argument('--data-root', help='default: WORK_DIR/data')
    data.add_argument('--num-classes', type=int, default=24)
    data.add_argument('--num-train', type=int, default=96)
    data.add_argument('--num-val', type=int, default=64)
    data.add_argument('--size', type=int, nargs=2, default=[128, 128],
                      metavar=('H', 'W'), help='image size')
    data.add_argument('--rarest-share', type=float, default=1e-3,
                      help='expected pixel share of the rarest class '
                      '(tail steepness)')
    data.add_argument('--data-seed', type=int, default=0)
    train = parser.add_argument_group('training')
    train.add_argument('--config', default=DEFAULT_CONFIG,
                       help='cross-entropy config every row starts from')
    train.add_argument('--iters', type=int, default=300)
    train.add_argument('--crop', type=int, nargs=2, default=[64, 64],
                       metavar=('H', 'W'))
    train.add_argument('--batch-size', type=int, default=8,
                       help='per process')
    train.add_argument('--checkpoint-interval', type=int, default=0,
                       help='iterations between checkpoints (0: none; '
                       'they let an interrupted long run resume)')
    run = parser.add_argument_group('execution')
    run.add_argument('--gpus-per-job', type=int, default=0,
                     help='0: train on CPUs')
    run.add_argument('--jobs', type=int,
                     help='runs at once (default: one per CPU core, or all '
                     'GPUs in groups of --gpus-per-job)')
    run.add_argument('--threads-per-job', type=int,
                     help='CPU threads of each run (default: cores / jobs)')
    run.add_argument('--loader-workers', type=int,
                     help='dataloader workers of each run (default: 0 on '
                     'CPU, where they would compete with the other runs; '
                     '2 on GPU)')
    run.add_argument('--retry-failed', action='store_true',
                     help='train again the runs that failed before')
    run.add_argument('--export', help='also copy the report and plots here')
    run.add_argument('--no-progress', action='store_true')
    return parser.parse_args(argv)


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(
        os, 'sched_getaffinity') else (os.cpu_count() or 1)


def make_slots(args: argparse.Namespace) -> List[Slot]:
    """One slot per run that may execute at once: CPU threads, or a group of
    GPUs (torchrun for more than one)."""
    if args.gpus_per_job == 0:
        jobs = args.jobs or cpu_cores()
        threads = str(args.threads_per_job or max(1, cpu_cores() // jobs))
        env = dict(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                   CUDA_VISIBLE_DEVICES='')
        return [Slot(env, [sys.executable]) for _ in range(jobs)]
    import torch
    # Indices as this process sees them, mapped back through its own
    # CUDA_VISIBLE_DEVICES: a run's setting replaces the study's.
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    gpus = [str(i) for i in range(torch.cuda.device_count())]
    if visible:
        gpus = [g.strip() for g in visible.split(',')][:len(gpus)]
    groups = len(gpus) // args.gpus_per_job
    if groups == 0:
        raise SystemExit(f'--gpus-per-job {args.gpus_per_job}: only '
                         f'{len(gpus)} GPUs visible')
    slots = []
    for i in range(min(args.jobs or groups, groups)):
        ids = gpus[i * args.gpus_per_job:(i + 1) * args.gpus_per_job]
        env = dict(CUDA_VISIBLE_DEVICES=','.join(ids))
        if len(ids) == 1:
            slots.append(Slot(env, [sys.executable]))
        else:
            slots.append(Slot(
                env, [sys.executable, '-m', 'torch.distributed.run',
                      f'--nproc_per_node={len(ids)}',
                      f'--master_port={29500 + 17 * i}'],
                distributed=True))
    return slots


def dataset_spec(args: argparse.Namespace) -> SyntheticSpec:
    return SyntheticSpec(layout='ade20k', num_classes=args.num_classes,
                         num_train=args.num_train, num_val=args.num_val,
                         height=args.size[0], width=args.size[1],
                         rarest_share=args.rarest_share, seed=args.data_seed)


def set_num_classes(cfg, num_classes: int) -> None:
    """Heads and datasets of ``cfg`` for the first ``num_classes`` ADE20K
    classes (those the generator draws)."""
    from mmseg.datasets import ADE20KDataset
    classes = ADE20KDataset.METAINFO['classes'][:num_classes]
    for head in ('decode_head', 'auxiliary_head'):
        if cfg.model.get(head) is not None:
            cfg.model[head].num_classes = num_classes
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.metainfo = dict(classes=classes)


def base_config(args: argparse.Namespace, cfg, data_root: str, stats: str):
    """The cross-entropy config every row starts from, on the study's data
    and schedule (``cfg``, with its classes set, is changed in place)."""
    use_dataset(cfg, data_root, stats)
    set_iterations(cfg, args.iters)
    cfg.default_hooks.logger.interval = max(1, args.iters // 20)
    if args.checkpoint_interval:
        cfg.default_hooks.checkpoint.interval = args.checkpoint_interval
    else:
        cfg.default_hooks.checkpoint.update(interval=-1, save_last=False)
    # Resizes keep the generated images at their size (mmseg's (long side,
    # short side) scale, as the demo's (512, 128) for 128x128 images): the
    # config's own scales are meant for its own data.
    scale = (4 * max(args.size), min(args.size))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for t in cfg[loader].dataset.pipeline:
            if t.type in ('Resize', 'RandomResize'):
                t.scale = scale
    crop = tuple(args.crop)
    cfg.model.data_preprocessor.size = crop
    crops = [t for t in cfg.train_dataloader.dataset.pipeline
             if t.type == 'RandomCrop']
    if not crops:
        raise SystemExit(f'{args.config}: no RandomCrop to set --crop in')
    for t in crops:
        t.crop_size = crop
    cfg.train_dataloader.batch_size = args.batch_size
    workers = loader_workers(args)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].num_workers = workers
        cfg[loader].persistent_workers = workers > 0
    return cfg


def loader_workers(args: argparse.Namespace) -> int:
    if args.loader_workers is not None:
        return args.loader_workers
    return 2 if args.gpus_per_job else 0


def study_settings(args: argparse.Namespace) -> Dict:
    """What every run depends on: runs made with other settings cannot be
    mixed into one table."""
    return dict(config=osp.abspath(args.config),
                dataset=asdict(dataset_spec(args)), iters=args.iters,
                crop=list(args.crop), batch_size=args.batch_size,
                gpus_per_job=args.gpus_per_job,
                loader_workers=loader_workers(args))


def check_settings(work_dir: str, settings: Dict) -> None:
    path = osp.join(work_dir, 'study.json')
    if osp.exists(path):
        with open(path) as f:
            before = json.load(f)
        changed = sorted(k for k in set(before) | set(settings)
                         if before.get(k) != settings.get(k))
        if changed:
            raise SystemExit(
                f'{work_dir} holds runs made with other settings '
                f'({", ".join(changed)} differ); give another --work-dir')
        return
    os.makedirs(work_dir, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(settings, f, indent=1)


def make_runs(losses: List[StudyLoss], seeds: range, base, work_dir: str,
              iters: int) -> List[Run]:
    """The runs of ``losses`` x ``seeds``, each with its config written
    into its folder unless it has finished; seed-major, so that an
    interrupted study has whole seeds."""
    runs = []
    for seed in seeds:
        for loss in losses:
            run_dir = osp.join(work_dir, 'runs', loss.key, f'seed{seed}')
            config = osp.join(run_dir, 'config.py')
            if read_result(run_dir) is None:  # finished runs stay as they are
                cfg = apply_loss(base, loss)
                cfg.randomness = dict(seed=seed)
                cfg.work_dir = run_dir
                os.makedirs(run_dir, exist_ok=True)
                cfg.dump(config)
            runs.append(Run(run_key(loss.key, seed), loss.key, seed, run_dir,
                            [TRAIN, config, '--work-dir', run_dir,
                             '--resume'], iters))
    return runs


def choose_tau_mode(args: argparse.Namespace, results: Dict[str, Dict],
                    seeds: range) -> Optional[str]:
    """The count mode of the tau rows: given, or the selected count mode
    with the best mean mIoU once all of their runs are in (a mode with
    failed seeds comes after those without); ``''`` when none trained."""
    if args.tau_mode != 'auto':
        return args.tau_mode
    modes = [k for k in ARB_MODES if k in args.losses]
    if not modes:
        raise SystemExit(f'{TAU_KEY} needs a count-mode row ({ARB_MODES}) '
                         'or --tau-mode')
    keys = [run_key(m, s) for m in modes for s in seeds]
    if not all(k in results for k in keys):
        return None
    ranks = {}
    for mode in modes:
        values = [results[run_key(mode, s)]['summary']['mIoU']
                  for s in seeds
                  if results[run_key(mode, s)]['status'] == 'ok']
        if values:
            ranks[mode] = (len(values), sum(values) / len(values))
    if not ranks:
        return ''
    return max(ranks, key=ranks.get)[len('arb-'):]


def machine() -> Dict:
    import mmcv
    import mmengine
    import mmseg
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    info = dict(cpu=cpu, cores=cpu_cores(), python=platform.python_version(),
                torch=torch.__version__, mmcv=mmcv.__version__,
                mmengine=mmengine.__version__, mmseg=mmseg.__version__)
    if torch.cuda.is_available():
        info['gpus'] = [torch.cuda.get_device_name(i)
                        for i in range(torch.cuda.device_count())]
    return info


def load_average() -> List[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: Optional[List[str]] = None) -> None:
    ignore_pkg_resources_deprecation()
    args = parse_args(argv)
    started, load_before = time.time(), load_average()
    work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data_root or osp.join(work_dir, 'data'))
    check_settings(work_dir, study_settings(args))
    if args.retry_failed:
        for path in _failed_results(work_dir):
            os.remove(path)

    base = load_config(args.config)
    set_num_classes(base, args.num_classes)
    stats = prepare_synthetic(data_root, dataset_spec(args),
                              base.train_dataloader.dataset,
                              workers=cpu_cores(),
                              progress=not args.no_progress)
    counts = load_class_counts(stats).tolist()
    base = base_config(args, base, data_root, stats)
    crop_pixels = args.batch_size * args.crop[0] * args.crop[1]
    losses = [l for l in mmseg_losses(inverse_frequency_weights(counts),
                                      crop_pixels // 10)
              if l.key in args.losses]
    losses += [arb_loss(k[len('arb-'):], stats) for k in ARB_MODES
               if k in args.losses]
    seeds = range(args.seeds)
    tau_losses: List[StudyLoss] = []
    tau_modes: List[str] = []

    def tau_runs(results: Dict[str, Dict]) -> List[Run]:
        if TAU_KEY not in args.losses or tau_modes:
            return []
        mode = choose_tau_mode(args, results, seeds)
        if mode is None:
            return []
        tau_modes.append(mode)
        if not mode:
            print(f'no count-mode run finished: no {TAU_KEY} rows')
            return []
        tau_losses.extend(arb_loss(mode, stats, tau) for tau in args.taus
                          if tau != 1.0)
        return make_runs(tau_losses, seeds, base, work_dir, args.iters)

    slots = make_slots(args)
    print(f'{len(losses)} losses x {args.seeds} seeds, {len(slots)} at a '
          f"time ({', '.join(sorted({str(s.env) for s in slots}))})")
    # Count modes first: the tau rows wait for them, while the other rows
    # keep the slots busy.
    runs = make_runs(sorted(losses, key=lambda l: l.family != 'arb'), seeds,
                     base, work_dir, args.iters)
    try:
        results, trained = run_all(runs, slots, tau_runs,
                                   progress=not args.no_progress)
    except KeyboardInterrupt:
        raise SystemExit('interrupted: the same command resumes the study')
    rows = summarize(losses + tau_losses, results, seeds)
    timing = dict(command=command_line(),
                  wall_seconds=round(time.time() - started, 1),
                  runs_trained=len(trained), load_before=load_before,
                  load_after=load_average(),
                  finished=time.strftime('%Y-%m-%d %H:%M'),
                  code=code_version().get('git_commit'))
    calls = record_call(work_dir, timing)
    with open(stats) as f:
        class_names = json.load(f)['class_names']
    write_report(args, rows, results, counts, class_names, timing, calls,
                 work_dir)


def command_line() -> str:
    return 'python tools/loss_study.py ' + ' '.join(
        shlex.quote(a) for a in sys.argv[1:])


def record_call(work_dir: str, timing: Dict) -> List[Dict]:
    """Append this call to the study's calls that trained runs (a resumed
    study took all of them), and return them all."""
    path = osp.join(work_dir, 'calls.json')
    calls = []
    if osp.exists(path):
        with open(path) as f:
            calls = json.load(f)
    if timing['runs_trained']:
        calls.append(timing)
        with open(path, 'w') as f:
            json.dump(calls, f, indent=1)
    return calls


def _failed_results(work_dir: str) -> List[str]:
    import glob
    paths = glob.glob(osp.join(work_dir, 'runs', '*', '*', 'result.json'))
    failed = []
    for path in paths:
        with open(path) as f:
            if json.load(f)['status'] != 'ok':
                failed.append(path)
    return failed


def write_report(args: argparse.Namespace, rows: List[Dict],
                 results: Dict[str, Dict], counts: List[float],
                 class_names: List[str], timing: Dict, calls: List[Dict],
                 work_dir: str) -> None:
    info = machine()
    ce = next((r for r in rows if r['key'] == 'ce' and r['seeds']), None)
    best_arb = best_row(rows, 'arb')
    best_other = best_row(rows, 'mmseg', exclude=('ce', ))
    chosen = [r for r in (ce, best_arb, best_other) if r is not None]
    plot_overall_vs_tail(rows, osp.join(work_dir, 'overall_vs_tail.png'))
    plot_class_iou(chosen, counts, class_names,
                   osp.join(work_dir, 'iou_vs_frequency.png'))
    summary = dict(settings=study_settings(args), machine=info,
                   timing=timing, calls=calls, code=code_version(),
                   best=dict(arb=best_arb and best_arb['key'],
                             other=best_other and best_other['key'],
                             arb_minus_other=best_arb and best_other and
                             paired_difference(best_arb, best_other)),
                   rows=rows, runs=results)
    with open(osp.join(work_dir, 'loss_study.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    tables = markdown_tables(rows)
    minutes = sum(c['wall_seconds'] for c in calls) / 60
    header = [
        f"Machine: {info['cpu']}, {info['cores']} cores; torch "
        f"{info['torch']}, mmcv {info['mmcv']}, mmengine "
        f"{info['mmengine']}, mmseg {info['mmseg']}"
        + (f"; GPUs: {', '.join(info['gpus'])}" if 'gpus' in info else ''),
        '', f'Time: {minutes:.1f} min wall in {len(calls)} call(s) that '
        'trained runs (load average over 1, 5, 15 min before and after '
        'each):', '']
    header += [
        f"* `{c['command']}`: {c['runs_trained']} runs, "
        f"{c['wall_seconds'] / 60:.1f} min, finished {c['finished']}, load "
        f"{c['load_before']} / {c['load_after']}, code {c['code']}"
        for c in calls]
    header += ['', 'Report: `' + timing['command'] + '`, code ' + ', '.join(
        f'{k} {v}' for k, v in summary['code'].items()), '']
    with open(osp.join(work_dir, 'loss_study.md'), 'w') as f:
        f.write('\n'.join(header) + '\n' + tables)
    print('\n' + tables)
    print(f"{timing['wall_seconds'] / 60:.1f} min; wrote "
          f"{', '.join(OUTPUTS)} in {work_dir}")
    if args.export:
        os.makedirs(args.export, exist_ok=True)
        for name in OUTPUTS:
            shutil.copy(osp.join(work_dir, name), args.export)
        print(f'copied them to {args.export}')


if __name__ == '__main__':
    main()
