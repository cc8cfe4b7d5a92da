"""The study's own losses against their formulas, written out here
independently, and built through mmseg's registry as the configs do."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import projects.loss_study.loss_study.losses  # noqa: F401
from projects.loss_study.loss_study.blv_loss import blv_scale

COUNTS = [6000.0, 3000.0, 800.0, 150.0, 50.0]


def batch(seed=0, c=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, c, 4, 3, generator=g, dtype=torch.float64)
    label = torch.randint(c, (2, 4, 3), generator=g)
    label[0, 0, :2] = 255
    return logits, label


def build(cfg):
    init_default_scope('mmseg')
    return MODELS.build(cfg)


def test_blv_scale_is_normalised_negative_log_frequency():
    total = sum(COUNTS)
    expected = [math.log(total / n) for n in COUNTS]
    expected = [e / max(expected) for e in expected]
    torch.testing.assert_close(
        blv_scale(torch.tensor(COUNTS)),
        torch.tensor(expected, dtype=torch.float64))
    # A class without pixels counts as the rarest; equal counts: the same
    # variation for every class; a class with every pixel: none.
    assert blv_scale(torch.tensor([10.0, 0.0, 1.0]))[1] == 1
    assert blv_scale(torch.tensor([5.0, 5.0])).tolist() == [1, 1]
    assert blv_scale(torch.tensor([5.0, 0.0])).tolist() == [0, 1]
    with pytest.raises(ValueError, match='some pixels'):
        blv_scale(torch.zeros(3))


def test_blv_loss_is_cross_entropy_on_varied_logits():
    logits, label = batch()
    sigma = 2.0
    loss_fn = build(dict(type='BLVLoss', class_counts=COUNTS, sigma=sigma))
    torch.manual_seed(7)
    loss = loss_fn(logits, label)

    torch.manual_seed(7)  # the same draw, by the paper's formula
    delta = (torch.randn(logits.shape, dtype=logits.dtype) * sigma).clamp(
        -1, 1)
    total = sum(COUNTS)
    rarity = torch.tensor([math.log(total) - math.log(n) for n in COUNTS],
                          dtype=logits.dtype)
    shifted = logits + delta.abs() * (rarity / rarity.max()).view(1, -1, 1, 1)
    per_pixel = F.cross_entropy(
        shifted, label, ignore_index=255, reduction='none')
    torch.testing.assert_close(loss, per_pixel.sum() / label.numel())
    # The variation only raises non-target logits of rarer classes; it is
    # bounded by one logit unit.
    assert (shifted - logits).max() <= 1 + 1e-9
    assert (shifted - logits).min() >= 0
    assert loss_fn.loss_name == 'loss_blv'
    with pytest.raises(ValueError, match='5 classes'):
        loss_fn(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2).long())


def test_softmax_focal_loss_with_per_class_alpha():
    logits, label = batch(1)
    alpha = [0.5, 1.0, 2.0, 3.0, 4.0]
    loss = build(dict(type='SoftmaxFocalLoss', gamma=2.0, alpha=alpha))(logits,
                                                                        label)
    p = logits.softmax(1).movedim(1, -1).reshape(-1, 5)
    y = label.reshape(-1)
    total = 0.0
    for i in range(len(y)):
        if y[i] == 255:
            continue
        p_t = p[i, y[i]]
        total += -alpha[y[i]] * (1 - p_t)**2 * torch.log(p_t)
    torch.testing.assert_close(loss, total / len(y))
    # gamma 0 without alpha is mmseg's cross-entropy.
    ce = build(dict(type='CrossEntropyLoss'))(logits, label, ignore_index=255)
    torch.testing.assert_close(
        build(dict(type='SoftmaxFocalLoss', gamma=0.0))(logits, label), ce)


def test_class_averaged_dice_loss():
    logits, label = batch(2)
    loss = build(dict(type='ClassAveragedDiceLoss', smooth=1.0))(logits, label)
    p = logits.softmax(1).movedim(1, -1).reshape(-1, 5)
    y = label.reshape(-1)
    keep = y != 255
    p, y = p[keep], y[keep]
    dices = []
    for c in range(5):
        inter = p[y == c, c].sum()
        dices.append((2 * inter + 1) / (p[:, c].sum() + (y == c).sum() + 1))
    torch.testing.assert_close(loss, 1 - torch.stack(dices).mean())
    # Perfect, confident predictions give (nearly) 0.
    perfect = F.one_hot(label.clamp(max=4), 5).movedim(-1, 1) * 50.0
    assert build(dict(type='ClassAveragedDiceLoss'))(perfect.double(),
                                                     label) < 1e-6


@pytest.mark.parametrize(
    'cfg', [
        dict(type='BLVLoss', class_counts=COUNTS),
        dict(type='SoftmaxFocalLoss', alpha=[1.0] * 5),
        dict(type='ClassAveragedDiceLoss')
    ],
    ids=['blv', 'focal', 'dice'])
def test_labels_outside_the_classes_are_refused(cfg):
    """A label that is neither a class nor ignore_index (a wrong
    reduce_zero_label, a head with too few classes) is named with the fix,
    not indexed out of range or left out of the loss."""
    logits, label = batch()
    label[1, 0, 0] = 5  # five classes: 0 to 4
    label[1, 0, 1] = -1
    with pytest.raises(
            ValueError,
            match=r'labels \[-1, 5\] are outside '
            r'\[0, 5\) and are not ignore_index=255'):
        build(cfg)(logits, label, ignore_index=255)
    label[1, 0, :2] = 255  # ignored, as before
    assert torch.isfinite(build(cfg)(logits, label, ignore_index=255))
