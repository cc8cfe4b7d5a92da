"""The loss families the study compares and the configurations each is
tuned over, each configuration as a user writes it in an mmseg config.

A :class:`StudyLoss` is one configuration: the decode head's
``loss_decode`` (a dict, or a list of dicts for a sum of losses), plus what
else the user adds for it: imports. :func:`apply_loss` writes it into the
study's cross-entropy config; the auxiliary head gets the same losses at
its own weight (0.4 in mmseg's DeepLabV3+). ARB configurations are made as
users make them: the config's cross-entropy switched by
:func:`switch_to_arb` (what the ``_base_`` switch runs), plus
``ClassCountHook``. A test-time configuration (``ce-tta``) trains nothing:
it is cross-entropy's checkpoint evaluated with a hook in
``custom_hooks`` (``test_time``).

A :class:`Family` is a method with its tuning grid. Every family but the
cross-entropy baseline gets the same number of configurations
(:data:`BUDGET`), so that no method wins by being tuned more.
"""
import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from mmseg_arb.config.switch import switch_to_arb, with_class_count_hook
from mmseg_arb.counting import COUNT_MODES
from mmseg_arb.utils.class_counts import power_class_weight, scale_class_weight

LossCfg = Union[Dict, List[Dict]]
BUDGET = 4  # configurations per tuned family
STUDY_IMPORTS = ('projects.loss_study.loss_study.losses', )
TEST_TIME_FAMILY = 'ce-tta'  # evaluations of CE's checkpoints


@dataclass(frozen=True)
class StudyLoss:
    """One configuration of the study.

    Args:
        key: Short name, used on the command line and as the run folder.
        name: Name in the tables and plots.
        family: Key of its :class:`Family`.
        loss_decode: The decode head's ``loss_decode`` as the user writes
            it (loss weights included); None for ARB configurations.
        shown: The same, as the tables show it (long lists elided).
        imports: Modules ``custom_imports`` must import besides
            ``mmseg_arb``.
        note: One line on why it is configured as it is.
        arb: ``ARBLoss`` arguments that :func:`switch_to_arb` gives the
            config's cross-entropy losses (ARB configurations only).
        test_time: The hook (a ``custom_hooks`` entry) that a
            cross-entropy checkpoint is evaluated with (test-time
            configurations only: they train nothing).
    """
    key: str
    name: str
    family: str
    loss_decode: Optional[LossCfg]
    shown: str
    imports: Sequence[str] = ()
    note: str = ''
    arb: Dict = field(default_factory=dict)
    test_time: Dict = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """A method and its tuning grid.

    Args:
        key: Short name (``ce``, ``arb``, ...).
        name: Name in the tables.
        losses: Its configurations, in grid order (ties in the selection
            go to the earlier one).
        grid: The grid in words, for the report.
    """
    key: str
    name: str
    losses: Sequence[StudyLoss]
    grid: str


