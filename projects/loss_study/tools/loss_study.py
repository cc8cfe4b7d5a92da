"""Which loss should I use? ARB-Loss against the published long-tail losses
and the rebalancing mmseg users are told to use, tuned alike, chosen on
validation, reported on a held-out test split.

1. writes the dataset of every data seed (ADE20K layout, train / val /
   test; by default the ``hard`` mode: classes vary within themselves and
   some tail classes are twins of frequent ones) and its class statistics;
   or, with ``--dataset camvid``, reads CamVid as ``mmseg-arb prepare
   camvid`` wrote it (one real dataset: one data seed; its ``val`` tunes,
   its ``test`` reports, ``class_stats_train.json`` gives the counts);
2. **tuning stage**: trains every configuration of every family
   (``loss_study.matrix``: the same number per family) on data seed 0 with
   the tuning seeds, validation only, and picks each family's
   configuration by the rule of ``loss_study.report`` (highest mean
   validation mIoU), per optimiser;
3. **final stage**: trains each family's chosen configuration and
   cross-entropy with every final seed on every data seed, evaluated on
   validation and test (``TestAfterTrainHook``); CE, the chosen ARB and
   the chosen class weights validate every ``--curve-interval``
   iterations for learning curves;
4. writes ``loss_study.json`` (every run, the protocol, the data) and,
   from it alone, ``loss_study.md`` and the plots (paired differences with
   95 % t intervals, verdicts by the interval rule).

``--families ... ce-tta`` (not a default; the CamVid study's test-time
logit adjustment of CE) trains nothing of its own but CE at the tuning
seeds (validation only, the last checkpoint kept: it needs
``--checkpoint-interval``). Once a CE run has finished, the last
checkpoint is evaluated (``loss_study.evaluate``: mmseg's Runner with
``load_from`` and ``TestTimeLogitAdjustHook`` in ``custom_hooks``, counts
from the training split's ``class_stats_train.json``): every ``tau`` of
its grid on validation at the tuning seeds, then the ``tau`` the
selection rule picks on validation and test at the final seeds. Each
evaluation is stored as a run (``<stage>/<optimiser>/ce-tta-t<tau>/...``),
so the selection, the final tables and the comparisons (paired with CE by
seed) treat it as a row. An evaluation whose CE run failed, or whose
checkpoint is gone (a lost work dir resumed with ``--resume-from``),
fails naming it; ``--retry-failed`` then trains that CE run again.

Each run is ``tools/train.py CONFIG`` (an evaluation: ``python -m
projects.loss_study.loss_study.evaluate CONFIG``) in its own folder, as
many at once as there are slots (CPU cores, or one job per GPU), with the
repository root on its ``PYTHONPATH`` (its config imports the study's
losses and hook from ``projects.loss_study.loss_study``); a second call
trains only what has no ``result.json`` yet, so a long study resumes
across calls. ``loss_study.json`` is rewritten after every run (and copied to
``--export``), so what finished outlives an interrupted call, and
``--resume-from`` takes it back on a fresh machine. ``--tuning-only``
stops after the tuning stage and prints the chosen configurations, to be
committed before the same command without it runs the final stage;
``--registration FILE`` refuses that final stage until ``FILE`` registers
them in a commit (``loss_study.registration``). ``--report-only
WORK_DIR`` rebuilds the report from the JSON.

``--checks`` (CamVid: the registration's SGD and half-schedule checks,
``loss_study.checks``), once the final stage is complete (every row's
final runs and ``ce-tta`` evaluations finished, in this call or before),
trains the final stage's seed-100 run of CE, the chosen ARB and the chosen
ARB + weights again under SGD (``check/sgd/<key>/d0-s100``), and of CE,
the chosen ARB and the README's candidate (the row the registered rule
recommends; ARB + weights where that is CE) at half the iterations
(``check/half/<key>/d0-s100``; a ``ce-tta`` candidate evaluates the
``check/half/ce`` checkpoint), each with exactly the registered
``--cfg-options``. They are runs of the study (resumed, restored by
``--resume-from``) outside its tables, comparisons and planned counts;
item 7 of the rule (whether each check changed the order by test mIoU)
and the report's "Checks" section are computed from them.

    python projects/loss_study/tools/loss_study.py   # the short default
    python projects/loss_study/tools/loss_study.py \\
        --report-only work_dirs/loss_study
    python projects/loss_study/tools/loss_study.py --tune-seeds 2 \\
        --final-seeds 5 --data-seeds 2 --optimizers adamw sgd \\
        --iters 1000                                  # the published one
    python projects/loss_study/tools/loss_study.py --dataset camvid \\
        --data-root data/camvid_half        # projects/loss_study/camvid/
    python projects/loss_study/tools/loss_study.py --families ce ce-tta \\
        --checkpoint-interval 300                     # test-time adjustment
    python projects/loss_study/tools/loss_study.py --dataset camvid \\
        --data-root data/camvid_half ... --resume-from loss_study.json \\
        --checks       # the checks: the study's own arguments, and --checks
"""
import argparse
import copy
import json
import os
import os.path as osp
import platform
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

PROJECT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ROOT = osp.dirname(osp.dirname(PROJECT))  # the repository
if ROOT not in sys.path:  # this checkout's mmseg_arb and projects
    sys.path.insert(0, ROOT)

from mmseg_arb.config.short_run import set_iterations, use_dataset
from projects.loss_study.loss_study.jobs import (Run, Slot, read_json,
                                                 read_result, write_atomic,
                                                 write_result)
from projects.loss_study.loss_study.matrix import TEST_TIME_FAMILY

TRAIN = osp.join(ROOT, 'tools', 'train.py')
EVALUATE = ['-m', 'projects.loss_study.loss_study.evaluate']
DEFAULT_CONFIG = osp.join(
    ROOT, 'configs', 'demo',
    'deeplabv3plus_r18-tiny_1xb8-400iter_synthetic-ade20k-128x128.py')
CAMVID_CONFIG = osp.join(
    ROOT, 'configs', 'deeplabv3plus',
    'deeplabv3plus_r18-cpu_1xb8-1000iter_camvid-half-128x128.py')
# Per dataset: the default config, iterations and crop (None: the
# config's), and the tau values of ARB + count-driven class weights (on
# CamVid {0, 0.5}: projects/loss_study/camvid/PREREGISTRATION.md).
DATASETS = {
    'generated':
    dict(
        config=DEFAULT_CONFIG,
        iters=300,
        crop=[64, 64],
        weight_taus=(0.5, 1.0)),
    'camvid':
    dict(config=CAMVID_CONFIG, iters=1000, crop=None, weight_taus=(0.0, 0.5)),
}
STUDY_JSON = 'loss_study.json'
CALLS_JSON = 'calls.json'
REPORT = 'loss_study.md'
# (optimizer, eta_min of the poly schedule): the demo's AdamW, and mmseg's
# DeepLabV3+ SGD (schedule_80k: momentum 0.9, poly 0.9 to 1e-4) at lr 0.1
# instead of the recipe's 0.01, which is meant for an ImageNet-pretrained
# backbone: from scratch, CE at 0.01 had learned no body class after 2000
# iterations (docs/loss_study.md, "Schedule and learning rates").
OPTIMIZERS = {
    'adamw': (dict(type='AdamW', lr=2e-3, weight_decay=1e-4), 1e-5),
    'sgd': (dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4), 1e-4),
}
FAMILY_KEYS = ('ce', 'arb', 'class-weights', 'logit-adjustment', 'blv',
               'focal', 'dice', 'arb-weights')  # the default families
