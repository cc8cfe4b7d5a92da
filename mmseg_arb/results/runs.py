"""Collecting finished runs into tables ready for a paper or a leaderboard.

A run is an mmengine work dir. Its metrics are the last record holding
``mIoU`` in the newest log folder: ``<timestamp>/<timestamp>.json`` (written
by ``tools/test.py``) or ``<timestamp>/vis_data/scalars.json`` (validation
during training). Per-class IoU comes from ``LongTailIoUMetric`` with
``per_class=True`` (keys ``IoU.<class>``). How it trained (processes,
device, peak memory) comes from the newest log folder with training
records.
"""
import glob
import json
import os.path as osp
import re
import subprocess
from typing import Dict, List, Optional

SUMMARY_KEYS = ('mIoU', 'mIoU_head', 'mIoU_body', 'mIoU_tail', 'mAcc', 'aAcc')
# Always a column of the tables: '-' marks a run evaluated without
# LongTailIoUMetric, rather than the column going missing.
GROUP_KEYS = ('mIoU_head', 'mIoU_body', 'mIoU_tail')


def _records(path: str) -> List[Dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _log_folders(work_dir: str) -> List[str]:
    """mmengine's timestamped log folders of a work dir, newest first."""
    return sorted(glob.glob(osp.join(work_dir, '2*_*')), reverse=True)


def _metric_files(work_dir: str) -> List[str]:
    """Metric logs of a work dir, newest log folder first."""
    files = []
    for folder in _log_folders(work_dir):
        stamp = osp.basename(folder)
        files += [
            p for p in (osp.join(folder, f'{stamp}.json'),
                        osp.join(folder, 'vis_data', 'scalars.json'))
            if osp.exists(p)
        ]
    return files


def _environment(log: str) -> Dict[str, str]:
    """The system and runtime environment mmengine writes at the top of a
    text log (``    key: value`` lines), up to ``GPU number``."""
    env = {}
    with open(log) as f:
        for line in f:
            match = re.match(r'\s{4}([^:]+): (.*)$', line)
            if match:
                env[match.group(1)] = match.group(2).strip()
                if match.group(1) == 'GPU number':
                    break
    return env


# Lines of mmengine's text log that only training writes (CheckpointHook
# before training and at each save, LoggerHook's training records): a run
# shorter than the logger interval has no training records, but these.
TRAINING_MARKS = ('Checkpoints will be saved to', 'Saving checkpoint at',
                  'Iter(train)', 'Epoch(train)')


def _is_training_folder(folder: str) -> bool:
    stamp = osp.basename(folder)
    scalars = osp.join(folder, 'vis_data', 'scalars.json')
    if osp.exists(scalars) and any('loss' in r for r in _records(scalars)):
        return True
    log = osp.join(folder, f'{stamp}.log')
    if not osp.exists(log):
        return False
    with open(log, errors='replace') as f:
        return any(mark in line for line in f for mark in TRAINING_MARKS)


def _dumped_config(folder: str) -> Optional[str]:
    """The config a run's process used, as mmengine's visualizer dumped it
    into its own log folder (the work dir's top-level copy is rewritten by
    every later train or test call into the same work dir)."""
    path = osp.join(folder, 'vis_data', 'config.py')
    return path if osp.exists(path) else None


def _log_folder_of(metrics_file: str) -> str:
    folder = osp.dirname(metrics_file)
    return osp.dirname(folder) if osp.basename(folder) == 'vis_data' \
        else folder


def training_resources(work_dir: str) -> Dict:
    """How a run trained, from its newest log folder of a training run
    (one with training records, or, for a run shorter than the logger
    interval, training lines in its text log).

    Returns:
        dict: ``processes`` (mmengine's world size), ``device`` (the GPU
        names, or ``'CPU'``), ``memory_gb`` (peak memory mmengine logged for
        one process; None on CPU or without training records), ``log`` (the
        training scalars, else the text log) and ``config`` (the config the
        training dumped into its log folder, None if it did not); empty if
        the work dir has no training log.
    """
    for folder in _log_folders(work_dir):
        stamp = osp.basename(folder)
        log = osp.join(folder, f'{stamp}.log')
        if not (osp.exists(log) and _is_training_folder(folder)):
            continue
        scalars = osp.join(folder, 'vis_data', 'scalars.json')
        train = [r for r in _records(scalars) if 'loss' in r] \
            if osp.exists(scalars) else []
        env = _environment(log)
        gpus = [v for k, v in env.items() if re.fullmatch(r'GPU [\d,]+', k)]
        memory = [r['memory'] for r in train if 'memory' in r]
        return {
            'processes': int(env.get('GPU number', 1)),
            'device': ' + '.join(gpus) if gpus else 'CPU',
            'memory_gb': round(max(memory) / 1024, 1) if memory else None,
            'log': scalars if train else log,
            'config': _dumped_config(folder),
        }
    return {}


def dumped_settings(config: str) -> Dict:
    """What a comparison with a published result depends on, from a dumped
    config: ``tta`` (tested with test-time augmentation), ``load_from``
    (the checkpoint a test loaded), ``batch_size`` (per process),
    ``max_iters`` and ``dataset_type`` (of the training set)."""
    from mmengine.config import Config
    cfg = Config.fromfile(config, import_custom_modules=False)
    model_type = str(cfg.get('model', {}).get('type', ''))
    train_loader = cfg.get('train_dataloader', {})
    return {
        'tta': model_type.split('.')[-1] == 'SegTTAModel',
        'load_from': cfg.get('load_from'),
        'batch_size': train_loader.get('batch_size'),
        'max_iters': cfg.get('train_cfg', {}).get('max_iters'),
        'dataset_type': train_loader.get('dataset', {}).get('type'),
    }


def run_settings(work_dir: str, metrics_file: str, training: Dict) -> Dict:
    """:func:`dumped_settings` of a run, each from the config that decided
    it: ``tta`` and ``load_from`` from the config of the call that wrote
    ``metrics_file``; ``batch_size`` and ``max_iters`` from the training's
    own (``training['config']``), never from a later test's, and None when
    the training's config is not found (``training_config`` says which
    file they came from)."""
    configs = sorted(glob.glob(osp.join(work_dir, '*.py')))
    top = configs[0] if configs else None
    evaluated = _dumped_config(_log_folder_of(metrics_file)) or top
    settings = dumped_settings(evaluated) if evaluated else {}
    trained_config = training.get('config')
    trained = dumped_settings(trained_config) if trained_config else {}
    settings.update(
        batch_size=trained.get('batch_size'),
        max_iters=trained.get('max_iters'),
        training_config=trained_config)
    if trained.get('dataset_type'):
        settings['dataset_type'] = trained['dataset_type']
    return settings


def load_run(work_dir: str, name: Optional[str] = None) -> Dict:
    """Metrics, per-class IoU, config and checkpoint of one finished run.

    The checkpoint is the one a ``tools/test.py`` call evaluated when the
    metrics are that call's (the ``load_from`` of the config it dumped),
    else the work dir's last one. Batch size and iterations are the
    training's (:func:`run_settings`).

    Raises:
        FileNotFoundError: If the work dir holds no metrics with ``mIoU``.
    """
    metrics = None
    source = None
    for path in _metric_files(work_dir):
        found = [r for r in _records(path) if 'mIoU' in r]
        if found:
            metrics, source = found[-1], path
            break
    if metrics is None:
        raise FileNotFoundError(f'{work_dir}: no evaluation with mIoU found '
                                f'(run mmseg-arb test or validate first)')
    per_class = {
        k[len('IoU.'):]: v
        for k, v in metrics.items() if k.startswith('IoU.')
    }
    configs = sorted(glob.glob(osp.join(work_dir, '*.py')))
    training = training_resources(work_dir)
    settings = run_settings(work_dir, source, training)
    checkpoint = None
    last = osp.join(work_dir, 'last_checkpoint')
    tested = not source.endswith('scalars.json')
    if tested and settings.get('load_from'):
        checkpoint = settings['load_from']
    elif osp.exists(last):
        with open(last) as f:
            checkpoint = f.read().strip()
    return {
        'name': name or osp.basename(osp.normpath(work_dir)),
        'work_dir': work_dir,
        'metrics_file': source,
        'summary': {
            k: metrics[k]
            for k in SUMMARY_KEYS if k in metrics
        },
        'per_class_iou': per_class,
        'config': configs[0] if configs else None,
        'checkpoint': checkpoint,
        'tta': tested and bool(settings.get('tta')),
        'settings': settings,
        'training': training,
    }


def code_version() -> Dict:
    """mmseg_arb's and mmsegmentation's versions and, for a source checkout
    of mmseg_arb, its commit."""
    from importlib.metadata import PackageNotFoundError, version

    from mmseg_arb import __version__
    versions = {'mmseg_arb': __version__}
    try:
        versions['mmsegmentation'] = version('mmsegmentation')
    except PackageNotFoundError:
        pass
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    # An installed package's folder may lie inside some other repository.
    if osp.exists(osp.join(root, '.git')):
        try:
            commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                                    cwd=root,
                                    capture_output=True,
                                    text=True,
                                    timeout=10)
            if commit.returncode == 0:
                versions['git_commit'] = commit.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return versions


