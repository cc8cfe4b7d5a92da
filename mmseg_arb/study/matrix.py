"""The losses the loss study compares, each as a user writes it in an
mmseg config.

A :class:`StudyLoss` is the decode head's ``loss_decode`` (a dict, or a
list of dicts for a sum of losses), plus what else the user adds for it: a
pixel sampler, imports. :func:`apply_loss` writes it into the study's
cross-entropy config; the auxiliary head gets the same losses at its own
weight (0.4 in mmseg's DeepLabV3+). ARB rows are made as users make them:
the config's cross-entropy switched by :func:`switch_to_arb` (what the
``_base_`` switch runs), plus ``ClassCountHook``.
"""
import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..utils.switch_config import switch_to_arb, with_class_count_hook

LossCfg = Union[Dict, List[Dict]]
COUNT_MODES = ('batch', 'cumulative', 'ema', 'prior')


@dataclass(frozen=True)
class StudyLoss:
    """One row of the study.

    Args:
        key: Short name, used on the command line and as the run folder.
        name: Name in the tables and plots.
        family: ``'mmseg'`` (MMSegmentation's own losses) or ``'arb'``.
        loss_decode: The decode head's ``loss_decode`` as the user writes
            it (loss weights included); None for ARB rows.
        shown: The same, as the tables show it (long lists elided).
        sampler: The decode head's ``sampler``, if any.
        imports: Modules ``custom_imports`` must import besides
            ``mmseg_arb``.
        stands_in_for: Key of the row this one replaces where that one
            cannot run (the nearest working variant).
        note: One line on why the row is configured as it is.
        arb: ``ARBLoss`` arguments that :func:`switch_to_arb` gives the
            config's cross-entropy losses (ARB rows only).
    """
    key: str
    name: str
    family: str
    loss_decode: Optional[LossCfg]
    shown: str
    sampler: Optional[Dict] = None
    imports: Sequence[str] = ()
    stands_in_for: Optional[str] = None
    note: str = ''
    arb: Dict = field(default_factory=dict)