# Not a default: evaluations of CE's checkpoints (the CamVid study's own
# idea, projects/loss_study/camvid/PREREGISTRATION.md).
OPTIONAL_KEYS = (TEST_TIME_FAMILY, )
FINAL_SEED_OFFSET = 100  # final seeds differ from tuning seeds


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/loss_study')
    parser.add_argument(
        '--report-only',
        metavar='WORK_DIR',
        help='rebuild the report and plots of WORK_DIR from '
        'its loss_study.json; trains nothing')
    parser.add_argument(
        '--families',
        nargs='+',
        default=list(FAMILY_KEYS),
        choices=FAMILY_KEYS + OPTIONAL_KEYS,
        metavar='KEY',
        help=f'families, of: {" ".join(FAMILY_KEYS + OPTIONAL_KEYS)} '
        f'(ce is always run; {TEST_TIME_FAMILY}, not a default, trains '
        'CE at the tuning seeds and evaluates the last checkpoints of '
        'the CE runs with TestTimeLogitAdjustHook: it needs '
        '--checkpoint-interval)')
    parser.add_argument(
        '--optimizers',
        nargs='+',
        default=['adamw'],
        choices=sorted(OPTIMIZERS),
        help='each tunes and trains its own final stage')
    parser.add_argument(
        '--tune-seeds',
        type=int,
        default=1,
        help='training seeds of the tuning stage (data '
        'seed 0)')
    parser.add_argument(
        '--final-seeds',
        type=int,
        default=2,
        help='training seeds of the final stage, per data '
        'seed')
    parser.add_argument(
        '--data-seeds',
        type=int,
        default=1,
        help='generated datasets of the final stage')
    data = parser.add_argument_group(
        'dataset (generated: ADE20K layout; camvid: prepared by '
        '`mmseg-arb prepare camvid`)')
    data.add_argument(
        '--dataset',
        default='generated',
        choices=sorted(DATASETS),
        help='camvid: one real dataset (one data seed), '
        'tuned on val, reported on test')
    data.add_argument(
        '--data-root',
        help='generated: where to write it '
        '(default: WORK_DIR/data); camvid: the prepared '
        'folder (required)')
    data.add_argument('--data-mode', default='hard', choices=['easy', 'hard'])
    data.add_argument(
        '--num-classes',
        type=int,
        default=24,
        help='generated data only, as the options below')
    data.add_argument('--num-train', type=int, default=96)
    data.add_argument('--num-val', type=int, default=64)
    data.add_argument('--num-test', type=int, default=128)
    data.add_argument(
        '--size',
        type=int,
        nargs=2,
        default=[128, 128],
        metavar=('H', 'W'),
        help='image size')
    data.add_argument(
        '--rarest-share',
        type=float,
        default=1e-3,
        help='expected pixel share of the rarest class '
        '(tail steepness)')
    train = parser.add_argument_group('training')
    train.add_argument(
        '--config',
        help='cross-entropy config every run starts from '
        '(default: the demo\'s for generated data, the '
        'CPU-size CamVid config for camvid)')
    train.add_argument(
        '--iters', type=int, help='default: 300 (generated), 1000 (camvid)')
    train.add_argument(
        '--curve-interval',
        type=int,
        help='validation interval of the learning-curve '
        'rows (default: iters / 6)')
    train.add_argument(
        '--crop',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help="default: 64 64 (generated), the config's "
        '(camvid)')
    train.add_argument('--batch-size', type=int, default=8, help='per process')
    train.add_argument(
        '--checkpoint-interval',
        type=int,
        default=0,
        help='iterations between checkpoints (0: none; '
        'they let an interrupted long run resume; the last one of each run '
        'is kept, which ce-tta evaluates)')
    run = parser.add_argument_group('execution')
    run.add_argument(
        '--gpus-per-job',
        type=int,
        help='default: 1 when GPUs are visible (one job per '
        'GPU), else 0 (CPU)')
    run.add_argument(
        '--jobs',
        type=int,
        help='runs at once (default: one per CPU core, or all '
        'GPUs in groups of --gpus-per-job)')
    run.add_argument(
        '--threads-per-job',
        type=int,
        help='CPU threads of each run (default: cores / jobs)')
    run.add_argument(
        '--loader-workers',
        type=int,
        help='dataloader workers of each run (default: 0 on '
        'CPU, where they would compete with the other runs; '
        '2 on GPU)')
    run.add_argument(
        '--resume-from',
        metavar='JSON',
        help="an earlier call's loss_study.json (made with "
        'the same settings): its finished runs are not '
        'trained again, e.g. the published one on a fresh '
        'machine')
    run.add_argument(
        '--tuning-only',
        action='store_true',
        help='train the tuning stage only and print each family\'s '
        'chosen configuration, so that the choices can be committed before '
        'any final (test) run starts; the same command without it then '
        'runs the final stage')
    run.add_argument(
        '--registration',
        metavar='FILE',
        help='a pre-registered study\'s registration file (CamVid\'s: '
        'projects/loss_study/camvid/PREREGISTRATION.md): no final run '
        'starts unless the tuning stage is complete and the file, committed '
        'as it is, holds the table of chosen configurations that '
        '--tuning-only prints; the registering commit goes into the JSON '
        'and the report')
    run.add_argument(
        '--checks',
        action='store_true',
        help='CamVid: once the final stage is complete, train the '
        "registration's checks (item 7 of its rule) with seed 100: CE, the "
        'chosen ARB and ARB + weights under SGD; CE, the chosen ARB and the '
        "rule's recommended row at half of --iters (loss_study/checks.py); "
        "item 7 and the report's Checks section are computed from them")
    run.add_argument(
        '--retry-failed',
        action='store_true',
        help='train again the runs that failed before (and '
        'the CE runs whose checkpoint a failed ce-tta evaluation lacked)')
    run.add_argument(
        '--export', help='also copy the report, its JSON and '
        'plots here')
    run.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    defaults = DATASETS[args.dataset]
    for key in ('config', 'iters', 'crop'):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    if args.dataset == 'camvid' and not args.report_only:
        if not args.data_root:
            parser.error('--dataset camvid needs --data-root, the folder '
                         'that `mmseg-arb prepare camvid SRC DEST` wrote')
        if args.data_seeds != 1:
            parser.error('--dataset camvid has one data seed (one real '
                         'dataset): leave --data-seeds at 1')
    if 'ce' not in args.families:
        args.families = ['ce'] + args.families
    if args.checks:
        check_args(parser, args)
    if TEST_TIME_FAMILY in args.families and not args.checkpoint_interval \
            and not args.report_only:
        parser.error(f'--families {TEST_TIME_FAMILY} evaluates the last '
                     'checkpoint of each CE run: give --checkpoint-interval '
                     '(any value keeps the last one)')
    if min(args.tune_seeds, args.final_seeds, args.data_seeds) < 1:
        parser.error('--tune-seeds, --final-seeds and --data-seeds must be '
                     'at least 1')
    if args.curve_interval is None:
        args.curve_interval = max(1, args.iters // 6)
    return args


def check_args(parser: argparse.ArgumentParser,
               args: argparse.Namespace) -> None:
    """``--checks``: a parser error for what the registered checks cannot
    run with."""
    from projects.loss_study.loss_study.checks import BASELINE
    if args.report_only or args.tuning_only:
        parser.error('--checks trains runs after the final stage: leave out '
                     '--report-only and --tuning-only')
    if args.dataset != 'camvid':
        parser.error('--checks runs the CamVid registration\'s checks '
                     '(projects/loss_study/camvid/PREREGISTRATION.md): give '
                     '--dataset camvid')
    if BASELINE not in args.optimizers:
        parser.error(f'--checks trains {BASELINE}\'s final runs again: '
                     f'give --optimizers {BASELINE}')
    if {'arb', 'arb-weights'} - set(args.families):
        parser.error('--checks compares CE with the chosen ARB and ARB + '
                     'weights: give --families with arb and arb-weights')
    if args.iters < 2 or args.iters % 2:
        parser.error(f'--checks trains half of --iters ({args.iters}): give '
                     'an even number of iterations')


def gpus_per_job(args: argparse.Namespace) -> int:
    """GPUs of one run: as given, else one per run where GPUs are visible."""
    if args.gpus_per_job is not None:
        return args.gpus_per_job
    import torch
    return 1 if torch.cuda.is_available() else 0


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(
        os, 'sched_getaffinity') else (os.cpu_count() or 1)


def python_path() -> str:
    """The runs' ``PYTHONPATH``: the repository root first (their configs
    import ``projects.loss_study.loss_study``, and this checkout's
    ``mmseg_arb``), then the caller's."""
    return os.pathsep.join(
        [ROOT] +
        [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])


def make_slots(args: argparse.Namespace) -> List[Slot]:
    """One slot per run that may execute at once: CPU threads, or a group of
    GPUs (torchrun for more than one)."""
    per_job = gpus_per_job(args)
    if per_job == 0:
        jobs = args.jobs or cpu_cores()
        threads = str(args.threads_per_job or max(1, cpu_cores() // jobs))
        env = dict(
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
            CUDA_VISIBLE_DEVICES='',
            PYTHONPATH=python_path())
        return [Slot(env, [sys.executable]) for _ in range(jobs)]
    import torch

    # Indices as this process sees them, mapped back through its own
    # CUDA_VISIBLE_DEVICES: a run's setting replaces the study's.
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    gpus = [str(i) for i in range(torch.cuda.device_count())]
    if visible:
        gpus = [g.strip() for g in visible.split(',')][:len(gpus)]
    groups = len(gpus) // per_job
    if groups == 0:
        raise SystemExit(f'--gpus-per-job {per_job}: only '
                         f'{len(gpus)} GPUs visible')
    slots = []
    for i in range(min(args.jobs or groups, groups)):
        ids = gpus[i * per_job:(i + 1) * per_job]
        env = dict(
            CUDA_VISIBLE_DEVICES=','.join(ids), PYTHONPATH=python_path())
        if len(ids) == 1:
            slots.append(Slot(env, [sys.executable]))
        else:
            slots.append(
                Slot(
                    env, [
                        sys.executable, '-m', 'torch.distributed.run',
                        f'--nproc_per_node={len(ids)}',
                        f'--master_port={29500 + 17 * i}'
                    ],
                    distributed=True))
    return slots


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


def base_config(args: argparse.Namespace, cfg, data_root: str, stats: str,
                optimizer: str):
    """The cross-entropy config every run starts from, on one data seed's
    data, the study's schedule and ``optimizer`` (``cfg``, with its classes
    set, is changed in place). The test loader reads the test split."""
    use_dataset(cfg, data_root, stats)
    set_iterations(cfg, args.iters)
    cfg.optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(OPTIMIZERS[optimizer][0]),
        clip_grad=None)
    cfg.param_scheduler = [
        dict(
            type='PolyLR',
            power=0.9,
            begin=0,
            end=args.iters,
            by_epoch=False,
            eta_min=OPTIMIZERS[optimizer][1])
    ]
    cfg.default_hooks.logger.interval = max(1, args.iters // 20)
    if args.checkpoint_interval:  # the last one is all a resume needs
        cfg.default_hooks.checkpoint.update(
            interval=args.checkpoint_interval, max_keep_ckpts=1)
    else:
        cfg.default_hooks.checkpoint.update(interval=-1, save_last=False)
    if args.dataset == 'generated':
        # Resizes keep the generated images at their size (mmseg's (long
        # side, short side) scale, as the demo's (512, 128) for 128x128
        # images): the config's own scales are meant for its own data.
        scale = (4 * max(args.size), min(args.size))
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader'):
            for t in cfg[loader].dataset.pipeline:
                if t.type in ('Resize', 'RandomResize'):
                    t.scale = scale
    if args.crop:
        set_crop(cfg, tuple(args.crop), args.config)
    cfg.train_dataloader.batch_size = args.batch_size
    test = cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    test.dataset.data_prefix = dict(img_path='images/test',
                                    seg_map_path='annotations/test') \
        if args.dataset == 'generated' else dict(img_path='img_dir/test',
                                                 seg_map_path='ann_dir/test')
    workers = loader_workers(args)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].num_workers = workers
        cfg[loader].persistent_workers = workers > 0
    return cfg


def set_crop(cfg, crop: Tuple[int, int], config: str) -> None:
    """Train on ``crop``-sized crops (the pipeline's and the
    preprocessor's)."""
    cfg.model.data_preprocessor.size = crop
    crops = [
        t for t in cfg.train_dataloader.dataset.pipeline
        if t.type == 'RandomCrop'
    ]
    if not crops:
        raise SystemExit(f'{config}: no RandomCrop to set --crop in')
    for t in crops:
        t.crop_size = crop


def loader_workers(args: argparse.Namespace) -> int:
    if args.loader_workers is not None:
        return args.loader_workers
    return 2 if gpus_per_job(args) else 0


def check_settings(work_dir: str, settings: Dict) -> None:
    path = osp.join(work_dir, 'study.json')
    if osp.exists(path):
        with open(path) as f:
            before = json.load(f)
        changed = _changed(before, settings)
        if changed:
            raise SystemExit(
                f'{work_dir} holds runs made with other settings '
                f'({", ".join(changed)} differ); give another --work-dir')
        return
    os.makedirs(work_dir, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(settings, f, indent=1)


def _changed(before: Dict, settings: Dict) -> List[str]:
    return sorted(
        k for k in set(before) | set(settings)
        if before.get(k) != settings.get(k))


def machine() -> Dict:
    import mmcv
    import mmengine
    import mmseg
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(
                line.split(':', 1)[1].strip() for line in f
                if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    info = dict(
        cpu=cpu,
        cores=cpu_cores(),
        python=platform.python_version(),
        torch=torch.__version__,
        mmcv=mmcv.__version__,
        mmengine=mmengine.__version__,
        mmseg=mmseg.__version__)
    if torch.cuda.is_available():
        info['gpus'] = [
            torch.cuda.get_device_name(i)
            for i in range(torch.cuda.device_count())
        ]
    return info


def load_average() -> List[float]:
    return [round(x, 2) for x in os.getloadavg()]


def dataset_spec(args: argparse.Namespace, data_seed: int):
    from mmseg_arb.datasets import SyntheticSpec
    return SyntheticSpec(
        layout='ade20k',
        num_classes=args.num_classes,
        num_train=args.num_train,
        num_val=args.num_val,
        num_test=args.num_test,
        height=args.size[0],
        width=args.size[1],
        rarest_share=args.rarest_share,
        seed=data_seed,
        mode=args.data_mode)


def study_settings(args: argparse.Namespace) -> Dict:
    """What every run depends on: runs made with other settings cannot be
    mixed into one table."""
    config = osp.abspath(args.config)
    if config.startswith(ROOT + os.sep):  # the same in every checkout
        config = osp.relpath(config, ROOT)
    return dict(
        config=config,
        optimizers={
            k: list(v)
            for k, v in OPTIMIZERS.items()
        },
        dataset=asdict(dataset_spec(args, 0))
        if args.dataset == 'generated' else camvid_identity(args),
        iters=args.iters,
        curve_interval=args.curve_interval,
        crop=list(args.crop) if args.crop else None,
        batch_size=args.batch_size,
        gpus_per_job=gpus_per_job(args),
        loader_workers=loader_workers(args))


def camvid_meta(data_root: str) -> Dict:
    """What ``mmseg-arb prepare camvid`` recorded in ``data_root``
    (``camvid_prepared.json``); a clear error if it is not there."""
    path = osp.join(data_root, 'camvid_prepared.json')
    if not osp.isfile(path):
        raise SystemExit(
            f'--data-root {data_root}: no camvid_prepared.json; prepare '
            'CamVid first: mmseg-arb prepare camvid SRC DEST --scale 0.5 '
            '(docs/datasets.md#camvid)')
    with open(path) as f:
        meta = json.load(f)
    if not meta.get('complete'):
        raise SystemExit(f'--data-root {data_root}: an interrupted '
                         '`mmseg-arb prepare camvid`; run it again')
    return meta


def camvid_identity(args: argparse.Namespace) -> Dict:
    """The prepared CamVid as the study's settings name it: scale, size and
    pixel counts per split, not its path (a study resumed on another
    machine reads the same data from elsewhere)."""
    meta = camvid_meta(osp.abspath(args.data_root))
    return dict(
        name='camvid',
        scale=meta['scale'],
        size=meta['size'],
        images=meta['images'],
        pixel_counts=meta['pixel_counts'])


def protocol(args: argparse.Namespace) -> Dict:
    return dict(
        iters=args.iters,
        curve_interval=args.curve_interval,
        optimizers=list(args.optimizers),
        tune_seeds=list(range(args.tune_seeds)),
        final_seeds=[FINAL_SEED_OFFSET + s for s in range(args.final_seeds)],
        data_seeds=list(range(args.data_seeds)))


def planned_runs(args: argparse.Namespace, families: List) -> Dict[str, int]:
    """How many runs each stage trains at most and, where ``ce-tta`` is
    among the families, how many evaluations of CE checkpoints
    (``evaluate``: its grid at the tuning seeds, its chosen ``tau`` at the
    final ones); ``tune`` then counts CE at the tuning seeds."""
    trained = [f for f in families if f.key != TEST_TIME_FAMILY]
    tuned = sum(len(f.losses) for f in trained if len(f.losses) > 1)
    opts = len(args.optimizers)
    sizes = dict(
        tune=opts * tuned * args.tune_seeds,
        final=opts * len(trained) * args.final_seeds * args.data_seeds)
    for f in families:
        if f.key == TEST_TIME_FAMILY:
            sizes['tune'] += opts * args.tune_seeds  # CE at the tuning seeds
            sizes['evaluate'] = opts * (
                len(f.losses) * args.tune_seeds +
                args.final_seeds * args.data_seeds)
    return sizes


def write_run(base,
              loss,
              run_dir: str,
              seed: int,
              test: bool,
              val_interval: Optional[int],
              load_from: Optional[str] = None,
              options: Optional[Dict] = None) -> str:
    """Write the config of one run (or, with ``load_from``, of the
    evaluation of that checkpoint) into its folder and return its path;
    ``options`` (a check's, ``loss_study.checks.overrides``) are merged
    last, as ``tools/train.py --cfg-options`` merges them."""
    from projects.loss_study.loss_study.matrix import add_imports, apply_loss
    cfg = apply_loss(base, loss)
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = run_dir
    if load_from:
        cfg.load_from = load_from
    if test:
        cfg.custom_hooks = list(cfg.get('custom_hooks')
                                or []) + [dict(type='TestAfterTrainHook')]
        add_imports(cfg, ['projects.loss_study.loss_study.hooks'])
    if val_interval:
        cfg.train_cfg.val_interval = val_interval
    if options:
        cfg.merge_from_dict(options)
    os.makedirs(run_dir, exist_ok=True)
    config = osp.join(run_dir, 'config.py')
    cfg.dump(config)
    return config


def prepare_work_dir(args: argparse.Namespace, work_dir: str,
                     settings: Dict) -> Optional[Dict]:
    """Refuse a ``--resume-from`` JSON or a work dir made with other
    settings, or a call whose protocol or families would leave out runs of
    the study so far (both before the work dir is touched); take back the
    JSON's finished runs, and forget failed runs under ``--retry-failed``
    (failed tuning runs only while no final run exists: the choices may be
    registered), and the CE runs whose checkpoint a failed ``ce-tta``
    evaluation lacked (they are trained again). Returns the study so far
    (the ``--resume-from`` JSON, else the work dir's), if any."""
    earlier = read_earlier(args.resume_from, settings) \
        if args.resume_from else None
    before = earlier or read_study(work_dir)
    if before is not None:
        check_protocol(args, before)
    check_settings(work_dir, settings)
    if earlier is not None:
        restored = restore_runs(earlier, work_dir)
        print(f'{restored} finished runs taken from {args.resume_from}')
    if args.retry_failed:
        runs = osp.join(work_dir, 'runs')
        finals = any(k.startswith('final/') for k in _finished_keys(work_dir))
        for path in _failed_results(work_dir):
            if finals and osp.relpath(path, runs).startswith('tune' + os.sep):
                print(f'{osp.relpath(osp.dirname(path), runs)} failed and '
                      'is not trained again: the final stage has started '
                      'from the tuning stage as it is')
                continue
            os.remove(path)
            ce = _ce_key(osp.relpath(osp.dirname(path), runs))
            if ce is None or osp.isfile(
                    ce_checkpoint(work_dir, ce, run_iters(ce, args.iters))):
                continue
            result = read_result(osp.join(runs, ce))
            if result is not None and result['status'] == 'ok':
                # mmengine's pointer to the checkpoint that is gone would
                # make --resume look for it.
                for name in ('result.json', 'last_checkpoint'):
                    if osp.exists(osp.join(runs, ce, name)):
                        os.remove(osp.join(runs, ce, name))
                print(f'{ce} is trained again: its checkpoint, which '
                      f'{TEST_TIME_FAMILY} evaluates, is gone')
    return before


def read_study(work_dir: str) -> Optional[Dict]:
    """The work dir's ``loss_study.json`` from an earlier call, if any."""
    return read_json(osp.join(work_dir, STUDY_JSON))


def check_protocol(args: argparse.Namespace, before: Dict) -> None:
    """Refuse a call that would publish the study without some of its
    runs: other seeds or optimisers than the study so far, or fewer
    families (a call may add families, as ``ce-tta`` was added)."""
    changed = [
        k for k, v in protocol(args).items()
        if k in before.get('protocol', {}) and before['protocol'][k] != v
    ]
    dropped = [
        f['key'] for f in before.get('families', [])
        if f['key'] not in args.families
    ]
    if changed or dropped:
        what = ([f'{", ".join(changed)} differ'] if changed else []) + (
            [f'--families leaves out {" ".join(dropped)}'] if dropped else [])
        raise SystemExit(
            f'this call would rewrite the study without some of its runs '
            f'({"; ".join(what)}): give the arguments of the study so far '
            f'(its loss_study.json, "protocol" and "families"), or another '
            '--work-dir for another study')


def run_iters(key: str, iters: int) -> int:
    """The training iterations of the run ``key`` (a half-schedule check's
    are half the study's)."""
    from projects.loss_study.loss_study.checks import iterations
    stage, kind = key.split('/')[:2]
    return iterations(kind, iters) if stage == 'check' else iters


def ce_checkpoint(work_dir: str, ce_key: str, iters: int) -> str:
    """The last checkpoint of the CE run ``ce_key``, which ``ce-tta``
    evaluates (``--checkpoint-interval`` keeps it)."""
    return osp.join(work_dir, 'runs', ce_key, f'iter_{iters}.pth')


def missing_checkpoint(work_dir: str, ce_key: str,
                       iters: int) -> Optional[str]:
    """Why the finished CE run ``ce_key`` has no checkpoint for ``ce-tta``
    to evaluate, and the fix; None if it has one."""
    path = ce_checkpoint(work_dir, ce_key, iters)
    if osp.isfile(path):
        return None
    fix = (f'--retry-failed trains {ce_key} again (its new result replaces '
           'the old one in every comparison: ce-tta is paired with CE on '
           'the checkpoint it evaluates) and then evaluates it' +
           (' (with --checks)' if ce_key.startswith('check/') else ''))
    result = read_result(osp.dirname(path))
    if result is not None and result['status'] != 'ok':
        return f'{ce_key} failed, no checkpoint to evaluate; {fix}'
    return (f'no checkpoint {path}: {ce_key} finished without it (in a work '
            'dir that is gone, or without --checkpoint-interval); ' + fix)


def _ce_key(evaluation_key: str) -> Optional[str]:
    """The CE run that a ``ce-tta`` evaluation evaluates; None for other
    runs."""
    stage, opt, loss, seeds = evaluation_key.split('/')
    if not loss.startswith(TEST_TIME_FAMILY + '-'):
        return None
    return '/'.join((stage, opt, 'ce', seeds))


@dataclass
class DataSeed:
    """What the runs of one data seed start from.

    Args:
        root: Its dataset.
        families: The study's families, class weights from its own
            training counts.
        bases: The cross-entropy config of each optimiser.
    """
    root: str
    families: List
    bases: Dict


def prepare_data(args: argparse.Namespace,
                 work_dir: str) -> Dict[int, DataSeed]:
    """Generate the dataset of every data seed (kept if there already) and
    its class statistics; their families and base configs."""
    from mmseg_arb.cli.launch import load_config
    from mmseg_arb.datasets import prepare_synthetic
    from mmseg_arb.utils import load_class_counts
    from projects.loss_study.loss_study.matrix import study_families
    data_base = osp.abspath(args.data_root or osp.join(work_dir, 'data'))
    taus = DATASETS[args.dataset]['weight_taus']
    if args.dataset == 'camvid':
        camvid_meta(data_base)
        stats = osp.join(data_base, 'class_stats_train.json')
        counts = load_class_counts(stats).tolist()
        families = [
            f for f in study_families(counts, stats, taus)
            if f.key in args.families
        ]
        bases = {
            o: base_config(args, load_config(args.config), data_base, stats, o)
            for o in args.optimizers
        }
        return {0: DataSeed(data_base, families, bases)}
    plan = {}
    for d in range(args.data_seeds):
        root = osp.join(data_base, f'seed{d}')
        cfg = load_config(args.config)
        set_num_classes(cfg, args.num_classes)
        stats = prepare_synthetic(
            root,
            dataset_spec(args, d),
            cfg.train_dataloader.dataset,
            workers=cpu_cores(),
            progress=not args.no_progress)
        counts = load_class_counts(stats).tolist()
        families = [
            f for f in study_families(counts, stats, taus)
            if f.key in args.families
        ]
        bases = {
            o: base_config(args, copy.deepcopy(cfg), root, stats, o)
            for o in args.optimizers
        }
        plan[d] = DataSeed(root, families, bases)
    return plan


def new_study(args: argparse.Namespace, settings: Dict,
              plan: Dict[int, DataSeed], code: Dict) -> Dict:
    """The study JSON before its runs: protocol, settings, machine, code,
    planned sizes, the data of data seed 0 and the families."""
    first = plan[0]
    with open(osp.join(first.root, 'class_stats_train.json')) as f:
        class_names = json.load(f)['class_names']
    if args.dataset == 'camvid':
        counts = camvid_meta(first.root)['pixel_counts']
        data = dict(
            name='CamVid',
            class_names=class_names,
            train_counts=counts['train'],
            split_counts=counts)
    else:
        with open(osp.join(first.root, 'synthetic_meta.json')) as f:
            meta = json.load(f)
        data = dict(
            class_names=class_names,
            train_counts=meta['pixel_counts']['train'],
            instance_counts=meta['instance_counts'],
            twins=meta['twins'])
    return dict(
        protocol=protocol(args),
        settings=settings,
        machine=machine(),
        code=code,
        planned=planned_runs(args, first.families),
        data=data,
        families=[
            dict(
                key=f.key,
                name=f.name,
                grid=f.grid,
                losses=[
                    dict(key=l.key, name=l.name, shown=l.shown, note=l.note)
                    for l in f.losses
                ]) for f in first.families
        ],
        runs={})


class StudyCall:
    """One call of the study: its runs (each run's config written into its
    folder when planned), the final runs of each family as soon as its
    tuning is complete, the evaluations of ``ce-tta`` as soon as their CE
    run has finished, with ``--checks`` the registered checks as soon as the
    final stage is complete, and the JSON and report saved after every run.

    Args:
        args: The command line.
        work_dir: The runs' folders, the JSON and the report.
        study: The study JSON (:func:`new_study`); its runs are filled in
            as they finish.
        plan: Per data seed, what its runs start from.
        started: When the call started (``time.time()``).
        load_before: The machine's load average then.
    """

    def __init__(self, args: argparse.Namespace, work_dir: str, study: Dict,
                 plan: Dict[int, DataSeed], started: float,
                 load_before: List[float]) -> None:
        self.args, self.work_dir, self.study = args, work_dir, study
        self.plan, self.started = plan, started
        self.losses = {
            d: {
                l.key: l
                for f in p.families
                for l in f.losses
            }
            for d, p in plan.items()
        }
        self.family_of = {
            l.key: f.key
            for f in plan[0].families
            for l in f.losses
        }
        self.known: Dict[str, str] = {}  # run key to folder, planned runs
        self.scheduled = set()  # (optimiser, family) with final runs
        self.checks_scheduled = False
        # ce-tta evaluations waiting for their CE run: (stage, optimiser,
        # configuration key, data seed, seed).
        self.waiting: List[Tuple[str, str, str, int, int]] = []
        self.done_before = set(_finished_keys(work_dir))
        self.call = dict(
            command=command_line(),
            started=time.strftime('%Y-%m-%d %H:%M:%S'),
            machine=machine_line(study['machine']),
            load_before=load_before,
            code=study['code'].get('git_commit'))

    def setting(self, stage: str, opt: str) -> Tuple[str, Optional[Dict]]:
        """The optimiser of the base config of a run of ``stage`` and
        ``opt``, and the ``--cfg-options`` merged into it: a check (stage
        ``check``, ``opt`` its kind) is the final stage's AdamW run with its
        registered overrides (``loss_study.checks``)."""
        if stage != 'check':
            return opt, None
        from projects.loss_study.loss_study.checks import BASELINE, overrides
        return BASELINE, overrides(opt, self.args.iters,
                                   bool(self.args.checkpoint_interval))

    def run(self, stage: str, opt: str, key: str, data_seed: int,
            seed: int) -> Run:
        """One run; its config is written unless it has finished."""
        from projects.loss_study.loss_study.report import run_key
        rkey = run_key(stage, opt, key, data_seed, seed)
        run_dir = self.known[rkey] = osp.join(self.work_dir, 'runs', rkey)
        config = osp.join(run_dir, 'config.py')
        if read_result(run_dir) is None:  # finished runs stay as they are
            curve = stage != 'tune' and self.family_of[key] in (
                'ce', 'arb', 'class-weights')
            base, options = self.setting(stage, opt)
            write_run(
                self.plan[data_seed].bases[base],
                self.losses[data_seed][key],
                run_dir,
                seed,
                test=stage != 'tune',
                val_interval=self.args.curve_interval if curve else None,
                options=options)
        return Run(rkey, key, seed, run_dir,
                   [TRAIN, config, '--work-dir', run_dir, '--resume'],
                   run_iters(rkey, self.args.iters))

    def finals(self, opt: str, key: str) -> List[Run]:
        """The final-stage runs of one configuration."""
        proto = self.study['protocol']
        return [
            self.run('final', opt, key, d, s) for d in proto['data_seeds']
            for s in proto['final_seeds']
        ]

    def evaluation(self, stage: str, opt: str, key: str, data_seed: int,
                   seed: int) -> Run:
        """The evaluation of CE's run of the same stage, optimiser (or
        check) and seeds with the test-time configuration ``key``
        (``ce-tta``), on validation and, outside the tuning stage, test.
        Its config (CE's, with the hook and ``load_from`` CE's last
        checkpoint) is written unless it has finished; where that
        checkpoint cannot exist (CE failed) or is gone, a failed result
        that says why and how to fix it."""
        from projects.loss_study.loss_study.report import run_key
        rkey = run_key(stage, opt, key, data_seed, seed)
        ce_key = run_key(stage, opt, 'ce', data_seed, seed)
        run_dir = self.known[rkey] = osp.join(self.work_dir, 'runs', rkey)
        config = osp.join(run_dir, 'config.py')
        iters = run_iters(ce_key, self.args.iters)
        if read_result(run_dir) is None:
            error = missing_checkpoint(self.work_dir, ce_key, iters)
            if error is None:
                from projects.loss_study.loss_study.matrix import apply_loss
                ce = self.losses[data_seed]['ce']  # the config CE trained
                base, options = self.setting(stage, opt)
                write_run(
                    apply_loss(self.plan[data_seed].bases[base], ce),
                    self.losses[data_seed][key],
                    run_dir,
                    seed,
                    test=False,
                    val_interval=None,
                    load_from=ce_checkpoint(self.work_dir, ce_key, iters),
                    options=options)
            else:
                write_result(
                    run_dir,
                    dict(
                        loss=key,
                        seed=seed,
                        seconds=0.0,
                        status='failed',
                        error=error,
                        where=None))
                from tqdm import tqdm
                tqdm.write(f'{rkey}: FAILED: {error}')
        return Run(
            rkey, key, seed, run_dir,
            EVALUATE + [config] + (['--test'] if stage != 'tune' else []), 0)

    def first_runs(self) -> List[Run]:
        """The tuning stage, seed-major (an interrupted tuning stage has
        whole seeds; CE first where ``ce-tta`` evaluates it), then
        cross-entropy's final runs (it is not tuned). ``ce-tta``'s tuning
        evaluations wait for their CE runs."""
        opts = self.args.optimizers
        seeds = self.study['protocol']['tune_seeds']
        families = self.plan[0].families
        tta = [f for f in families if f.key == TEST_TIME_FAMILY]
        trained = [
            f for f in families if f.key != TEST_TIME_FAMILY and (
                len(f.losses) > 1 or f.key == 'ce' and tta)
        ]
        tuning = [
            self.run('tune', o, l.key, 0, s) for s in seeds for o in opts
            for f in trained for l in f.losses
        ]
        self.waiting += [('tune', o, l.key, 0, s) for s in seeds for o in opts
                         for f in tta for l in f.losses]
        if self.args.tuning_only:
            return tuning
        return tuning + [r for o in opts for r in self.finals(o, 'ce')
                         ] + self.finished_checks()

    def finished_checks(self) -> List[Run]:
        """The check runs that finished before (``--checks`` in an earlier
        call), so that a call without ``--checks`` keeps them in the JSON;
        none is started."""
        runs = []
        for key in _finished_keys(self.work_dir):
            if key.startswith('check/'):
                run_dir = self.known[key] = osp.join(self.work_dir, 'runs',
                                                     key)
                result = read_result(run_dir)
                runs.append(
                    Run(key,
                        key.split('/')[2], result.get('seed', 0), run_dir, [],
                        0))
        return runs

    def after_each_run(self, results: Dict[str, Dict]) -> List[Run]:
        """Saves the study and returns the final runs of every family
        whose tuning is now complete, the ``ce-tta`` evaluations whose CE
        run has finished (ok or not) and, with ``--checks``, the check runs
        once the final stage is complete. A run returned here that
        finished before counts at once: a choice of ``tau``, the final
        stage's completion or an evaluation may follow."""
        from projects.loss_study.loss_study.report import run_key
        runs = self.study['runs'] = dict(results)
        new: List[Run] = []
        while True:
            fresh = self.schedule_finals() + self.schedule_checks()
            ready = [
                w for w in self.waiting
                if run_key(w[0], w[1], 'ce', w[3], w[4]) in runs
            ]
            self.waiting = [w for w in self.waiting if w not in ready]
            fresh += [self.evaluation(*waited) for waited in ready]
            if not fresh:
                break
            for run in fresh:
                done = read_result(run.run_dir)
                if done is not None:
                    runs[run.key] = done
            new += fresh
        self.save()
        return new

    def schedule_checks(self) -> List[Run]:
        """With ``--checks``, once the final stage is complete in the
        study's runs: the check runs (``loss_study.checks``), from the final
        stage's first seed; a ``ce-tta`` configuration joins the waiting
        evaluations (of ``check/half/ce``)."""
        if not self.args.checks or self.checks_scheduled:
            return []
        from projects.loss_study.loss_study.checks import (BASELINE,
                                                           configurations)
        from projects.loss_study.loss_study.report import analyse
        from projects.loss_study.loss_study.rule import (apply_rule,
                                                         missing_runs)
        analysis = analyse(self.study)[BASELINE]
        if missing_runs(analysis):
            return []
        self.checks_scheduled = True
        outcome = apply_rule(analysis, self.study['data'].get('name'))
        proto = self.study['protocol']
        seeds = (proto['data_seeds'][0], proto['final_seeds'][0])
        new = []
        for kind, keys in configurations(analysis['chosen'],
                                         outcome['recommended']).items():
            for key in keys:
                if self.family_of[key] == TEST_TIME_FAMILY:
                    self.waiting.append(('check', kind, key, *seeds))
                else:
                    new.append(self.run('check', kind, key, *seeds))
        return new

    def schedule_finals(self) -> List[Run]:
        """The final runs of every family whose tuning is complete in the
        study's runs (``ce-tta``'s evaluations join the waiting ones)."""
        from projects.loss_study.loss_study.report import choose
        proto = self.study['protocol']
        new = []
        for opt in [] if self.args.tuning_only else self.args.optimizers:
            for fam in self.study['families']:
                if (opt, fam['key']) in self.scheduled:
                    continue
                key = choose(self.study, opt, fam)
                if key is None:
                    continue
                self.scheduled.add((opt, fam['key']))
                if key and fam['key'] == TEST_TIME_FAMILY:
                    self.waiting += [('final', opt, key, d, s)
                                     for d in proto['data_seeds']
                                     for s in proto['final_seeds']]
                elif key:
                    new += self.finals(opt, key)
        return new

    def finished(self) -> Dict[str, Dict]:
        """The results of the planned runs, read back from their folders (a
        run that ended just before an interrupt is in no saved copy yet)."""
        results = {k: read_result(d) for k, d in self.known.items()}
        return {k: r for k, r in results.items() if r is not None}

    def save(self) -> None:
        """The study so far, its JSON and report, to the work dir and
        ``--export``: after every run, so that what finished outlives an
        interrupted or killed call and a lost work dir (``--resume-from``
        takes it back), and the published pair always matches. The study
        is ``complete`` once every planned run of its stages has finished
        (ok or failed), whichever call finished it."""
        from projects.loss_study.loss_study.report import STAGES, render
        study = self.study
        self.call.update(
            wall_seconds=round(time.time() - self.started, 1),
            runs_trained=len(set(study['runs']) - self.done_before),
            load_after=load_average(),
            finished=time.strftime('%Y-%m-%d %H:%M'))
        study['calls'] = record_call(self.work_dir, self.call)
        stage_runs = [k for k in study['runs'] if k.split('/')[0] in STAGES]
        study['complete'] = len(stage_runs) >= sum(study['planned'].values())
        study['runs'] = dict(sorted(study['runs'].items()))
        files = {
            STUDY_JSON: json.dumps(study, indent=1),
            REPORT: render(study)
        }
        export = osp.abspath(self.args.export or self.work_dir)
        for folder in {self.work_dir, export}:
            os.makedirs(folder, exist_ok=True)
            for name, text in files.items():
                write_atomic(osp.join(folder, name), text)


def train(call: StudyCall) -> None:
    """Train the call's runs, as many at once as there are slots, and write
    the report; interrupted, save what finished and say how to resume."""
    from projects.loss_study.loss_study.jobs import run_all
    args, study = call.args, call.study
    slots = make_slots(args)
    sizes = study['planned']
    evaluations = (f", {sizes['evaluate']} evaluations of CE checkpoints"
                   if 'evaluate' in sizes else '')
    checks = (', then the registered checks (seed '
              f"{study['protocol']['final_seeds'][0]}: 3 SGD runs, up to 3 "
              'at half the iterations)' if args.checks else '')
    print(f"{sizes['tune']} tuning and {sizes['final']} final runs"
          f"{evaluations}{checks}, {len(slots)} at a time "
          f"({', '.join(sorted({str(s.env) for s in slots}))})")
    try:
        results, _ = run_all(
            call.first_runs(),
            slots,
            call.after_each_run,
            progress=not args.no_progress)
    except BaseException as exc:
        from projects.loss_study.loss_study.report import stage_runs
        study['runs'] = call.finished()
        call.save()
        write_report(study, call.work_dir, args.export)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            checks = len(study['runs']) - len(stage_runs(study['runs']))
            raise SystemExit(
                'interrupted: the same command resumes the study; '
                f'{len(stage_runs(study["runs"]))} of {sum(sizes.values())} '
                'runs finished' +
                (f', and {checks} check runs' if checks else '')) from None
        raise
    study['runs'] = results
    call.save()
    write_report(study, call.work_dir, args.export)
    if args.tuning_only:
        print_choices(study)


def print_choices(study: Dict) -> None:
    """Each tuned family's chosen configuration by the selection rule, as
    the table a registration commits (``loss_study.registration``)."""
    from projects.loss_study.loss_study.registration import (choices_table,
                                                             chosen,
                                                             tuned_families)
    print('tuning stage: the chosen configurations (the selection rule)')
    print(choices_table(study))
    waiting = [(o, f['key']) for o in study['protocol']['optimizers']
               for f in tuned_families(study)
               if (o, f['key']) not in chosen(study)]
    if waiting:
        print('tuning not finished: ' + ', '.join(f'{o} {f}'
                                                  for o, f in waiting))


def registration_gate(study: Dict, work_dir: str, registration: str) -> None:
    """``--registration``: before any final-stage run, the tuning stage
    finished in ``work_dir`` and its choices committed in ``registration``
    (else exit, saying what to do). The registering commit (the first
    that registered these choices, the same for every call that resumes
    the final stage) goes into the study JSON, which the report cites."""
    from projects.loss_study.loss_study.registration import (RegistrationError,
                                                             check_registered)
    runs = osp.join(work_dir, 'runs')
    study['runs'] = {
        key: read_result(osp.join(runs, key))
        for key in _finished_keys(work_dir)
    }
    try:
        found = check_registered(study, registration)
    except RegistrationError as e:
        raise SystemExit(f'not starting the final stage: {e}') from None
    study['registration'] = found
    print(f"chosen configurations registered in {found['file']}, commit "
          f"{found['commit'][:7]} ({found['date']})")


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.report_only:
        path = osp.join(args.report_only, STUDY_JSON)
        with open(path) as f:
            study = json.load(f)
        write_report(study, args.report_only, args.export)
        return

    from mmseg_arb.cli.quiet_warnings import ignore_pkg_resources_deprecation
    ignore_pkg_resources_deprecation()
    import mmseg_arb  # noqa: F401
    from mmseg_arb.results.runs import code_version

    started, load_before = time.time(), load_average()
    code = code_version()
    work_dir = osp.abspath(args.work_dir)
    settings = study_settings(args)
    before = prepare_work_dir(args, work_dir, settings)
    plan = prepare_data(args, work_dir)
    study = new_study(args, settings, plan, code)
    if before is not None and before.get('registration'):
        study['registration'] = before['registration']
    if args.registration and not args.tuning_only:
        registration_gate(study, work_dir, args.registration)
    train(StudyCall(args, work_dir, study, plan, started, load_before))


def write_report(study: Dict, folder: str, export: Optional[str]) -> None:
    """``loss_study.md`` and the plots in ``folder`` from ``study`` (the
    JSON) alone; copied with the JSON to ``export`` if given."""
    from projects.loss_study.loss_study.report import render, write_plots
    text = render(study)
    with open(osp.join(folder, REPORT), 'w') as f:
        f.write(text)
    plots = write_plots(study, folder)
    print('\n' + text)
    print(f"wrote {REPORT} and {', '.join(plots)} in {folder}")
    if export:
        os.makedirs(export, exist_ok=True)
        for name in [REPORT, STUDY_JSON] + plots:
            source = osp.join(folder, name)
            if osp.abspath(source) != osp.abspath(osp.join(export, name)):
                shutil.copy(source, export)
        print(f'copied them to {export}')


def command_line() -> str:
    return 'python projects/loss_study/tools/loss_study.py ' + ' '.join(
        shlex.quote(a) for a in sys.argv[1:])


def machine_line(info: Dict) -> str:
    gpus = info.get('gpus')
    return f"{info.get('cpu')}, {info.get('cores')} cores" + (
        f"; {', '.join(gpus)}" if gpus else '')


def _call_id(call: Dict) -> Tuple[str, str]:
    return call.get('started') or call.get('finished'), call['command']


def record_call(work_dir: str, call: Dict) -> List[Dict]:
    """The study's calls that trained runs (a resumed study took all of
    them), with ``call`` (this one, updated as it goes) if it trained any;
    written to ``calls.json`` at once, so a killed call keeps its time."""
    calls = [c for c in _read_calls(work_dir) if _call_id(c) != _call_id(call)]
    if call['runs_trained']:
        calls.append(dict(call))
    _write_calls(work_dir, calls)
    return calls


def _read_calls(work_dir: str) -> List[Dict]:
    path = osp.join(work_dir, CALLS_JSON)
    if not osp.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def _write_calls(work_dir: str, calls: List[Dict]) -> None:
    write_atomic(osp.join(work_dir, CALLS_JSON), json.dumps(calls, indent=1))


def read_earlier(source: str, settings: Dict) -> Dict:
    """The ``loss_study.json`` of ``--resume-from``, refused (before the
    work dir is touched) if it is missing or was made with other
    settings."""
    if not osp.isfile(source):
        raise SystemExit(f'--resume-from {source}: no such file')
    with open(source) as f:
        earlier = json.load(f)
    changed = _changed(earlier.get('settings', {}), settings)
    if changed:
        raise SystemExit(
            f'{source} was made with other settings ({", ".join(changed)} '
            'differ): runs made with other settings, devices included, '
            'cannot be mixed into one table')
    return earlier


def restore_runs(earlier: Dict, work_dir: str) -> int:
    """Writes the finished runs of an earlier call's study JSON (the
    published one, say, on a fresh machine) that ``work_dir`` lacks back to
    their folders, and adds its calls, so that this call trains only the
    rest. Returns how many runs it wrote."""
    written = 0
    for key, result in earlier['runs'].items():
        run_dir = osp.join(work_dir, 'runs', key)
        if read_result(run_dir) is None:
            write_result(run_dir, result)
            written += 1
    calls = _read_calls(work_dir)
    ids = {_call_id(c) for c in calls}
    calls += [c for c in earlier.get('calls', []) if _call_id(c) not in ids]
    calls.sort(key=lambda c: c.get('started') or c['finished'])
    _write_calls(work_dir, calls)
    return written


def _result_files(work_dir: str) -> List[str]:
    import glob
    return glob.glob(
        osp.join(work_dir, 'runs', '**', 'result.json'), recursive=True)


def _finished_keys(work_dir: str) -> List[str]:
    runs = osp.join(work_dir, 'runs')
    return [osp.relpath(osp.dirname(p), runs) for p in _result_files(work_dir)]


def _failed_results(work_dir: str) -> List[str]:
    failed = []
    for path in _result_files(work_dir):
        with open(path) as f:
            if json.load(f)['status'] != 'ok':
                failed.append(path)
    return failed


if __name__ == '__main__':
    main()
