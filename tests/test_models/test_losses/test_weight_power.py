"""Count-driven class weights: ``ARBLoss(weight_power=p)`` weights each
pixel of class ``y`` by ``n_y^-p`` from the same counts as the shift."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmseg.models.losses import CrossEntropyLoss
from reference import naive_arb_family_loss, naive_counts

from mmseg_arb.counting import count_class_weight
from mmseg_arb.models.losses import ARBLoss, arb_loss

C = 7


def batch(seed, ignored=True, size=12):
    g = torch.Generator().manual_seed(seed)
    # Long-tailed: class c with probability ~ 1 / (c + 1)^2.
    probs = 1.0 / torch.arange(1, C + 1, dtype=torch.float64)**2
    label = torch.multinomial(
        probs, 2 * size * size, replacement=True,
        generator=g).view(2, size, size)
    if ignored:
        label[:, :2] = 255
    logits = torch.randn(2, C, size, size, generator=g, dtype=torch.float64)
    return (logits * 3).float().requires_grad_(), label


PRIOR = [5000.0, 1200.0, 600.0, 90.0, 40.0, 7.0, 2.0]


@pytest.mark.parametrize('tau', [0.0, 0.5, 1.0])
@pytest.mark.parametrize('power', [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize('mode', ['prior', 'batch'])
@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_every_tau_and_power_matches_the_float64_formula(
        tau, power, mode, avg_non_ignore):
    logits, label = batch(int(10 * tau + 100 * power))
    prior = dict(class_counts=PRIOR) if mode == 'prior' else {}
    loss_fn = ARBLoss(
        count_mode=mode,
        tau=tau,
        weight_power=power,
        avg_non_ignore=avg_non_ignore,
        **prior)
    loss = loss_fn(logits, label)
    loss.backward()
    counts = PRIOR if mode == 'prior' else naive_counts(label, C)
    z = logits.detach().double().requires_grad_()
    want = naive_arb_family_loss(
        z,
        label,
        counts,
        tau=tau,
        weight_power=power,
        max_weight_ratio=1000.0,
        avg_non_ignore=avg_non_ignore)
    want.backward()
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        logits.grad.double(), z.grad, rtol=1e-4, atol=1e-7)


def test_tau_zero_power_one_prior_is_inverse_frequency_cross_entropy():
    logits, label = batch(1)
    loss_fn = ARBLoss(
        count_mode='prior',
        class_counts=PRIOR,
        tau=0.0,
        weight_power=1.0,
        max_weight_ratio=1e4,
        avg_non_ignore=True)
    inverse = 1.0 / torch.tensor(PRIOR)
    # PyTorch's weighted mean: sum of w l over the labelled pixels' w.
    want = F.cross_entropy(logits, label, weight=inverse, ignore_index=255)
    torch.testing.assert_close(loss_fn(logits, label), want)
    # mmseg's own class-weighted CrossEntropyLoss, on labels it can take
    # (its class-weighted mean fails on ignored pixels).
    logits, label = batch(2, ignored=False)
    mmseg_ce = CrossEntropyLoss(
        class_weight=inverse.tolist(), avg_non_ignore=True)
    torch.testing.assert_close(loss_fn(logits, label), mmseg_ce(logits, label))


def test_tau_one_power_zero_is_the_paper_exactly():
    logits, label = batch(3)
    paper = ARBLoss()(logits, label)
    assert torch.equal(ARBLoss(weight_power=0.0)(logits, label), paper)
    want = naive_arb_family_loss(logits.detach(), label,
                                 naive_counts(label, C))
    torch.testing.assert_close(paper.double(), want)


@pytest.mark.parametrize(
    'counts,batch_counts',
    [
        ([1e9, 1.0, 0.0, 3.0], [5e5, 1, 0, 2]),  # one pixel, an absent class
        ([0.0, 0.0, 0.0, 0.0], [0, 0, 0, 0]),  # nothing counted yet
        ([10.0, 20.0, 30.0, 40.0], [0, 0, 0, 0]),  # nothing labelled here
        ([1.0, 1.0, 1.0, 1.0], [3, 0, 0, 1]),
        ([1e-300, 1e300, 1.0, 0.0], [1, 1, 1, 0]),
    ])
# Tiny powers with loose bounds: (n / n_max)^-p of a zero count is inf,
# and 0 x inf would make every weight NaN if the bound did not cap it.
@pytest.mark.parametrize('power', [0.001, 0.25, 1.0, 4.0])
@pytest.mark.parametrize('ratio', [1.0, 100.0, 1000.0, 1e30])
def test_weights_are_bounded_finite_and_mean_one(counts, batch_counts, power,
                                                 ratio):
    w = count_class_weight(
        torch.tensor(counts, dtype=torch.float64), torch.tensor(batch_counts),
        0.0, power, ratio)
    assert w.dtype == torch.float32 and torch.isfinite(w).all()
    assert (w > 0).all()
    assert w.max() / w.min() <= ratio * (1 + 1e-5)
    b = torch.tensor(batch_counts, dtype=torch.float64)
    if b.sum() > 0 and max(counts) > 0:
        assert math.isclose(
            (b * w.double()).sum() / b.sum(), 1.0, rel_tol=1e-5)


def test_the_bound_raises_small_counts_only():
    w = count_class_weight(
        torch.tensor([1e6, 1e4, 1.0], dtype=torch.float64),
        torch.tensor([1, 1, 1]), 0.0, 0.5, 100.0)
    # 1e6 : 1e4 is a weight ratio of 10, kept; 1e6 : 1 would be 1000,
    # capped at 100.
    assert math.isclose(w[1] / w[0], 10.0, rel_tol=1e-6)
    assert math.isclose(w[2] / w[0], 100.0, rel_tol=1e-6)


def test_power_zero_weights_are_all_one():
    w = count_class_weight(
        torch.tensor([5.0, 0.0, 1e9]), torch.tensor([1, 0, 9]), 0.0, 0.0, 10.0)
    assert w.tolist() == [1.0, 1.0, 1.0]


def test_weights_multiply_a_static_class_weight():
    logits, label = batch(4)
    static = [2.0, 1.0, 1.0, 0.5, 1.0, 3.0, 1.0]
    loss = ARBLoss(
        count_mode='prior',
        class_counts=PRIOR,
        weight_power=0.5,
        class_weight=static)(logits, label)
    counted = count_class_weight(
        torch.tensor(PRIOR), torch.as_tensor(naive_counts(label, C)), 0.0, 0.5,
        1000.0)
    want = arb_loss(
        logits,
        label,
        torch.tensor(PRIOR),
        class_weight=counted * torch.tensor(static))
    torch.testing.assert_close(loss, want)
    # The functional form computes the same weights itself.
    torch.testing.assert_close(
        arb_loss(
            logits,
            label,
            torch.tensor(PRIOR),
            weight_power=0.5,
            class_weight=torch.tensor(static)), want)


@pytest.mark.parametrize('bad', [
    dict(weight_power=-0.5),
    dict(weight_power=float('inf')),
    dict(weight_power=0.5, max_weight_ratio=0.5),
    dict(max_weight_ratio=float('inf')),
    dict(max_weight_ratio=1e31)
])
def test_bad_settings_are_named(bad):
    name = 'max_weight_ratio' if 'max_weight_ratio' in bad else \
        'weight_power'
    with pytest.raises(ValueError, match=name):
        ARBLoss(**bad)


def test_the_gradient_balance_hook_sees_the_weights():
    # The hook splits the very gradient the loss produces: with class
    # weights, each class's attraction (from its own pixels, all weighted
    # w_c) scales by w_c against the unweighted loss with the same shift.
    from mmseg_arb.engine.hooks.gradient_balance_hook import \
        attraction_repulsion_norms
    logits, label = batch(5, size=8)
    features = torch.randn(2, 3, 8, 8)
    norms = []
    for power in (0.0, 1.0):
        z = logits.detach().clone().requires_grad_()
        ARBLoss(
            count_mode='prior', class_counts=PRIOR,
            weight_power=power)(z, label).backward()
        norms.append(
            attraction_repulsion_norms(z.grad, label, features, False))
    present = torch.as_tensor(naive_counts(label, C)) > 0
    w = count_class_weight(
        torch.tensor(PRIOR), torch.as_tensor(naive_counts(label, C)), 0.0, 1.0,
        1000.0).double()
    # The mean's denominator changes too: sum of w over the pixels.
    pixels = label.numel()
    labelled = (label != 255).sum()
    scale = pixels / ((w[label[label != 255]]).sum() + pixels - labelled)
    ratio = norms[1][0][present] / norms[0][0][present]
    torch.testing.assert_close(ratio, (w * scale)[present], rtol=1e-4, atol=0)
    # Rare classes' attraction now outweighs their repulsion more.
    balance = [a[present] / r[present] for a, r in norms]
    assert balance[1][-1] > balance[0][-1]


def test_a_batch_missing_classes_with_a_tiny_power_gives_a_finite_loss():
    logits, label = batch(6)
    label[label == 3] = 0  # class 3 absent from the batch
    loss = ARBLoss(
        count_mode='batch', weight_power=0.005, max_weight_ratio=1e30)(logits,
                                                                       label)
    assert torch.isfinite(loss)


def test_half_precision_keeps_the_static_class_weight_float32():
    static = [70000.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # above fp16's range
    loss_fn = ARBLoss(class_weight=static).half()
    assert loss_fn.class_weight.dtype == torch.float32
    assert loss_fn.class_weight.tolist() == static


def test_the_fused_op_refuses_weights_that_require_grad():
    from mmseg_arb.ops import fused_arb_loss
    weight = torch.rand(2, 4, 4, requires_grad=True)
    with pytest.raises(
            ValueError, match='no gradient to a per-pixel '
            'weight'):
        fused_arb_loss(
            torch.randn(2, C, 4, 4),
            torch.zeros(2, 4, 4).long(), torch.zeros(C), None, weight)