def inverse_frequency_weights(counts: Sequence[float]) -> List[float]:
    """``total / (C * n_c)`` per class: each class gets the same share of the
    total weight of a training set's pixels, and the mean weight of a pixel
    is 1 (as with no weights). Classes without pixels get 0."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return [round(float(w), 6) for w in weights]


def mmseg_losses(class_weight: Sequence[float],
                 ohem_min_kept: int) -> List[StudyLoss]:
    """MMSegmentation's losses as its configs and docs write them.

    Args:
        class_weight: Inverse-frequency weights of the training set.
        ohem_min_kept: ``min_kept`` of the OHEM sampler (mmseg's Cityscapes
            configs keep about a tenth of a batch's pixels).
    """
    ce = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
    weighted = dict(ce, class_weight=list(class_weight))
    dice = dict(type='DiceLoss', loss_name='loss_dice', loss_weight=3.0)
    return [
        StudyLoss('ce', 'CE', 'mmseg', ce, "CrossEntropyLoss()",
                  note='the baseline'),
        StudyLoss('ce-weighted', 'CE + class_weight', 'mmseg', weighted,
                  'CrossEntropyLoss(class_weight=inverse frequency)',
                  note='weights total / (C n_c) of the training counts'),
        StudyLoss('ce-weighted-none', "CE + class_weight, reduction='none'",
                  'mmseg', dict(weighted, reduction='none'),
                  "CrossEntropyLoss(class_weight=inverse frequency, "
                  "reduction='none')", stands_in_for='ce-weighted',
                  note="mmseg's mean fails on ignored pixels; unreduced, "
                  'mmengine averages the weighted losses over all pixels'),
        StudyLoss('ohem', 'CE + OHEM', 'mmseg', ce,
                  f"CrossEntropyLoss() + OHEMPixelSampler(thresh=0.7, "
                  f"min_kept={ohem_min_kept})",
                  sampler=dict(type='OHEMPixelSampler', thresh=0.7,
                               min_kept=ohem_min_kept),
                  note='sampler on the decode head, as in mmseg configs'),
        StudyLoss('focal', 'Focal', 'mmseg',
                  dict(type='FocalLoss', loss_weight=1.0), 'FocalLoss()',
                  note="mmseg's sigmoid focal loss, gamma 2, alpha 0.5"),
        StudyLoss('focal-onehot', 'Focal (one-hot targets)', 'mmseg',
                  dict(type='OneHotFocalLoss', loss_weight=1.0),
                  'OneHotFocalLoss()',
                  imports=('mmseg_arb.study.focal_loss', ),
                  stands_in_for='focal',
                  note="mmseg's FocalLoss given one-hot targets, which its "
                  'CPU path needs (mmseg_arb/study/focal_loss.py)'),
        StudyLoss('dice', 'Dice', 'mmseg',
                  dict(type='DiceLoss', loss_name='loss_dice',
                       loss_weight=1.0), "DiceLoss()",
                  note="mmseg's defaults (sigmoid per class)"),
        StudyLoss('lovasz', 'Lovasz', 'mmseg',
                  dict(type='LovaszLoss', loss_type='multi_class',
                       reduction='none', loss_weight=1.0),
                  "LovaszLoss(loss_type='multi_class', reduction='none')",
                  note="Lovasz-softmax over the batch (mmseg requires "
                  "reduction='none' then)"),
        StudyLoss('ce+dice', 'CE + Dice', 'mmseg', [ce, dice],
                  '[CrossEntropyLoss(loss_weight=1.0), '
                  'DiceLoss(loss_weight=3.0)]',
                  note="mmseg's shipped ce-1.0-dice-3.0 configs"),
    ]


def arb_loss(count_mode: str, class_stats: Optional[str] = None,
             tau: float = 1.0) -> StudyLoss:
    """ARB-Loss in ``count_mode`` (the prior from ``class_stats``) with
    exponent ``tau``, as this project's configs and README write it."""
    if count_mode not in COUNT_MODES:
        raise ValueError(f'count_mode must be one of {COUNT_MODES}, '
                         f'got {count_mode!r}')
    settings = dict(count_mode=count_mode)
    if count_mode == 'prior':
        settings['class_counts'] = class_stats
    if tau != 1.0:
        settings['tau'] = tau
    shown = ', '.join(f'{k}={v!r}' for k, v in settings.items()
                      if k != 'class_counts')
    if count_mode == 'prior':
        shown += ", class_counts='class_stats_train.json'"
    key = f'arb-{count_mode}' + (f'-tau{tau:g}' if tau != 1.0 else '')
    name = f'ARB {count_mode}' + (f' tau={tau:g}' if tau != 1.0 else '')
    return StudyLoss(
        key, name, 'arb', None, f'ARBLoss({shown})', arb=settings,
        note='' if tau != 1.0 else {
            'batch': "the paper's ARB-Loss",
            'cumulative': "the paper's global class count",
            'ema': 'moving average of batch counts, momentum 0.01',
            'prior': 'training-set counts; Balanced Softmax',
        }[count_mode])


def apply_loss(cfg, loss: StudyLoss):
    """A copy of ``cfg`` whose heads train with ``loss``.

    The auxiliary head (if any) gets every loss of the row with its weight
    scaled by the ratio of the config's auxiliary to decode loss weights;
    the sampler goes on the decode head only, as in mmseg's OHEM configs.
    An ARB row switches the config's cross-entropy losses instead.
    """
    cfg = copy.deepcopy(cfg)
    if loss.arb:
        cfg.model = switch_to_arb(cfg.model, **loss.arb)
        cfg.custom_hooks = with_class_count_hook(cfg.get('custom_hooks'))
        return cfg
    model = cfg.model
    decode = copy.deepcopy(loss.loss_decode)
    if model.get('auxiliary_head') is not None:
        ratio = _weight(model.auxiliary_head.loss_decode) / \
            _weight(model.decode_head.loss_decode)
        model.auxiliary_head.loss_decode = _scaled(decode, ratio)
    model.decode_head.loss_decode = decode
    if loss.sampler is not None:
        model.decode_head.sampler = copy.deepcopy(loss.sampler)
    if loss.imports:
        imports = cfg.setdefault('custom_imports',
                                 dict(imports=[], allow_failed_imports=False))
        imports['imports'] = list(imports['imports']) + list(loss.imports)
    return cfg


def _weight(loss_decode: LossCfg) -> float:
    first = loss_decode[0] if isinstance(loss_decode, list) else loss_decode
    return float(first.get('loss_weight', 1.0))


def _scaled(loss_decode: LossCfg, ratio: float) -> LossCfg:
    losses = loss_decode if isinstance(loss_decode, list) else [loss_decode]
    scaled = [dict(copy.deepcopy(l),
                   loss_weight=round(_weight(l) * ratio, 6)) for l in losses]
    return scaled if isinstance(loss_decode, list) else scaled[0]
