"""The CamVid registration's two checks of item 7 of its rule
(``projects/loss_study/camvid/PREREGISTRATION.md``, "Model, schedule,
optimiser" and "Convergence check"), trained by ``tools/loss_study.py
--checks`` once the final stage is complete: the final stage's seed-100
run of a configuration (data seed 0, the first final seed) trained again
with the registered ``--cfg-options`` (:func:`overrides`), under the run
key ``check/<kind>/<configuration>/d0-s100``.

* ``sgd``: CE, the chosen ARB and the chosen ARB + weights under SGD
  (lr 0.1, momentum 0.9, weight decay 5e-4, poly to 1e-4);
* ``half``: CE, the chosen ARB and the README's candidate (the row the rule
  recommends; the chosen ARB + weights where that is CE) at half the
  iterations, with their own poly decay. A ``ce-tta`` candidate trains
  nothing: it evaluates the ``check/half/ce`` run's last checkpoint.

Each check compares the order of its configurations by test mIoU with
their AdamW seed-100 final runs' order (:func:`compare`); a changed order
adds the rule's sentence (``rule.CHECKS``).
"""
from typing import Dict, List, Optional

# Check kind: the rule's name for "this check changed the order".
KINDS = {'sgd': 'sgd_order_changed', 'half': 'schedule_order_changed'}
# The optimiser whose final stage the checks train again.
BASELINE = 'adamw'


def overrides(kind: str, iters: int, checkpoints: bool) -> Dict:
    """The registered ``--cfg-options`` of a check, as ``tools/train.py``
    merges them into the final run's config.

    Args:
        kind: ``'sgd'`` or ``'half'``.
        iters: The study's iterations (the half schedule trains half).
        checkpoints: Whether the study saves checkpoints; if not, the half
            schedule saves none either.
    """
    if kind == 'sgd':
        return {
            'optim_wrapper.optimizer.type': 'SGD',
            'optim_wrapper.optimizer.lr': 0.1,
            'optim_wrapper.optimizer.momentum': 0.9,
            'optim_wrapper.optimizer.weight_decay': 5e-4,
            'param_scheduler.0.eta_min': 1e-4,
        }
    if kind != 'half':
        raise ValueError(f'unknown check {kind!r}; the checks are '
                         f'{sorted(KINDS)}')
    half = iters // 2
    options = {
        'train_cfg.max_iters': half,
        'train_cfg.val_interval': half,
        'param_scheduler.0.end': half,
    }
    if checkpoints:
        options['default_hooks.checkpoint.interval'] = half
    return options


def iterations(kind: str, iters: int) -> int:
    """The training iterations of a check's runs."""
    return iters // 2 if kind == 'half' else iters


def configurations(chosen: Dict[str, Optional[str]],
                   recommended: str) -> Dict[str, List[str]]:
    """The configuration keys each check trains again.

    Args:
        chosen: Family key to its chosen configuration key (the
            analysis's ``chosen``); a family the study lacks, or whose
            tuning runs all failed, is left out of the checks.
        recommended: The family the registered rule recommends.

    Returns:
        ``{'sgd': [...], 'half': [...]}`` in the rule's table order, CE
        first, duplicates removed.
    """
    ce, arb, weights = (chosen.get(f) for f in ('ce', 'arb', 'arb-weights'))
    candidate = weights if recommended == 'ce' else chosen.get(recommended)
    keys = dict(sgd=(ce, arb, weights), half=(ce, arb, candidate))
    return {
        kind: [k for k in dict.fromkeys(these) if k]
        for kind, these in keys.items()
    }


def order(mious: Dict[str, float]) -> List[str]:
    """Keys by test mIoU, highest first; equal values (to 6 decimals) in
    the given order."""
    keys = list(mious)
    return sorted(keys, key=lambda k: (-round(mious[k], 6), keys.index(k)))


def compare(check: Dict[str, Optional[Dict]],
            final: Dict[str, Optional[Dict]]) -> Dict:
    """One check against the AdamW seed-100 final runs.

    Args:
        check: Configuration key to the check run's test metrics
            (``summary``), None where it has not finished or failed.
        final: The same keys to the final run's test metrics, or None.

    Returns:
        dict: ``order`` and ``final_order`` (keys by test mIoU, highest
        first) and ``changed`` (whether they differ), each None until every
        key has both runs; ``missing``: the keys without both.
    """
    missing = [k for k in check if check[k] is None or final.get(k) is None]
    if missing or not check:
        return dict(
            order=None, final_order=None, changed=None, missing=missing)
    ours = order({k: m['mIoU'] for k, m in check.items()})
    theirs = order({k: final[k]['mIoU'] for k in check})
    return dict(
        order=ours, final_order=theirs, changed=ours != theirs, missing=[])
