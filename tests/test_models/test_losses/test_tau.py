"""``tau``, the exponent of the counts: ``tau * log n`` is added to the logits.

The family it spans, each identity checked numerically:

* ``tau=0``: cross-entropy exactly, against mmseg's own ``CrossEntropyLoss``
  on the kinds of input mmseg's CE tests use (saturated logits, constant
  logits with ignored pixels, class weights from lists and files, every
  reduction, ``avg_non_ignore``), in every count mode;
* ``count_mode='prior'``, ``tau=1``: Balanced Softmax (Ren et al., NeurIPS
  2020), and for any ``tau`` the logit-adjusted loss of Menon et al. (ICLR
  2021), both written here from their papers' formulas;
* other ``tau``: the float64 reference of ``tests/reference.py`` with the
  counts raised to ``tau`` (the ratio ``(n_j / n_y) ** tau``);
* ``tau`` travels through a config file, its dump, and the ``_base_``
  switch's ``arb = dict(...)``.
"""
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import CONFIGS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from reference import naive_arb_loss, naive_counts

import mmseg_arb  # noqa: F401
from mmseg_arb.models.losses import ARBLoss

MODES = ('batch', 'cumulative', 'ema', 'prior')
DEMO_CE = osp.join(
    CONFIGS, 'demo', 'deeplabv3plus_r18-tiny_1xb8-400iter_synthetic-ade20k-'
    '128x128.py')


def build(cfg):
    init_default_scope('mmseg')
    return MODELS.build(cfg)


def arb_cfg(count_mode, num_classes, tau, **kwargs):
    """ARBLoss config in ``count_mode``; a prior gets uneven counts with a
    zero, which ``tau=0`` must ignore like every other count."""
    cfg = dict(type='ARBLoss', count_mode=count_mode, tau=tau, **kwargs)
    if count_mode == 'prior':
        cfg['class_counts'] = [0.0] + [10.0**k for k in range(num_classes - 1)]
    return cfg


def mmseg_cases():
    """(name, logits, label, ignore_index, class_weight) of the shapes and
    values mmseg's cross-entropy tests probe."""
    g = torch.Generator().manual_seed(0)
    constant = torch.ones(2, 8, 8, dtype=torch.long)
    constant[:, 0, 0] = 255
    five_way = torch.randint(0, 5, (2, 10), generator=g)
    five_way_ignored = five_way.clone()
    five_way_ignored[0, [1, 2, 5, 7]] = 10
    five_way_ignored[1, [0, 5, 8, 9]] = 10
    weight = torch.rand(5, generator=g)
    return [
        ('saturated', torch.tensor([[100.0,
                                     -100.0]]), torch.tensor([1]), 255, None),
        ('saturated-weighted', torch.tensor([[100.0, -100.0]]),
         torch.tensor([1]), 255, [0.8, 0.2]),
        ('constant-21-classes', torch.full((2, 21, 8, 8),
                                           0.5), constant, 255, None),
        ('five-way-weighted', torch.randn(2, 5, 10, generator=g), five_way,
         255, (weight / weight.sum()).tolist()),
        ('five-way-weighted-ignored', torch.randn(2, 5, 10, generator=g),
         five_way_ignored, 10, (weight / weight.sum()).tolist()),
        ('five-way-ignored', torch.randn(2, 5, 10, generator=g),
         five_way_ignored, 10, None),
    ]


def loss_and_grad(loss_fn, logits, label, ignore_index):
    logits = logits.clone().requires_grad_()
    loss = loss_fn(logits, label, ignore_index=ignore_index)
    loss.sum().backward()
    return loss.detach(), logits.grad


@pytest.mark.parametrize('count_mode', MODES)
@pytest.mark.parametrize('avg_non_ignore', [False, True])
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('case', mmseg_cases(), ids=lambda c: c[0])
def test_tau_zero_is_mmseg_cross_entropy(case, reduction, avg_non_ignore,
                                         count_mode):
    _, logits, label, ignore_index, class_weight = case
    common = dict(
        reduction=reduction,
        avg_non_ignore=avg_non_ignore,
        class_weight=class_weight)
    arb = build(arb_cfg(count_mode, logits.shape[1], 0.0, **common))
    got, got_grad = loss_and_grad(arb, logits, label, ignore_index)

    ignored = bool((label == ignore_index).any())
    if class_weight is not None and ignored and reduction == 'mean':
        # mmseg 1.2.2 cannot compute this mean: it indexes the class
        # weights with every label, ignored ones included (IndexError). The
        # mean it means divides by the labels' weights: PyTorch's weighted
        # mean, plus 1 per ignored pixel where those count
        # (avg_non_ignore=False), as for unweighted CE.
        weight = torch.tensor(class_weight)
        extra = 0 if avg_non_ignore else int((label == ignore_index).sum())

        def expected_fn(z, y, ignore_index):
            total = F.cross_entropy(
                z,
                y,
                weight=weight,
                reduction='sum',
                ignore_index=ignore_index)
            return total / (weight[y[y != ignore_index]].sum() + extra)

        expected, expected_grad = loss_and_grad(expected_fn, logits, label,
                                                ignore_index)
    else:
        ce = build(dict(type='CrossEntropyLoss', **common))
        expected, expected_grad = loss_and_grad(ce, logits, label,
                                                ignore_index)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_grad, expected_grad)


