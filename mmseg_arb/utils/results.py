"""Collecting finished runs into tables ready for a paper or a leaderboard.

A run is an mmengine work dir. Its metrics are the last record holding
``mIoU`` in the newest log folder: ``<timestamp>/<timestamp>.json`` (written
by ``tools/test.py``) or ``<timestamp>/vis_data/scalars.json`` (validation
during training). Per-class IoU comes from ``LongTailIoUMetric`` with
``per_class=True`` (keys ``IoU.<class>``).
"""
import glob
import json
import os.path as osp
import subprocess
from typing import Dict, List, Optional

SUMMARY_KEYS = ('mIoU', 'mIoU_head', 'mIoU_body', 'mIoU_tail', 'mAcc',
                'aAcc')


def _records(path: str) -> List[Dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _metric_files(work_dir: str) -> List[str]:
    """Metric logs of a work dir, newest log folder first."""
    folders = sorted(glob.glob(osp.join(work_dir, '2*_*')), reverse=True)
    files = []
    for folder in folders:
        stamp = osp.basename(folder)
        files += [p for p in (osp.join(folder, f'{stamp}.json'),
                              osp.join(folder, 'vis_data', 'scalars.json'))
                  if osp.exists(p)]
    return files


def load_run(work_dir: str, name: Optional[str] = None) -> Dict:
    """Metrics, per-class IoU, config and checkpoint of one finished run.

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
                                f'(run tools/test.py or validate first)')
    per_class = {k[len('IoU.'):]: v for k, v in metrics.items()
                 if k.startswith('IoU.')}
    configs = sorted(glob.glob(osp.join(work_dir, '*.py')))
    checkpoint = None
    last = osp.join(work_dir, 'last_checkpoint')
    if osp.exists(last):
        with open(last) as f:
            checkpoint = f.read().strip()
    return {
        'name': name or osp.basename(osp.normpath(work_dir)),
        'work_dir': work_dir,
        'metrics_file': source,
        'summary': {k: metrics[k] for k in SUMMARY_KEYS if k in metrics},
        'per_class_iou': per_class,
        'config': configs[0] if configs else None,
        'checkpoint': checkpoint,
    }


def code_version() -> Dict:
    """mmseg_arb's version and, in a git checkout, its commit."""
    from mmseg_arb import __version__
    version = {'mmseg_arb': __version__}
    try:
        root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                                cwd=root, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            version['git_commit'] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def _cell(value) -> str:
    return '-' if value is None else f'{value:.2f}'


def results_markdown(runs: List[Dict], version: Dict) -> str:
    """Markdown: a summary table (one row per run), then per-class IoU
    (one row per class, one column per run), then provenance."""
    keys = [k for k in SUMMARY_KEYS if any(k in r['summary'] for r in runs)]
    lines = ['| run | ' + ' | '.join(keys) + ' |',
             '|---|' + '---:|' * len(keys)]
    for r in runs:
        lines.append(f"| {r['name']} | " + ' | '.join(
            _cell(r['summary'].get(k)) for k in keys) + ' |')
    classes: List[str] = []
    for r in runs:
        classes += [c for c in r['per_class_iou'] if c not in classes]
    if classes:
        lines += ['', '| class | ' + ' | '.join(r['name'] for r in runs) +
                  ' |', '|---|' + '---:|' * len(runs)]
        for c in classes:
            lines.append(f'| {c} | ' + ' | '.join(
                _cell(r['per_class_iou'].get(c)) for r in runs) + ' |')
    lines += ['', '| run | config | checkpoint |', '|---|---|---|']
    for r in runs:
        lines.append(f"| {r['name']} | {r['config'] or '-'} | "
                     f"{r['checkpoint'] or '-'} |")
    lines += ['', 'Code: ' + ', '.join(f'{k} {v}'
                                       for k, v in version.items())]
    return '\n'.join(lines) + '\n'