def enet_weights(counts: Sequence[float], c: float = 1.02) -> List[float]:
    """ENet's class weights ``1 / ln(c + f_c)`` (Paszke et al. 2016; ``f``
    the pixel share), scaled as
    :func:`~mmseg_arb.utils.class_counts.power_class_weight`. They are
    bounded by ``1 / ln(c)`` (about 50), so a very rare class gets far less
    than inverse frequency would give it."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    raw = np.zeros_like(counts)
    raw[present] = 1.0 / np.log(c + counts[present] / counts.sum())
    return scale_class_weight(counts, raw)


def _ce(**extra) -> Dict:
    return dict(
        type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, **extra)


def _fmt(x: float) -> str:
    return f'{x:g}'


def study_families(
    counts: Sequence[float],
    class_stats: str,
    weight_taus: Sequence[float] = (0.5, 1.0)) -> List[Family]:
    """The study's families and grids, from the training split's pixel
    ``counts`` (class weights, alphas) and its statistics file
    ``class_stats`` (ARB's ``prior``, BLV's counts); ``weight_taus``: the
    ``tau`` values of ARB + count-driven class weights.

    Why these grids (each of :data:`BUDGET` configurations):

    * ARB: two count modes x ``tau`` in {0.5, 1}. ``batch`` is the paper's
      loss, ``cumulative`` its global class count; ``prior`` is a family
      of its own (Balanced Softmax), and ``ema`` differs from
      ``cumulative`` only by forgetting old batches.
    * Class-weighted CE: ``n^-p`` for p in {0.25, 0.5, 1} and ENet's
      ``1 / ln(1.02 + f)``, the weights mmseg users are pointed to.
    * Logit adjustment: ARB ``prior`` (fixed training counts) with ``tau``
      in {0.5, 0.75, 1, 1.5}; ``tau=1`` is Balanced Softmax. The fourth
      value (0.75) refines the grid where the old study's optimum was.
    * BLV: sigma in {0.5, 1, 2, 4}; the public code's default is 4 and the
      clamp to [-1, 1] saturates ``|delta|`` above that.
    * Focal: softmax focal loss, ``gamma`` in {1, 2} x per-class ``alpha``
      ``n^-p`` for p in {0.25, 0.5}.
    * Dice: the class-averaged softmax Dice alone, and CE + Dice at Dice
      weights {0.5, 1, 3} (3 is mmseg's shipped ce-1.0-dice-3.0 ratio).
    * ARB + count-driven class weights: ``cumulative`` counts,
      ``weight_taus`` x ``weight_power`` in {0.25, 0.5}: ``tau`` in
      {0.5, 1} on generated data; {0, 0.5} on CamVid
      (``projects/loss_study/camvid/PREREGISTRATION.md``: it holds the
      generated study's after-the-fact ``tau=0, p=0.5``).
    * Test-time logit adjustment of CE (``ce-tta``): cross-entropy's own
      checkpoints evaluated with ``TestTimeLogitAdjustHook`` (logits
      shifted by ``-tau * log(n / sum n)`` before the argmax), ``tau`` in
      {0.25, 0.5, 0.75, 1}, ascending (ties go to the smaller ``tau``).
    """
    families = [
        Family('ce', 'Cross-entropy', [
            StudyLoss(
                'ce',
                'CE',
                'ce',
                _ce(),
                'CrossEntropyLoss()',
                note='the baseline, not tuned')
        ], 'baseline')
    ]

    arb = [
        arb_study_loss(m, class_stats, tau, family='arb')
        for m in ('batch', 'cumulative') for tau in (0.5, 1.0)
    ]
    families.append(
        Family('arb', 'ARB-Loss', arb,
               'count_mode in {batch, cumulative} x tau in '
               '{0.5, 1}'))

    weighted = []
    for p in (0.25, 0.5, 1.0):
        w = power_class_weight(counts, p)
        weighted.append(
            StudyLoss(
                f'cw-p{_fmt(p)}',
                f'CE + weights n^-{_fmt(p)}',
                'class-weights',
                _ce(class_weight=w, reduction='none'),
                f'CrossEntropyLoss(class_weight=n^-{_fmt(p)}, '
                "reduction='none')",
                note=f'max/min weight {_ratio(w):.0f}'))
    w = enet_weights(counts)
    weighted.append(
        StudyLoss(
            'cw-enet',
            'CE + ENet weights',
            'class-weights',
            _ce(class_weight=w, reduction='none'),
            "CrossEntropyLoss(class_weight=1/ln(1.02+f), reduction='none')",
            note=f'max/min weight {_ratio(w):.0f}'))
    families.append(
        Family(
            'class-weights', 'Class-weighted CE', weighted,
            "n^-p for p in {0.25, 0.5, 1}, ENet 1/ln(1.02+f); weights scaled "
            "to a mean of 1 per training pixel; reduction='none' because "
            "mmseg 1.2.2's weighted mean fails on ignored pixels "
            '(open-mmlab/mmsegmentation#3734)'))

    families.append(
        Family(
            'logit-adjustment', 'Logit adjustment', [
                arb_study_loss(
                    'prior', class_stats, tau, family='logit-adjustment')
                for tau in (0.5, 0.75, 1.0, 1.5)
            ], 'ARB prior (training counts) with tau in {0.5, 0.75, 1, 1.5}; '
            'tau=1 is Balanced Softmax'))

    families.append(
        Family('blv', 'BLV', [
            StudyLoss(
                f'blv-s{_fmt(s)}',
                f'BLV sigma={_fmt(s)}',
                'blv',
                dict(
                    type='BLVLoss',
                    class_counts=class_stats,
                    sigma=s,
                    loss_weight=1.0),
                f'BLVLoss(sigma={_fmt(s)})',
                imports=STUDY_IMPORTS,
                note='training-only logit variation '
                '(loss_study/blv_loss.py)') for s in (0.5, 1.0, 2.0, 4.0)
        ], 'sigma in {0.5, 1, 2, 4}'))

    focal = []
    for gamma in (1.0, 2.0):
        for p in (0.25, 0.5):
            focal.append(
                StudyLoss(
                    f'focal-g{_fmt(gamma)}-p{_fmt(p)}',
                    f'Focal gamma={_fmt(gamma)}, alpha n^-{_fmt(p)}',
                    'focal',
                    dict(
                        type='SoftmaxFocalLoss',
                        gamma=gamma,
                        alpha=power_class_weight(counts, p),
                        loss_weight=1.0),
                    f'SoftmaxFocalLoss(gamma={_fmt(gamma)}, '
                    f'alpha=n^-{_fmt(p)})',
                    imports=STUDY_IMPORTS,
                    note='softmax focal loss (loss_study/focal_loss.py)'))
    families.append(
        Family('focal', 'Focal', focal,
               'gamma in {1, 2} x alpha n^-p, p in {0.25, 0.5}'))

    dice = [
        StudyLoss(
            'dice',
            'Dice (per class)',
            'dice',
            dict(type='ClassAveragedDiceLoss', loss_weight=1.0),
            'ClassAveragedDiceLoss()',
            imports=STUDY_IMPORTS,
            note='softmax Dice averaged over classes '
            '(loss_study/dice_loss.py)')
    ]
    for weight in (0.5, 1.0, 3.0):
        dice.append(
            StudyLoss(
                f'ce+dice-w{_fmt(weight)}',
                f'CE + Dice x{_fmt(weight)}',
                'dice', [
                    _ce(),
                    dict(type='ClassAveragedDiceLoss', loss_weight=weight)
                ], f'[CrossEntropyLoss(), ClassAveragedDiceLoss(loss_weight='
                f'{_fmt(weight)})]',
                imports=STUDY_IMPORTS))
    families.append(
        Family('dice', 'Dice', dice,
               'Dice alone; CE + Dice at weights {0.5, 1, 3}'))

    families.append(
        Family(
            'arb-weights', 'ARB + count-driven class weights', [
                arb_study_loss(
                    'cumulative',
                    class_stats,
                    tau,
                    weight_power=p,
                    family='arb-weights') for tau in weight_taus
                for p in (0.25, 0.5)
            ], 'cumulative counts, tau in '
            f"{{{', '.join(map(_fmt, weight_taus))}}}"
            ' x weight_power in {0.25, 0.5}'))

    tta = [
        StudyLoss(
            f'ce-tta-t{_fmt(tau)}',
            f'CE + test-time adjustment tau={_fmt(tau)}',
            TEST_TIME_FAMILY,
            loss_decode=None,
            shown='CrossEntropyLoss(); at evaluation '
            f'TestTimeLogitAdjustHook(tau={_fmt(tau)})',
            note="CE's checkpoint of the same seed; trains nothing",
            test_time=dict(
                type='TestTimeLogitAdjustHook',
                tau=tau,
                class_counts=class_stats)) for tau in (0.25, 0.5, 0.75, 1.0)
    ]
    families.append(
        Family(
            TEST_TIME_FAMILY, 'Test-time logit adjustment of CE', tta,
            "CE's checkpoints evaluated with logits - tau log(n / sum n), "
            'tau in {0.25, 0.5, 0.75, 1}; trains nothing but CE at the '
            'tuning seeds'))
    for f in families[1:]:
        assert len(f.losses) == BUDGET, f.key
    return families


def _ratio(weights: Sequence[float]) -> float:
    present = [w for w in weights if w > 0]
    return max(present) / min(present)


def arb_study_loss(count_mode: str,
                   class_stats: Optional[str] = None,
                   tau: float = 1.0,
                   weight_power: float = 0.0,
                   family: str = 'arb') -> StudyLoss:
    """The study's configuration of ARB-Loss (a :class:`StudyLoss`, not the
    loss: that is ``mmseg_arb.models.losses.arb_loss``) in ``count_mode``
    (the prior from ``class_stats``) with exponent ``tau`` and, if not 0,
    count-driven class weights ``n^-weight_power``, as the configs and
    README of ``mmseg_arb`` write it."""
    if count_mode not in COUNT_MODES:
        raise ValueError(f'count_mode must be one of {COUNT_MODES}, '
                         f'got {count_mode!r}')
    settings = dict(count_mode=count_mode)
    if count_mode == 'prior':
        settings['class_counts'] = class_stats
    if tau != 1.0:
        settings['tau'] = tau
    if weight_power:
        settings['weight_power'] = weight_power
    shown = ', '.join(f'{k}={v!r}' for k, v in settings.items()
                      if k != 'class_counts')
    if count_mode == 'prior':
        shown += ", class_counts='class_stats_train.json'"
    key = f'arb-{count_mode}-tau{_fmt(tau)}' + (f'-p{_fmt(weight_power)}'
                                                if weight_power else '')
    name = f'ARB {count_mode} tau={_fmt(tau)}' + (f' p={_fmt(weight_power)}'
                                                  if weight_power else '')
    if count_mode == 'prior' and tau == 1.0:
        name += ' (Balanced Softmax)'
    return StudyLoss(
        key, name, family, None, f'ARBLoss({shown})', arb=settings)


def apply_loss(cfg, loss: StudyLoss):
    """A copy of ``cfg`` whose heads train with ``loss``.

    The auxiliary head (if any) gets every loss of the configuration with
    its weight scaled by the ratio of the config's auxiliary to decode loss
    weights. An ARB configuration switches the config's cross-entropy
    losses instead. A test-time configuration keeps ``cfg``'s losses (the
    study's cross-entropy) and adds its hook to ``custom_hooks``, for the
    evaluation of a checkpoint trained with them.
    """
    cfg = copy.deepcopy(cfg)
    if loss.test_time:
        cfg.custom_hooks = list(cfg.get('custom_hooks')
                                or []) + [dict(loss.test_time)]
        return cfg
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
    if loss.imports:
        add_imports(cfg, list(loss.imports))
    return cfg


def add_imports(cfg, modules) -> None:
    """Add ``modules`` to ``cfg``'s ``custom_imports`` (made if missing: a
    plain mmseg config has none; ``Config.setdefault`` would hand back a
    copy, losing the edit)."""
    imports = dict(
        cfg.get('custom_imports')
        or dict(imports=[], allow_failed_imports=False))
    imports['imports'] = list(imports['imports']) + [
        m for m in modules if m not in imports['imports']
    ]
    cfg.custom_imports = imports


def _weight(loss_decode: LossCfg) -> float:
    first = loss_decode[0] if isinstance(loss_decode, list) else loss_decode
    return float(first.get('loss_weight', 1.0))


def _scaled(loss_decode: LossCfg, ratio: float) -> LossCfg:
    losses = loss_decode if isinstance(loss_decode, list) else [loss_decode]
    scaled = [
        dict(copy.deepcopy(l), loss_weight=round(_weight(l) * ratio, 6))
        for l in losses
    ]
    return scaled if isinstance(loss_decode, list) else scaled[0]