def test_tau_zero_on_mmseg_saturated_case_gives_mmseg_values():
    """The figures mmseg's own test expects: 200 for the saturated pixel,
    with or without class weights (a weighted mean of one pixel)."""
    logits, label = torch.tensor([[100.0, -100.0]]), torch.tensor([1])
    for class_weight in (None, [0.8, 0.2]):
        arb = ARBLoss(tau=0.0, class_weight=class_weight)
        torch.testing.assert_close(arb(logits, label), torch.tensor(200.0))
    summed = ARBLoss(tau=0.0, class_weight=[0.8, 0.2], reduction='sum')
    torch.testing.assert_close(summed(logits, label), torch.tensor(40.0))


@pytest.mark.parametrize('suffix', ['.pkl', '.npy'])
def test_tau_zero_reads_class_weight_files_as_mmseg(tmp_path, suffix):
    path = str(tmp_path / f'weights{suffix}')
    if suffix == '.npy':
        np.save(path, np.array([0.8, 0.2]))
    else:
        with open(path, 'wb') as f:
            pickle.dump([0.8, 0.2], f)
    logits, label = torch.tensor([[100.0, -100.0], [1.0, 2.0]]), \
        torch.tensor([1, 0])
    for reduction in ('mean', 'sum'):
        ce = build(
            dict(
                type='CrossEntropyLoss',
                class_weight=path,
                reduction=reduction))
        arb = build(
            dict(
                type='ARBLoss',
                tau=0.0,
                class_weight=path,
                reduction=reduction))
        torch.testing.assert_close(arb(logits, label), ce(logits, label))