def _cell(value) -> str:
    return '-' if value is None else f'{value:.2f}'


def _baseline_miou(run: Dict) -> Optional[float]:
    return (run.get('baseline') or {}).get('mIoU')


def _miou_minus_baseline(run: Dict) -> Optional[float]:
    ours, theirs = run['summary'].get('mIoU'), _baseline_miou(run)
    return None if ours is None or theirs is None else ours - theirs


def _baseline_source(run: Dict) -> str:
    baseline = run.get('baseline') or {}
    if baseline.get('mIoU') is None:
        return baseline.get('note', 'no config in the work dir')
    source = baseline['model']
    if baseline.get('run'):
        source = f"run {baseline['run']} of {source} ({baseline['work_dir']})"
    if baseline.get('metric', 'mIoU') != 'mIoU':
        source += f" ({baseline['metric']}, as this run was tested)"
    if baseline.get('differences'):
        source += '; not comparable as is: ' + '; '.join(
            baseline['differences'])
    if baseline.get('unchecked'):
        source += '; ' + '; '.join(baseline['unchecked'])
    return source


def results_markdown(runs: List[Dict], version: Dict) -> str:
    """Markdown: a summary table (one row per run), then per-class IoU
    (one row per class, one column per run), then provenance.

    The summary always has the head / body / tail mIoU columns (``-`` for a
    run evaluated without ``LongTailIoUMetric``). Runs that carry a
    ``baseline`` (:func:`mmseg_arb.results.baselines.find_baseline`) also get
    the mIoU mmseg publishes for the same model trained with cross-entropy
    (or a given run's, when the baseline names its ``run``), and the
    difference; ``-`` where there is none.
    """
    keys = [
        k for k in SUMMARY_KEYS
        if k == 'mIoU' or k in GROUP_KEYS or any(k in r['summary']
                                                 for r in runs)
    ]
    with_baselines = any('baseline' in r for r in runs)
    columns = []
    for key in keys:
        columns.append((key, lambda r, key=key: r['summary'].get(key)))
        if key == 'mIoU' and with_baselines:
            columns += [('CE mIoU', _baseline_miou),
                        ('mIoU - CE', _miou_minus_baseline)]
    lines = [
        '| run | ' + ' | '.join(c[0] for c in columns) + ' |',
        '|---|' + '---:|' * len(columns)
    ]
    for r in runs:
        lines.append(f"| {r['name']} | " +
                     ' | '.join(_cell(value(r))
                                for _, value in columns) + ' |')
    classes: List[str] = []
    for r in runs:
        classes += [c for c in r['per_class_iou'] if c not in classes]
    if classes:
        lines += [
            '', '| class | ' + ' | '.join(r['name'] for r in runs) + ' |',
            '|---|' + '---:|' * len(runs)
        ]
        for c in classes:
            lines.append(f'| {c} | ' + ' | '.join(
                _cell(r['per_class_iou'].get(c)) for r in runs) + ' |')
    provenance = ['run', 'config', 'checkpoint'] + \
        (['CE baseline'] if with_baselines else [])
    lines += [
        '', '| ' + ' | '.join(provenance) + ' |',
        '|' + '---|' * len(provenance)
    ]
    for r in runs:
        cells = [r['name'], r['config'] or '-', r['checkpoint'] or '-']
        if with_baselines:
            cells.append(_baseline_source(r))
        lines.append('| ' + ' | '.join(cells) + ' |')
    if with_baselines:
        lines += [
            '', "CE mIoU: the mIoU that mmsegmentation's "
            'metafiles publish for the model of the same name '
            'without `_arb` / `_arb-prior` (cross-entropy; '
            'single-scale, or ms+flip for a run tested with `--tta`); '
            'where mmseg publishes none (CamVid), that of the run of '
            'the cross-entropy config of that name summarized with '
            'it, if any. The last column says which, and where a run '
            'trained with another batch or schedule than the name '
            'says or than that run.'
        ]
    if any(k not in r['summary'] for r in runs for k in GROUP_KEYS):
        lines += [
            '', 'mIoU_head / body / tail: `-` for a run evaluated '
            'without LongTailIoUMetric.'
        ]
    lines += ['', 'Code: ' + ', '.join(f'{k} {v}' for k, v in version.items())]
    return '\n'.join(lines) + '\n'
