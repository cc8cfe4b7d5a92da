"""Every shipped config loads and builds its model; each ``_arb`` one
differs from its cross-entropy namesake (mmseg's config of its name without
``_arb``, or ours beside it where mmseg has none) only in the losses."""
import glob
import json
import os
import os.path as osp

import pytest
from helpers import CONFIGS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmseg_arb  # noqa: F401
from mmseg_arb.config.switch import switch_to_arb, with_class_count_hook
from mmseg_arb.models.losses import ARBLoss
from mmseg_arb.utils.class_counts import power_class_weight

SHIPPED = sorted(
    glob.glob(osp.join(CONFIGS, '*', '*.py')) +
    glob.glob(osp.join(CONFIGS, '_base_', '*.py')))
MODEL_CONFIGS = [p for p in SHIPPED if '_base_' not in p]


def arb_heads(model):
    heads = [model.decode_head]
    if getattr(model, 'auxiliary_head', None) is not None:
        heads.append(model.auxiliary_head)
    return heads


@pytest.mark.parametrize(
    'path', MODEL_CONFIGS, ids=[osp.basename(p) for p in MODEL_CONFIGS])
def test_config_builds_model(path, tmp_path, monkeypatch):
    """Every config builds; the ``_arb`` ones train every head with ARB,
    sized by the logits (no num_classes to keep in step with the head)."""
    from mmseg.registry import MODELS
    monkeypatch.chdir(tmp_path)  # no data here, as on a fresh checkout
    cfg = Config.fromfile(path)
    init_default_scope('mmseg')
    # A loss reading its class weights from a file (the README's
    # recommendation) gets one as `class-counts --weight-power` writes it.
    weight = power_class_weight(
        range(1, cfg.model.decode_head.num_classes + 1), 0.5)
    files = {
        h.loss_decode.class_weight
        for h in (cfg.model.decode_head, cfg.model.get('auxiliary_head'))
        if h and isinstance(h.loss_decode.get('class_weight'), str)
    }
    for file in files:
        os.makedirs(osp.dirname(file), exist_ok=True)
        with open(file, 'w') as f:
            json.dump(weight, f)
    model = MODELS.build(cfg.model)
    for head in arb_heads(model) if files else ():
        assert head.loss_decode.class_weight == weight, path
    if '_arb' not in osp.basename(path):  # a cross-entropy baseline
        return
    assert cfg.custom_hooks == [dict(type='ClassCountHook')]
    heads = arb_heads(model)
    for head in heads:
        assert isinstance(head.loss_decode, ARBLoss), path
        estimator = head.loss_decode.estimator
        assert estimator.num_classes is None
        # A prior's file is found under the data root when training starts.
        assert estimator.prior_file == ('class_stats_train.json'
                                        if 'prior' in path else None)
    if 'deeplabv3plus' in path:
        assert len(heads) == 2  # auxiliary head trained with ARB too


def _twin_config(path: str) -> str:
    """The cross-entropy config of the name of ``path`` without ``_arb``:
    mmseg's, whatever ``path`` inherits (the R-101 configs inherit ours of
    R-50), or ours beside it where mmseg has none (CamVid, the demo)."""
    import mmseg
    folder, name = path.split(osp.sep)[-2:]
    twin = name.replace('_arb', '')
    theirs = osp.join(
        osp.dirname(mmseg.__file__), '.mim', 'configs', folder, twin)
    return theirs if osp.exists(theirs) else osp.join(osp.dirname(path), twin)


def _drop_scope(node):
    """Without the ``_scope_`` keys mmengine adds to ``mmseg::`` bases."""
    if isinstance(node, dict):
        return {k: _drop_scope(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return type(node)(_drop_scope(v) for v in node)
    return node


def _pop_losses(node, found):
    if isinstance(node, dict):
        if 'loss_decode' in node:
            found.append(node.pop('loss_decode'))
        for value in node.values():
            _pop_losses(value, found)
    return found


ARB_CONFIGS = [
    p for p in MODEL_CONFIGS if '_arb' in osp.basename(p) and 'prior' not in p
]


@pytest.mark.parametrize(
    'path', ARB_CONFIGS, ids=[osp.basename(p) for p in ARB_CONFIGS])
def test_config_differs_from_its_cross_entropy_twin_only_in_losses(path):
    ours = _drop_scope(Config.fromfile(path).to_dict())
    theirs = _drop_scope(Config.fromfile(_twin_config(path)).to_dict())
    imports = dict(imports=['mmseg_arb'], allow_failed_imports=False)
    assert ours.pop('custom_imports') == imports
    assert theirs.pop('custom_imports', imports) == imports  # mmseg's: none
    assert ours.pop('custom_hooks') == [dict(type='ClassCountHook')]
    our_losses = _pop_losses(ours, [])
    their_losses = _pop_losses(theirs, [])
    assert ours == theirs
    assert [l['type'] for l in our_losses] == ['ARBLoss'] * len(our_losses)
    assert [l['loss_weight'] for l in our_losses] == \
        [l['loss_weight'] for l in their_losses]


def test_base_fragment_switches_a_plain_mmseg_config(tmp_path):
    user_cfg = tmp_path / 'my_config.py'
    user_cfg.write_text("_base_ = ['mmseg::deeplabv3plus/"
                        "deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py', "
                        f"'{osp.join(CONFIGS, '_base_', 'arb.py')}']\n")
    cfg = Config.fromfile(str(user_cfg))
    assert cfg.runner_type == 'ARBRunner'
    model = switch_to_arb(cfg.model, **cfg.arb)
    losses = [
        model['decode_head']['loss_decode'],
        model['auxiliary_head']['loss_decode']
    ]
    assert [(l['type'], l['loss_weight']) for l in losses] \
        == [('ARBLoss', 1.0), ('ARBLoss', 0.4)]
    assert all('num_classes' not in l for l in losses)


def test_switch_keeps_other_losses_and_rejects_models_without_ce():
    model = dict(
        decode_head=dict(
            num_classes=5,
            loss_decode=[
                dict(
                    type='CrossEntropyLoss',
                    loss_weight=1.0,
                    avg_non_ignore=True,
                    class_weight=[1.0] * 5),
                dict(type='DiceLoss', loss_weight=3.0),
                dict(type='CrossEntropyLoss', use_sigmoid=True)
            ]))
    out = switch_to_arb(model, count_mode='ema', momentum=0.05)
    first, dice, bce = out['decode_head']['loss_decode']
    assert first == dict(
        type='ARBLoss',
        loss_weight=1.0,
        avg_non_ignore=True,
        class_weight=[1.0] * 5,
        loss_name='loss_arb',
        count_mode='ema',
        momentum=0.05)
    assert dice['type'] == 'DiceLoss' and bce['use_sigmoid']
    with pytest.raises(ValueError, match='no softmax CrossEntropyLoss'):
        switch_to_arb(dict(decode_head=dict(loss_decode=dice)))


def test_switch_and_hook_are_idempotent():
    # A config mmengine dumped after the switch holds ARBLoss and the hook
    # already; switching it again must change nothing.
    model = dict(decode_head=dict(loss_decode=dict(type='CrossEntropyLoss')))
    once = switch_to_arb(model, count_mode='ema')
    assert switch_to_arb(once, count_mode='ema') == once
    hooks = with_class_count_hook([dict(type='GradientBalanceHook')])
    assert hooks == [
        dict(type='GradientBalanceHook'),
        dict(type='ClassCountHook')
    ]
    assert with_class_count_hook(hooks) == hooks
    assert with_class_count_hook(None) == [dict(type='ClassCountHook')]