@pytest.mark.parametrize('count_mode', MODES)
def test_tau_zero_keeps_absent_classes_in_the_softmax(count_mode):
    """At tau=1 a class absent from the counts drops out; at tau=0 every
    class keeps its softmax term, as in cross-entropy."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 4, 4, generator=g, dtype=torch.float64)
    label = torch.tensor([0, 3])[torch.randint(2, (2, 4, 4), generator=g)]
    got, got_grad = loss_and_grad(
        build(arb_cfg(count_mode, 6, 0.0)), logits, label, 255)
    expected, expected_grad = loss_and_grad(
        lambda z, y, ignore_index: F.cross_entropy(z, y), logits, label, 255)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_grad, expected_grad)
    assert torch.all(got_grad[:, [1, 2, 4, 5]].abs().sum((0, 2, 3)) > 0)


def batch_with_ignored(seed, num_classes=7, shape=(2, 6, 5)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(
        shape[0], num_classes, *shape[1:], generator=g,
        dtype=torch.float64) * 3
    label = torch.randint(num_classes, shape, generator=g)
    label[torch.rand(shape, generator=g) < 0.2] = 255
    return logits, label


def balanced_softmax_loss(logits, label, counts, ignore_index=255):
    """Balanced Softmax, Ren et al. (2020): the class-conditional softmax
    phi_y = n_y e^{eta_y} / sum_j n_j e^{eta_j}, loss -log phi_y, averaged
    over the labelled pixels; float64, products as written (the logits are
    small enough not to overflow)."""
    eta = logits.double().movedim(1, -1).reshape(-1, logits.shape[1])
    y = label.reshape(-1)
    keep = y != ignore_index
    n = torch.as_tensor(counts, dtype=torch.float64)
    weighted = n * eta[keep].exp()
    phi = weighted.gather(1, y[keep, None])[:, 0] / weighted.sum(1)
    return -phi.log().mean()


def logit_adjusted_loss(logits, label, counts, tau, ignore_index=255):
    """Logit-adjusted softmax cross-entropy, Menon et al. (2021):
    -log( e^{f_y + tau log pi_y} / sum_j e^{f_j + tau log pi_j} ) with the
    class priors pi = n / sum(n), averaged over the labelled pixels."""
    f = logits.double().movedim(1, -1).reshape(-1, logits.shape[1])
    y = label.reshape(-1)
    keep = y != ignore_index
    pi = torch.as_tensor(counts, dtype=torch.float64)
    pi = pi / pi.sum()
    adjusted = f[keep] + tau * pi.log()
    return F.cross_entropy(adjusted, y[keep])


def test_prior_at_tau_one_is_balanced_softmax():
    counts = [5000.0, 1200.0, 300.0, 40.0, 9.0, 2.0, 1.0]
    logits, label = batch_with_ignored(seed=2)
    logits.requires_grad_()
    loss = ARBLoss(
        count_mode='prior', class_counts=counts, tau=1.0,
        avg_non_ignore=True)(logits, label)
    expected = balanced_softmax_loss(logits, label, counts)
    # The shift is float32 (log n in fp32), hence the tolerance.
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-9)
    grad, = torch.autograd.grad(loss, logits)
    expected_grad, = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize('tau', [0.0, 0.5, 1.0, 1.5])
def test_prior_is_the_logit_adjusted_loss_for_every_tau(tau):
    counts = [5000.0, 1200.0, 300.0, 40.0, 9.0, 2.0, 1.0]
    logits, label = batch_with_ignored(seed=3)
    loss = ARBLoss(
        count_mode='prior', class_counts=counts, tau=tau,
        avg_non_ignore=True)(logits, label)
    torch.testing.assert_close(
        loss,
        logit_adjusted_loss(logits, label, counts, tau),
        rtol=1e-6,
        atol=1e-9)


@pytest.mark.parametrize('tau', [0.5, 1.5])
@pytest.mark.parametrize('count_mode', ['batch', 'cumulative', 'ema'])
def test_running_modes_match_the_reference_with_counts_to_the_tau(
        count_mode, tau):
    """The loss after two steps is the float64 reference of the paper's
    formula with every count n replaced by n ** tau."""
    momentum = 0.3
    loss_fn = ARBLoss(count_mode=count_mode, tau=tau, momentum=momentum)
    (l1, y1), (l2, y2) = batch_with_ignored(4), batch_with_ignored(5)
    loss_fn(l1, y1)
    loss = loss_fn(l2, y2)
    first, second = naive_counts(y1, 7), naive_counts(y2, 7)
    counts = {
        'batch': second,
        'cumulative': first + second,
        'ema': (1 - momentum) * momentum * first + momentum * second,
    }[count_mode]
    torch.testing.assert_close(
        loss, naive_arb_loss(l2, y2, counts**tau), rtol=1e-6, atol=1e-9)


def test_tau_is_validated():
    with pytest.raises(ValueError, match='tau'):
        ARBLoss(tau=-0.5)
    with pytest.raises(ValueError, match='tau'):
        ARBLoss(tau=float('nan'))


def heads_tau(model):
    return [
        head.loss_decode.estimator.tau
        for head in (model.decode_head, model.auxiliary_head)
    ]


@pytest.mark.slow
def test_tau_round_trips_through_a_config_file_and_its_dump(tmp_path):
    user = tmp_path / 'arb_tau.py'
    user.write_text(
        f"_base_ = '{DEMO_CE}'\n"
        "model = dict(\n"
        "    decode_head=dict(loss_decode=dict(type='ARBLoss', tau=0.5)),\n"
        "    auxiliary_head=dict(loss_decode=dict(\n"
        "        type='ARBLoss', tau=0.5, loss_weight=0.4)))\n")
    cfg = Config.fromfile(str(user))
    dumped = tmp_path / 'dumped.py'
    cfg.dump(str(dumped))
    for path in (user, dumped):
        model = build(Config.fromfile(str(path)).model)
        assert heads_tau(model) == [0.5, 0.5], path
    # The built loss uses it: n ** 0.5 in the paper's formula.
    logits, label = batch_with_ignored(6, num_classes=24)
    loss = model.decode_head.loss_decode(logits, label)
    torch.testing.assert_close(
        loss,
        naive_arb_loss(logits, label,
                       naive_counts(label, 24)**0.5),
        rtol=1e-6,
        atol=1e-9)


@pytest.mark.slow
def test_tau_through_the_base_switch_and_the_config_it_dumps(tmp_path):
    """``arb = dict(tau=...)`` under the one-line ``_base_`` switch reaches
    every head, and the config the runner dumps keeps it."""
    from mmseg_arb.cli.launch import build_runner
    user = tmp_path / 'my_config.py'
    # An mmseg config: the demo's has custom_imports, as arb.py does, and
    # mmengine refuses a key defined by two bases.
    user.write_text(
        "_base_ = ['mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_"
        f"ade20k-512x512.py', '{osp.join(CONFIGS, '_base_', 'arb.py')}']\n"
        "arb = dict(count_mode='ema', tau=1.5)\n"
        f"work_dir = '{tmp_path / 'work'}'\n")
    cfg = Config.fromfile(str(user))
    cfg.launcher = 'none'
    runner = build_runner(cfg)
    assert heads_tau(runner.model) == [1.5, 1.5]
    assert runner.model.decode_head.loss_decode.estimator.count_mode == 'ema'
    dumped = Config.fromfile(str(tmp_path / 'work' / 'my_config.py'))
    assert dumped.model.decode_head.loss_decode.tau == 1.5
    assert heads_tau(build(dumped.model)) == [1.5, 1.5]
