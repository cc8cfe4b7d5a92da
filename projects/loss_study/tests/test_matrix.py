"""The study's families as configs: the same tuning budget each, every
configuration builds into the model a user would get, the weights are what
they claim."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import HOOKS, MODELS

import mmseg_arb  # noqa: F401
from mmseg_arb.models.losses import ARBLoss
from projects.loss_study.loss_study.matrix import (BUDGET, STUDY_IMPORTS,
                                                   apply_loss, enet_weights,
                                                   study_families)

ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
DEMO_CE = osp.join(
    ROOT, 'configs', 'demo', 'deeplabv3plus_r18-tiny_1xb8-'
    '400iter_synthetic-ade20k-128x128.py')
COUNTS = [5000.0, 2000.0, 700.0, 0.0] + [100.0] * 20


def test_enet_weights_keep_a_training_pixel_at_weight_one():
    """Scaled as the product's ``power_class_weight`` (tested with it)."""
    counts = np.array(COUNTS)
    enet = np.array(enet_weights(COUNTS))
    assert enet[3] == 0  # no pixels, no weight
    assert (counts * enet).sum() / counts.sum() == pytest.approx(1, rel=1e-5)
    f = counts[[0, 4]] / counts.sum()
    assert enet[0] / enet[4] == pytest.approx(
        np.log(1.02 + f[1]) / np.log(1.02 + f[0]), rel=1e-4)


def test_every_family_gets_the_same_budget(tmp_path):
    stats = tmp_path / 'class_stats_train.json'
    stats.write_text('{"counts": %s}' % [c + 1 for c in COUNTS])
    families = study_families(COUNTS, str(stats))
    assert [f.key for f in families] == [
        'ce', 'arb', 'class-weights', 'logit-adjustment', 'blv', 'focal',
        'dice', 'arb-weights', 'ce-tta'
    ]
    assert len(families[0].losses) == 1
    assert {len(f.losses) for f in families[1:]} == {BUDGET}
    keys = [l.key for f in families for l in f.losses]
    assert len(set(keys)) == len(keys)
    la = {l.key: l.arb for l in families[3].losses}
    assert la['arb-prior-tau1'] == dict(
        count_mode='prior', class_counts=str(stats))
    assert 'Balanced Softmax' in families[3].losses[2].name


def test_every_configuration_builds_the_model_it_describes(tmp_path):
    stats = tmp_path / 'class_stats_train.json'
    stats.write_text('{"counts": %s}' % [c + 1 for c in COUNTS])
    base = Config.fromfile(DEMO_CE)
    init_default_scope('mmseg')
    for family in study_families(COUNTS, str(stats)):
        for loss in family.losses:
            cfg = apply_loss(base, loss)
            for module in cfg.custom_imports.imports:
                __import__(module)
            model = MODELS.build(cfg.model)
            heads = (model.decode_head.loss_decode,
                     model.auxiliary_head.loss_decode)
            first = [
                h[0] if isinstance(h, torch.nn.ModuleList) else h
                for h in heads
            ]
            assert first[0].loss_weight == 1.0, loss.key
            assert first[1].loss_weight == pytest.approx(0.4), loss.key
            assert type(first[0]) is type(first[1])
            # A test-time configuration: cross-entropy with its hook.
            assert (loss.test_time in (cfg.get('custom_hooks') or [])) \
                == bool(loss.test_time), loss.key
            if loss.test_time:
                assert HOOKS.build(loss.test_time).tau == \
                    loss.test_time['tau']
            if loss.arb:
                assert isinstance(first[0], ARBLoss)
                assert {'type': 'ClassCountHook'} in cfg.custom_hooks
                assert first[0].estimator.tau == loss.arb.get('tau', 1.0)
                continue
            # One forward and backward pass of the loss on a batch.
            logits = torch.randn(2, 24, 8, 8, requires_grad=True)
            label = torch.randint(24, (2, 8, 8))
            label[0, 0] = 255
            value = first[0](logits, label, ignore_index=255)
            value.mean().backward()
            assert torch.isfinite(logits.grad).all(), loss.key


def test_the_weighted_arb_family_builds_arb_with_weight_power(tmp_path):
    """Each 'arb-weights' configuration, written into the config and built
    by mmseg's registry, is a cumulative ARBLoss on both heads with its
    tau and weight_power; the weights reach the loss value."""
    stats = tmp_path / 'class_stats_train.json'
    stats.write_text('{"counts": %s}' % [c + 1 for c in COUNTS])
    family, = (
        f for f in study_families(COUNTS, str(stats))
        if f.key == 'arb-weights')
    assert [l.arb['weight_power'] for l in family.losses] == [0.25, 0.5] * 2
    assert [l.arb.get('tau', 1.0) for l in family.losses] == [0.5, 0.5, 1, 1]
    base = Config.fromfile(DEMO_CE)
    init_default_scope('mmseg')
    for loss in family.losses:
        cfg = apply_loss(base, loss)
        model = MODELS.build(cfg.model)
        for head in (model.decode_head, model.auxiliary_head):
            arb = head.loss_decode
            assert isinstance(arb, ARBLoss), loss.key
            assert arb.estimator.count_mode == 'cumulative'
            assert arb.estimator.tau == loss.arb.get('tau', 1.0)
            assert arb.estimator.weight_power == loss.arb['weight_power']
        # The same loss without weight_power gives another value on a
        # batch with unequal classes: the weights are applied.
        arb = model.decode_head.loss_decode
        plain = MODELS.build(
            dict(cfg.model.decode_head.loss_decode, weight_power=0.0))
        torch.manual_seed(0)
        logits = torch.randn(2, 24, 8, 8)
        label = torch.zeros(2, 8, 8, dtype=torch.long)
        label[:, :2] = torch.randint(1, 24, (2, 2, 8))
        weighted = arb(logits, label, ignore_index=255)
        assert torch.isfinite(weighted).all(), loss.key
        assert not torch.allclose(
            weighted, plain(logits, label, ignore_index=255)), loss.key


def test_sum_of_losses_scales_each_for_the_auxiliary_head(tmp_path):
    stats = tmp_path / 'class_stats_train.json'
    stats.write_text('{"counts": %s}' % [c + 1 for c in COUNTS])
    dice = next(
        f for f in study_families(COUNTS, str(stats)) if f.key == 'dice')
    cfg = apply_loss(Config.fromfile(DEMO_CE), dice.losses[-1])
    assert [l['loss_weight'] for l in cfg.model.decode_head.loss_decode] \
        == [1.0, 3.0]
    assert [l['loss_weight'] for l in cfg.model.auxiliary_head.loss_decode] \
        == [pytest.approx(0.4), pytest.approx(1.2)]


def test_study_losses_are_imported_by_a_config_without_custom_imports(
        tmp_path):
    """A plain mmseg config has no custom_imports: the study's losses (and
    nothing twice) get imported all the same."""
    stats = tmp_path / 'class_stats_train.json'
    stats.write_text('{"counts": %s}' % [c + 1 for c in COUNTS])
    blv = next(
        f for f in study_families(COUNTS, str(stats))
        if f.key == 'blv').losses[0]
    base = Config.fromfile(DEMO_CE)
    base.custom_imports = None
    cfg = apply_loss(base, blv)
    assert cfg.custom_imports['imports'] == [
        'projects.loss_study.loss_study.losses'
    ]
    twice = apply_loss(cfg, blv)
    assert twice.custom_imports['imports'] == list(STUDY_IMPORTS)
