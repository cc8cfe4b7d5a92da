"""Published results of mmseg's own models: the baselines of our runs.

Our configs are named as mmseg's with ``_arb`` or ``_arb-prior`` added:
``deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512`` is ARB-Loss on
``deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512``, trained by mmseg with
cross-entropy. The baseline of a run is the model of that name in the
metafiles (OpenMMLab's model index) that the installed mmsegmentation ships
under ``mmseg/.mim``: nothing is hard-coded or downloaded, so the figures
are those of the mmseg version in use.
"""
import importlib.util
import os.path as osp
import re
from collections import defaultdict
from functools import lru_cache
from typing import Dict, List, Optional

import yaml

ARB_TOKEN = re.compile(r'_arb(?:-prior)?(?=_)')
# mmseg's config names: '<gpus>xb<batch per gpu>-<schedule>', e.g.
# '4xb4-80k' or '1xb8-400iter'.
SCHEDULE = re.compile(r'_(\d+)xb(\d+)-(\d+)(k|iter)_')
SINGLE_SCALE, TTA = 'mIoU', 'mIoU(ms+flip)'


def mmseg_name(config_name: str) -> str:
    """The mmseg model our config ``config_name`` changes the loss of
    (``config_name`` itself for a name without ``_arb``)."""
    return ARB_TOKEN.sub('', config_name, count=1)


def mmseg_model_index() -> str:
    """Path of the installed mmsegmentation's ``model-index.yml``.

    Raises:
        ModuleNotFoundError: If mmsegmentation is not installed.
    """
    # Found without importing mmseg, which would import torch and mmcv.
    spec = importlib.util.find_spec('mmseg')
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError('mmsegmentation is not installed: its '
                                  'metafiles hold the baselines')
    return osp.join(
        list(spec.submodule_search_locations)[0], '.mim', 'model-index.yml')


def _load_yaml(path: str):
    loader = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)
    with open(path) as f:
        return yaml.load(f, Loader=loader)


@lru_cache(maxsize=4)
def mmseg_models(model_index: str) -> Dict[str, List[Dict]]:
    """Every model of the model index ``model_index``, by its ``Name`` and
    by its ``Config``'s file name (the same in mmseg 1.2.2, not a rule of
    the format). An entry holds the metafile's fields and ``metafile``, the
    file it is in.

    Raises:
        FileNotFoundError: If ``model_index`` does not exist.
    """
    if not osp.isfile(model_index):
        raise FileNotFoundError(
            f'{model_index} not found: the baselines are read from the model '
            f'index an installed mmsegmentation ships under mmseg/.mim')
    root = osp.dirname(model_index)
    models: Dict[str, List[Dict]] = defaultdict(list)
    for metafile in _load_yaml(model_index).get('Import', []):
        path = osp.join(root, metafile)
        for model in _load_yaml(path).get('Models') or []:
            entry = dict(model, metafile=path)
            names = {model.get('Name')}
            if model.get('Config'):
                names.add(osp.splitext(osp.basename(model['Config']))[0])
            for name in names - {None}:
                models[name].append(entry)
    return dict(models)


def _results(model: Dict) -> List[Dict]:
    results = model.get('Results') or []
    return results if isinstance(results, list) else [results]


def _miou(model: Dict, metric: str = SINGLE_SCALE) -> Optional[float]:
    for result in _results(model):
        miou = (result.get('Metrics') or {}).get(metric)
        if miou is not None:
            return float(miou)
    return None


def _dataset(model: Dict) -> Optional[str]:
    results = _results(model)
    return results[0].get('Dataset') if results else None


def _same_schedule(name: str, models: List[Dict]) -> List[Dict]:
    """Of several models listed under ``name``, those whose weights were
    trained for the schedule the name says (their checkpoint's file name,
    mmseg 0.x's, says '_80k_' or '_160k_')."""
    schedule = SCHEDULE.search(f'_{name}_')
    if schedule is None:
        return models
    token = f'_{schedule.group(3)}{schedule.group(4)}_'
    return [
        m for m in models
        if token in osp.basename(str(m.get('Weights') or ''))
    ]


def find_baseline(config_name: str,
                  model_index: Optional[str] = None,
                  tta: bool = False) -> Dict:
    """The published cross-entropy result for our config ``config_name``.

    Args:
        config_name: A config's file name without ``.py``.
        model_index: The ``model-index.yml`` to read; default: the installed
            mmsegmentation's.
        tta: The run was tested with test-time augmentation: its baseline
            is the published ``mIoU(ms+flip)``, not the single-scale one.

    Returns:
        dict: ``model`` (mmseg's name), ``metric`` (``'mIoU'`` or
        ``'mIoU(ms+flip)'``), ``mIoU`` (that figure as published; None where
        there is no single value), and either ``dataset``, ``architecture``,
        ``metafile`` of the model, or ``note`` saying why there is no value:
        no model of that name, or several that disagree. Of several, those
        whose weights are of the schedule the name says are kept first
        (mmseg 1.2.2 lists ``deeplabv3plus_r101-d8_4xb4-160k_ade20k-512x512``
        twice, once with the 80k run's weights).
    """
    name = mmseg_name(config_name)
    metric = TTA if tta else SINGLE_SCALE
    found = mmseg_models(model_index or mmseg_model_index()).get(name, [])
    found = [m for m in found if _miou(m, metric) is not None]
    if len({_miou(m, metric) for m in found}) > 1:
        found = _same_schedule(name, found) or found
    values = sorted({_miou(m, metric) for m in found})
    if not values:
        return dict(
            model=name,
            metric=metric,
            mIoU=None,
            note=f'no model {name} with an {metric} in mmseg\'s '
            'metafiles')
    if len(values) > 1:
        return dict(
            model=name,
            metric=metric,
            mIoU=None,
            note=f'mmseg\'s metafiles list {name} {len(found)} times '
            f'with different {metric} '
            f'({", ".join(map(str, values))})')
    model = found[0]
    return dict(
        model=name,
        metric=metric,
        mIoU=values[0],
        dataset=_dataset(model),
        architecture=(model.get('Metadata') or {}).get('Architecture'),
        metafile=model['metafile'])


def schedule_differences(config_name: str, processes: Optional[int],
                         batch_size: Optional[int],
                         max_iters: Optional[int]) -> List[str]:
    """How a run's training differs from what its config name says (and so
    from the published model it is compared with): GPUs x batch per GPU,
    and iterations. Empty when it matches, or the name says nothing."""
    schedule = SCHEDULE.search(f'_{config_name}_')
    if schedule is None:
        return []
    gpus, per_gpu, length, unit = schedule.groups()
    named_batch = int(gpus) * int(per_gpu)
    named_iters = int(length) * (1000 if unit == 'k' else 1)
    differences = []
    if processes and batch_size and processes * batch_size != named_batch:
        differences.append(f'trained with a total batch of {processes}x'
                           f'{batch_size} (the name says {gpus}x{per_gpu})')
    if max_iters and max_iters != named_iters:
        differences.append(f'trained {max_iters} iterations (the name says '
                           f'{named_iters})')
    return differences
