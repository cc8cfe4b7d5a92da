"""What ``mmseg-arb train``, ``test`` and ``class-counts`` share with the
demo and the loss study: how ``train`` and ``test`` launch their processes,
loading a config with the command-line overrides, building the runner it
asks for, and ending the process group of a distributed run."""
import argparse
import contextlib
import gc
import importlib
import os
import os.path as osp
from typing import Iterator, List, Optional

from mmengine.config import Config
from mmengine.registry import Registry
from mmengine.runner import Runner

from ..config.shipped import resolve_config
from ..config.switch import with_class_count_hook
from ..utils.class_counts import parse_class_weight_file
from .command import UsageError
from .torchrun import add_gpus_argument, relaunch_with_torchrun


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``train`` and ``test`` share: how processes are launched."""
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    add_gpus_argument(parser)
    # torchrun passes --local-rank (older launchers --local_rank).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def launch(command: str, args: argparse.Namespace, argv: List[str]) -> str:
    """Relaunch under torchrun if ``--gpus`` asks for it (this process is
    then replaced); otherwise set ``LOCAL_RANK`` as mmseg's tools do.

    Returns:
        str: The path of ``args.config``, resolved before any relaunch so
        that a wrong name fails once, not in every process torchrun starts.
    """
    config = resolve_config(args.config)
    if args.gpus is not None:
        if args.launcher != 'none':
            raise UsageError('--gpus launches with torchrun (--launcher '
                             'pytorch): give --gpus or --launcher, not both')
        relaunch_with_torchrun(command, argv, args.gpus)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return config


def load_config(path: str,
                cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Config from ``path`` with ``--cfg-options`` merged, the launcher set
    and ``work_dir`` resolved as mmseg does: command line, then the config,
    then ``./work_dirs/<config name>``."""
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg


def import_registered_modules(scope: str) -> None:
    """Import now what building a runner of ``scope`` (a config's
    ``default_scope``: ``mmseg``) would import later: the modules its
    registries name as their locations.

    A distributed run calls this before its process group starts. A module
    imported after that may bind the live group for good (torch 2.13's
    ``torch.distributed.nn.functional``, which ``mmengine.runner`` imports,
    has ``group=group.WORLD`` as default arguments), so that
    ``destroy_process_group()`` no longer ends it: see
    :func:`process_group_ended`. A scope without a registry module is left
    to the runner, which reports it.
    """
    try:
        registries = importlib.import_module(f'{scope}.registry')
    except ImportError:
        return
    for registry in vars(registries).values():
        if isinstance(registry, Registry):
            registry.import_from_location()


@contextlib.contextmanager
def process_group_ended() -> Iterator[None]:
    """Run the body; when it succeeds, end the process group a distributed
    run started in it (mmengine starts it and leaves it open), once the
    runner is gone.

    A gloo group left open until the interpreter exits keeps its worker
    threads; one that frees its last finished work while Python finalizes
    needs the GIL for the work's tensors, is ended by CPython with
    ``pthread_exit``, and that unwinds through a ``noexcept`` destructor:
    ``std::terminate`` ("terminate called without an active exception"),
    SIGABRT, a failed run after it succeeded (docs/upstream/
    gloo_abort_at_exit.md). ``destroy_process_group()`` joins those threads
    while the interpreter still runs, provided nothing else holds the group:
    the runner's cycles (its DDP wrapper holds the group) are collected
    first, and modules that could bind it were imported before it started
    (:func:`import_registered_modules`).
    """
    import torch.distributed as dist
    yield
    # Not after a failure: the run has failed anyway, and the other ranks
    # may still be in a collective with this one.
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def prepare_cpu_distributed(cfg: Config) -> None:
    """Make ``--launcher pytorch`` work without GPUs (e.g. tests, CI).

    mmengine 0.10 calls ``torch.cuda.set_device`` when it starts the process
    group and gives DDP a GPU ``device_ids``; a CPU-only torch has neither.
    So the gloo group is started here (mmengine then uses it as is) and DDP
    is told to use no device ids, unless the config sets its own wrapper.
    ``env_cfg.dist_cfg.backend`` is set to ``'gloo'`` too, so that the
    runtime environment at the top of the log names the backend that runs
    (mmseg's configs say ``'nccl'``).
    """
    import torch
    import torch.distributed as dist
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = dist.get_backend()
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


def quiet_per_class_tables(cfg: Config) -> None:
    """``console_table=False`` for every ``LongTailIoUMetric`` of the
    evaluators that does not set it: its per-class table (a row per class,
    150 for ADE20K) goes to the log file, the console gets the summary."""
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key)
        if evaluators is None:
            continue
        for evaluator in (evaluators
                          if isinstance(evaluators, list) else [evaluators]):
            if str(evaluator.get('type', '')).split('.')[-1] == \
                    'LongTailIoUMetric':
                evaluator.setdefault('console_table', False)


# The files mmseg's losses read ``class_weight`` from: numpy's, and
# ``mmengine.fileio.load``'s formats.
WEIGHT_FILES = ('.npy', '.json', '.yaml', '.yml', '.pkl', '.pickle')


def check_class_weight_files(cfg: Config) -> None:
    """Refuse a model whose losses read ``class_weight`` from a file that
    is not there, before the runner makes its work dir: mmseg's
    ``CrossEntropyLoss`` would stop inside the model's build with a bare
    ``FileNotFoundError``.

    Raises:
        UsageError: Naming each such config key and path, and the command
            that writes the file (``mmseg-arb class-counts --weight-power``).
    """
    missing = []  # (config key, path)

    def walk(node, key: str) -> None:
        if isinstance(node, dict):
            items = node.items()
        elif isinstance(node, (list, tuple)):
            items = enumerate(node)
        else:
            return
        for name, value in items:
            if name == 'class_weight' and isinstance(value, str):
                # A file as mmseg reads one; another string is left to
                # whichever loss knows what it means.
                if value.endswith(WEIGHT_FILES) and not osp.isfile(value):
                    missing.append((f'{key}.{name}', value))
            else:
                walk(value, f'{key}.{name}')

    walk(cfg.get('model', {}), 'model')
    if missing:
        split, power = parse_class_weight_file(missing[0][1]) or ('', 'P')
        split = f'--split {split} ' if split not in ('', 'train') else ''
        where = '; '.join(f"{key} = '{path}'" for key, path in missing)
        raise UsageError(
            f'no class weights file at {where} (a relative path is read '
            f'from {os.getcwd()}). Write it with '
            f'"mmseg-arb class-counts CONFIG {split}--weight-power '
            f'{power}" (class weights n^-{power} in '
            'the data root, beside the training counts), or set the path '
            'or a list of weights.')


def build_runner(cfg: Config) -> Runner:
    """``Runner.from_cfg``, or the registered runner ``cfg.runner_type``,
    with ``ClassCountHook`` among the hooks, per-class tables kept off the
    console (:func:`quiet_per_class_tables`) and CPU-only distributed runs
    given their gloo group first; a missing class weights file is refused
    first (:func:`check_class_weight_files`). In a distributed run the
    registries' modules are imported before any process group starts
    (:func:`import_registered_modules`); run the runner inside
    :func:`process_group_ended`."""
    check_class_weight_files(cfg)
    cfg.custom_hooks = with_class_count_hook(cfg.get('custom_hooks'))
    quiet_per_class_tables(cfg)
    if cfg.get('launcher', 'none') != 'none':
        import_registered_modules(cfg.get('default_scope', 'mmseg'))
    prepare_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    from mmseg.registry import RUNNERS
    return RUNNERS.build(cfg)
