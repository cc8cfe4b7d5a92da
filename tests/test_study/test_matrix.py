"""The study's losses as configs: each builds into the model a user would
get, weights and helpers compute what they claim."""
import os.path as osp

import numpy as np
import pytest
import torch
from helpers import CONFIGS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_arb  # noqa: F401
from mmseg_arb.models.losses import ARBLoss
from mmseg_arb.study.focal_loss import OneHotFocalLoss
from mmseg_arb.study.matrix import (COUNT_MODES, apply_loss, arb_loss,
                                    inverse_frequency_weights, mmseg_losses)

DEMO_CE = osp.join(CONFIGS, 'demo', 'deeplabv3plus_r18-tiny_1xb8-400iter_'
                   'synthetic-ade20k-128x128.py')
COUNTS = [5000.0, 2000.0, 700.0, 0.0] + [100.0] * 20


def all_losses(stats):
    return mmseg_losses(inverse_frequency_weights(COUNTS), 800) + [
        arb_loss(m, stats) for m in COUNT_MODES] + [arb_loss('ema', stats,
                                                             0.5)]


def test_inverse_frequency_weights():
    weights = np.array(inverse_frequency_weights(COUNTS))
    counts = np.array(COUNTS)
    share = counts / counts.sum()
    assert weights[3] == 0  # no pixels, no weight
    present = counts > 0
    # Each present class carries the same share of the pixels' weight, and
    # a pixel weighs 1 on average, as without weights.
    np.testing.assert_allclose((share * weights)[present],
                               1 / present.sum(), rtol=1e-5)
    assert (share * weights).sum() == pytest.approx(1, rel=1e-5)


def test_every_row_builds_the_model_it_describes(tmp_path):
    stats = tmp_path / 'class_stats_train.json'
    stats.write_text('{"counts": %s}' % [c + 1 for c in COUNTS])
    base = Config.fromfile(DEMO_CE)
    init_default_scope('mmseg')
    keys = []
    for loss in all_losses(str(stats)):
        cfg = apply_loss(base, loss)
        for module in cfg.custom_imports.imports:
            __import__(module)
        model = MODELS.build(cfg.model)
        heads = (model.decode_head.loss_decode,
                 model.auxiliary_head.loss_decode)
        first = [h[0] if isinstance(h, torch.nn.ModuleList) else h
                 for h in heads]
        assert first[0].loss_weight == 1.0, loss.key
        assert first[1].loss_weight == pytest.approx(0.4), loss.key
        assert type(first[0]) is type(first[1])
        has_sampler = model.decode_head.sampler is not None
        assert has_sampler == (loss.key == 'ohem'), loss.key
        assert model.auxiliary_head.sampler is None
        if loss.family == 'arb':
            assert isinstance(first[0], ARBLoss)
            assert {'type': 'ClassCountHook'} in cfg.custom_hooks
            assert first[0].estimator.tau == loss.arb.get('tau', 1.0)
        keys.append(loss.key)
    assert len(set(keys)) == len(keys)
    assert 'arb-ema-tau0.5' in keys


def test_sum_of_losses_scales_each_for_the_auxiliary_head():
    ce_dice = next(l for l in mmseg_losses([1.0], 1) if l.key == 'ce+dice')
    cfg = apply_loss(Config.fromfile(DEMO_CE), ce_dice)
    assert [l['loss_weight'] for l in cfg.model.decode_head.loss_decode] \
        == [1.0, 3.0]
    assert [l['loss_weight'] for l in cfg.model.auxiliary_head.loss_decode] \
        == [pytest.approx(0.4), pytest.approx(1.2)]


def test_one_hot_focal_loss_is_the_sigmoid_focal_loss_of_its_paper():
    """FL = -alpha_t (1 - p_t)^gamma log p_t per (pixel, class), ignored
    pixels 0, averaged over all pairs: mmseg's GPU path, here on CPU."""
    g = torch.Generator().manual_seed(0)
    c, gamma, alpha = 5, 2.0, 0.25
    logits = torch.randn(2, c, 4, 3, generator=g, dtype=torch.float64)
    label = torch.randint(c, (2, 4, 3), generator=g)
    label[0, 0, :2] = 255
    loss = OneHotFocalLoss(gamma=gamma, alpha=alpha)(logits, label)

    p = logits.sigmoid().movedim(1, -1).reshape(-1, c)
    y = label.reshape(-1)
    valid = y != 255
    t = torch.zeros_like(p)
    t[valid, y[valid]] = 1
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    expected = (-alpha_t * (1 - p_t)**gamma * p_t.log() *
                valid[:, None]).mean()
    torch.testing.assert_close(loss, expected)
    # mmseg's FocalLoss itself cannot take these labels on CPU.
    with pytest.raises(RuntimeError, match='must match the size'):
        MODELS.build(dict(type='FocalLoss', gamma=gamma,
                          alpha=alpha))(logits, label)
