"""Runs of our configs as a ``metafile.yaml`` in OpenMMLab's model-index
format (the one mmseg's ``configs/*/metafile.yaml`` use), ready for a pull
request or a leaderboard entry.

Each model is one run: its name and config are the shipped config's, its
metrics the run's (mIoU, head / body / tail mIoU, mAcc, aAcc; those it has
as numbers), its training resources and batch size the run's own (from
mmengine's logs and the config the training dumped into its log folder),
its weights the run's checkpoint path (to be replaced by the URL once
uploaded); dataset and architecture are those of the mmseg model it changes
the loss of, when mmseg publishes that model.
"""
import math
from typing import Dict, List, Optional

from .runs import SUMMARY_KEYS

COLLECTION = 'ARB-Loss'
PAPER = {
    'Title': 'Neural Collapse Inspired Attraction-Repulsion-Balanced Loss '
    'for Imbalanced Learning',
    'URL': 'https://arxiv.org/abs/2204.08735',
}


def _resources(training: Dict) -> Optional[str]:
    """mmseg's wording: '4x V100 GPUS'; '1x CPU' for a CPU run."""
    if not training:
        return None
    device = training['device']
    suffix = '' if device == 'CPU' else ' GPUS'
    return f"{training['processes']}x {device}{suffix}"


def model_entry(run: Dict, config: str, baseline: Dict) -> Dict:
    """The model-index entry of one run.

    Args:
        run: A run from :func:`mmseg_arb.results.runs.load_run`.
        config: The shipped config's path from the repository root, e.g.
            ``configs/deeplabv3plus/<name>.py``.
        baseline: The run's :func:`mmseg_arb.results.baselines.find_baseline`.
    """
    settings = run['settings']  # from the configs the run dumped
    training = run.get('training') or {}
    dataset = baseline.get('dataset') or \
        (settings.get('dataset_type') or '').replace('Dataset', '')
    metadata = {'Training Data': dataset}
    if training and settings.get('batch_size'):
        metadata['Batch Size'] = \
            settings['batch_size'] * training['processes']
    if baseline.get('architecture'):
        metadata['Architecture'] = list(baseline['architecture'])
    if _resources(training):
        metadata['Training Resources'] = _resources(training)
    if training.get('memory_gb') is not None:
        metadata['Memory (GB)'] = training['memory_gb']
    entry = {
        'Name': config.split('/')[-1][:-len('.py')],
        'In Collection': COLLECTION,
        'Results': {
            'Task': 'Semantic Segmentation',
            'Dataset': dataset,
            # NaN (no class of a group among the evaluated labels) is no
            # figure to publish.
            # A run tested with --tta publishes as mmseg's do:
            # 'mIoU(ms+flip)'.
            'Metrics': {
                k + ('(ms+flip)' if run.get('tta') else ''):
                round(float(run['summary'][k]), 2)
                for k in SUMMARY_KEYS
                if math.isfinite(run['summary'].get(k, math.nan))
            },
        },
        'Config': config,
        'Metadata': metadata,
        'Weights': run['checkpoint'],
    }
    if training.get('log'):
        entry['Training log'] = training['log']
    entry.update({'Paper': dict(PAPER), 'Framework': 'PyTorch'})
    return entry


def metafile(models: List[Dict]) -> Dict:
    """A metafile with one collection, ARB-Loss, and ``models``."""
    datasets = sorted({m['Results']['Dataset'] for m in models})
    collection = {
        'Name': COLLECTION,
        'License': 'Apache License 2.0',
        'Metadata': {
            'Training Data': datasets
        },
        'Paper': dict(PAPER),
        'README': 'README.md',
        'Frameworks': ['PyTorch'],
    }
    return {'Collections': [collection], 'Models': models}
