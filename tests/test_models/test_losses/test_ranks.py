"""Ranks give the gradients of one process: ``ARBLoss`` in a model under
``DistributedDataParallel`` on two gloo ranks, one process on the union of
their batches, gradients compared, on the PyTorch path, the compiled one
and the kernels' (the host emulator's kernels as the ops' CPU kernels).

With count-driven weights the weights are global (from the counts of all
ranks), so the mean must divide by the denominator of all ranks too: each
rank by its share, ``D_all / N``, for DDP's average of the ranks'
gradients to be the one process's. Without them, ``ARBLoss`` keeps
mmseg's per-rank mean, which gives the one process's gradients when the
ranks have equal pixel counts and, with ``avg_non_ignore``, equal labelled
pixel counts. ``reduction='sum'``: each rank sums its pixels' losses, DDP
averages, so N times the average is the one process's.
"""
import os

import emulated_ops
import pytest
import torch
from helpers import run_ranks
from torch.nn.parallel import DistributedDataParallel

from mmseg_arb.models.losses import ARBLoss
from mmseg_arb.ops import cuda_ext

pytestmark = pytest.mark.slow  # spawned ranks, compiles: tests/conftest.py

C = 5
WORLD = 2
PRIOR = [4000.0, 900.0, 150.0, 30.0, 1.0]
# name: ARBLoss settings. The table first.
SETTINGS = {
    'cumulative tau=1':
    dict(count_mode='cumulative'),
    'cumulative tau=0 p=0.5':
    dict(count_mode='cumulative', tau=0.0, weight_power=0.5),
    'cumulative tau=0 p=1':
    dict(count_mode='cumulative', tau=0.0, weight_power=1.0),
    'batch tau=1 p=0.5':
    dict(count_mode='batch', weight_power=0.5),
    'cumulative tau=0 p=0.5 avg_non_ignore':
    dict(
        count_mode='cumulative',
        tau=0.0,
        weight_power=0.5,
        avg_non_ignore=True),
    'ema tau=0.5 p=0.5':
    dict(count_mode='ema', momentum=0.3, tau=0.5, weight_power=0.5),
    'prior tau=1 p=1':
    dict(count_mode='prior', class_counts=PRIOR, weight_power=1.0),
    'batch p=0.5 class_weight':
    dict(
        count_mode='batch',
        weight_power=0.5,
        class_weight=[1.0, 2.0, 0.5, 1.0, 3.0]),
    'batch p=0.5 loss_weight sum':
    dict(
        count_mode='batch', weight_power=0.5, loss_weight=0.4,
        reduction='sum'),
    'cumulative tau=1 p=0.5 none':
    dict(count_mode='cumulative', weight_power=0.5, reduction='none'),
}
# Settings whose rule is mmseg's per-rank mean: one process's gradients
# only where every rank has as many pixels (labelled ones with
# avg_non_ignore) as the others.
PER_RANK = {'cumulative tau=1'}


def batches(step, split):
    """Images, labels and each rank's share (a slice) of step ``step``:
    ``split`` images per rank. Long-tailed labels, more ignored pixels on
    the last rank, a class absent from the first."""
    gen = torch.Generator().manual_seed(step)
    n = sum(split)
    images = torch.randn(n, 3, 6, 7, generator=gen)
    tail = torch.tensor([0.6, 0.25, 0.1, 0.04, 0.01])
    label = torch.multinomial(
        tail, n * 42, replacement=True, generator=gen).view(n, 6, 7)
    label[:split[0]][label[:split[0]] == 3] = 0
    label[:, 0, :2] = 255
    label[-1, 1:3] = 255
    bounds = torch.tensor([0] + list(split)).cumsum(0).tolist()
    shares = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    return images, label, shares


def make_model():
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, C, 1)


def run_steps(model, loss_fn, split, rank=None):
    """Two steps' gradients of ``model``'s parameters: on the share of
    ``rank``, or on every image (``rank`` None)."""
    grads = []
    for step in range(2):
        images, label, shares = batches(step, split)
        if rank is not None:
            images, label = images[shares[rank]], label[shares[rank]]
        model.zero_grad()
        loss = loss_fn(model(images), label)
        (loss.sum() if loss.dim() else loss).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    return grads


def _worker(rank, path, library, split, out_dir):
    if path == 'fused':
        # The emulated kernels serve CPU tensors (after the fused loss's
        # first-use check, which they pass).
        kept = emulated_ops.register(  # noqa: F841
            emulated_ops.load(library))
        cuda_ext._kernels_serve = lambda tensor: True
    results = {}
    for name, settings in SETTINGS.items():
        model = DistributedDataParallel(make_model())
        loss_fn = ARBLoss(**settings)
        if path == 'compiled':
            torch._dynamo.reset()
            loss_fn = torch.compile(loss_fn, backend='aot_eager')
        results[name] = run_steps(model, loss_fn, split, rank)
    torch.save(results, os.path.join(out_dir, f'{rank}.pt'))


def relative_errors(tmp_path, path, split, library=None):
    """setting -> max |N ranks - one process| / max |grad| over both
    steps and all parameters."""
    run_ranks(_worker, path, library, split, str(tmp_path), world=WORLD)
    ranks = torch.load(tmp_path / '0.pt')
    errors = {}
    for name, settings in SETTINGS.items():
        one = run_steps(make_model(), ARBLoss(**settings), split)
        error = 0.0
        for step in range(2):
            for got, want in zip(ranks[name][step], one[step]):
                if settings.get('reduction', 'mean') != 'mean':
                    got = got * WORLD  # DDP averages the ranks' sums
                error = max(error,
                            float((got - want).abs().max() / want.abs().max()))
        errors[name] = error
    return errors


def check(errors, per_rank_holds=True):
    bad = [
        f'{name}: {error:.3g}' for name, error in errors.items()
        if error > 1e-5 and (per_rank_holds or name not in PER_RANK)
    ]
    assert not bad, 'relative gradient errors:\n' + '\n'.join(bad)


@pytest.mark.parametrize('path', ['pytorch', 'compiled'])
def test_two_ranks_give_the_gradients_of_one_process(tmp_path, path):
    check(relative_errors(tmp_path, path, (1, 1)))


@emulated_ops.needs_nvcc
def test_two_ranks_on_the_kernels_path(tmp_path):
    emulated_ops.build(tmp_path)
    check(
        relative_errors(tmp_path, 'fused', (1, 1),
                        str(tmp_path / 'libemulated.so')))


def test_unequal_batches_still_give_one_process_with_count_weights(tmp_path):
    # The last batch of an epoch: two images on one rank, one on the
    # other. The count-weighted mean divides by the pixels of all ranks,
    # so it still holds; mmseg's per-rank mean (no count weights) weighs
    # the smaller rank's pixels more, as CrossEntropyLoss does under DDP.
    errors = relative_errors(tmp_path, 'pytorch', (2, 1))
    check(errors, per_rank_holds=False)
    assert errors['cumulative tau=1'] > 1e-3
