import os

import pytest
import torch
from helpers import run_ranks
from reference import naive_arb_family_loss, naive_class_weights, naive_counts

from mmseg_arb.counting import (ClassCountEstimator, LabelRangeError,
                                label_guard, log_count_shift)
from mmseg_arb.models.losses import ARBLoss
from mmseg_arb.ops import class_histogram

C = 6


def log_shift(counts):
    return log_count_shift(torch.as_tensor(counts))


def labels(seed, shape=(2, 8, 8), classes=C):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(classes, shape, generator=g)
    label[torch.rand(shape, generator=g) < 0.25] = 255
    return label


def test_histogram_matches_naive_and_reports_bad_labels():
    label = labels(0)
    label[0, 0, :3] = torch.tensor([C, 17, -4])
    hist = class_histogram(label, C, 255)
    assert hist.dtype == torch.int64
    # The pixels, labelled or not, then those of each class.
    assert hist[0] == label.numel()
    assert hist[1:C + 1].tolist() == naive_counts(label, C).tolist()
    # How many bad labels, the largest above the range, minus the smallest.
    assert hist[C + 1:].tolist() == [3, 17, 4]
    assert class_histogram(label[1:], C, 255)[C + 1:].tolist() == [0, 0, 0]
    assert class_histogram(label[:0], C, 255).tolist() == [0] * (C + 4)


def test_histogram_ignore_index_inside_range_masks_that_class():
    label = torch.tensor([0, 1, 1, 2, 2, 2])
    hist = class_histogram(label, 3, ignore_index=2)
    assert hist.tolist() == [6, 1, 2, 0, 0, 0, 0]


@pytest.mark.parametrize('mode', ['cumulative', 'ema', 'batch'])
def test_state_dict_round_trip_restores_counts_and_continues(mode):
    a = ClassCountEstimator(count_mode=mode, momentum=0.2)
    for seed in range(3):
        a(labels(seed), C)
    state = a.state_dict()
    assert set(state) == {'counts'}
    # A fresh, lazily sized estimator (as at resume, before any batch).
    b = ClassCountEstimator(count_mode=mode, momentum=0.2)
    assert b.num_classes is None
    b.load_state_dict(state)
    assert b.num_classes == C
    torch.testing.assert_close(b.counts, a.counts)
    torch.testing.assert_close(b(labels(9), C), a(labels(9), C))


def test_checkpoint_of_the_loss_carries_the_estimator(tmp_path):
    loss_fn = ARBLoss(count_mode='cumulative', num_classes=C)
    loss_fn(torch.randn(2, C, 8, 8), labels(1))
    torch.save(loss_fn.state_dict(), tmp_path / 'ckpt.pth')
    restored = ARBLoss(count_mode='cumulative')
    restored.load_state_dict(torch.load(tmp_path / 'ckpt.pth'))
    torch.testing.assert_close(restored.estimator.counts,
                               torch.as_tensor(naive_counts(labels(1), C)))


def test_eval_mode_does_not_update_running_state():
    est = ClassCountEstimator(count_mode='cumulative')
    est.eval()
    # Nothing accumulated yet: the batch is the estimate.
    out = est(labels(2), C)[0]
    assert out.tolist() == log_shift(naive_counts(labels(2), C)).tolist()
    est.train()
    est(labels(3), C)
    est.eval()
    out = est(labels(4), C)[0]
    assert out.tolist() == log_shift(naive_counts(labels(3), C)).tolist()
    assert est.counts.tolist() == naive_counts(labels(3), C).tolist()


def test_no_python_loop_over_classes_scales_to_many_classes():
    label = torch.randint(1024, (4, 64, 64))
    counts = class_histogram(label, 1024, 255)[1:1025]
    assert int(counts.sum()) == label.numel() - int((label == 255).sum())


def weighted_pixels(label, weights):
    """mmseg's mean denominator of ``label``: its labelled pixels' class
    weights plus its ignored pixels."""
    y = label.reshape(-1)
    keep = y != 255
    return weights[y[keep]].sum() + (~keep).sum()


def _dist_worker(rank, mode, weight_power, out_dir):
    loss_fn = ARBLoss(count_mode=mode, weight_power=weight_power)
    results = []
    for step in range(2):
        # Each rank sees different labels, rank 1 only some classes.
        label = labels(10 * step + rank, classes=C if rank == 0 else 2)
        logits = torch.randn(
            2,
            C,
            8,
            8,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(100 * step + rank))
        loss = loss_fn(logits, label)
        results.append(
            (logits, label, loss.detach(), loss_fn.estimator.counts.clone()))
    bad = labels(99)
    if rank == 1:
        bad[0, 0, 0] = C + 3  # only rank 1 has a bad label
    try:
        loss_fn(torch.randn(2, C, 8, 8), bad)
        raised = False
    except LabelRangeError:
        raised = True
    torch.save((results, raised), os.path.join(out_dir, f'{rank}.pt'))


@pytest.mark.slow
@pytest.mark.parametrize('mode,weight_power', [('batch', 0.0),
                                               ('cumulative', 0.0),
                                               ('cumulative', 0.5)])
def test_two_ranks_use_the_summed_counts(tmp_path, mode, weight_power):
    # Shift and class weights alike come from the counts of all ranks, and
    # the weights' mean is taken over every rank's labelled pixels; with
    # count weights, each rank's mean divides by its share of the
    # denominator of all ranks (tests/test_models/test_losses/test_ranks.py
    # checks the gradients this gives against one process).
    world_size = 2
    run_ranks(
        _dist_worker, mode, weight_power, str(tmp_path), world=world_size)
    out = [torch.load(tmp_path / f'{r}.pt') for r in range(world_size)]
    total = torch.zeros(C, dtype=torch.float64)
    for step in range(2):
        batch = sum(
            torch.as_tensor(naive_counts(out[r][0][step][1], C))
            for r in range(world_size))
        total = batch if mode == 'batch' else total + batch
        weights = naive_class_weights(total, batch, weight_power, 1000.0)
        share = None  # without count weights: each rank's own
        if weight_power:
            share = sum(
                weighted_pixels(out[r][0][step][1], weights)
                for r in range(world_size)) / world_size
        for r in range(world_size):
            logits, label, loss, counts = out[r][0][step]
            torch.testing.assert_close(counts, total)
            torch.testing.assert_close(
                loss.double(),
                naive_arb_family_loss(
                    logits,
                    label,
                    total,
                    weight_power=weight_power,
                    max_weight_ratio=1000.0,
                    batch_counts=batch,
                    denominator=share))
    # A bad label on one rank stops every rank (no rank left hanging).
    assert out[0][1] and out[1][1]


def test_a_checkpoint_does_not_replace_the_prior():
    # load_from a batch-mode run into an arb-prior config: the last batch's
    # counts in the checkpoint (class 3 absent) must not replace the prior.
    batch_mode = ARBLoss(count_mode='batch')
    label = torch.tensor([[0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]])
    batch_mode(torch.randn(1, 4, 12), label)
    assert batch_mode.estimator.counts.tolist() == [2, 2, 8, 0]
    prior = ARBLoss(count_mode='prior', class_counts=[10, 20, 30, 40])
    prior.load_state_dict(batch_mode.state_dict())
    assert prior.estimator.counts.tolist() == [10, 20, 30, 40]
    logits = torch.randn(1, 4, 3, requires_grad=True)
    loss = prior(logits, torch.tensor([[3, 3, 0]]))
    loss.backward()
    assert torch.isfinite(loss) and loss < 100
    assert torch.isfinite(logits.grad).all()


def test_old_checkpoints_load_strictly():
    # mmseg-arb before 0.2 also saved a step counter nothing read.
    state = {
        'counts': torch.arange(C, dtype=torch.float64),
        'num_updates': torch.tensor(5)
    }
    est = ClassCountEstimator(count_mode='cumulative')
    est.load_state_dict(state)  # strict: no unexpected key
    assert est.counts.tolist() == list(range(C))


def test_fine_tune_into_a_head_with_other_classes_counts_afresh():
    # load_from a 150-class checkpoint into a 6-class model: mmengine leaves
    # the mismatched classifier re-initialised, and the lazily sized counts
    # must not keep the checkpoint's 150 classes either.
    state = {'counts': torch.ones(150, dtype=torch.float64)}
    est = ClassCountEstimator(count_mode='cumulative')
    est.load_state_dict(state)
    est(labels(0), C)
    assert est.counts.tolist() == naive_counts(labels(0), C).tolist()
    with pytest.raises(ValueError, match='5 classes'):
        est(labels(1, classes=5), 5)  # sized by this model now: an error


def _deferred_worker(rank, out_dir):
    # Labels on CPU are checked at once; here the guard is made to treat
    # them as GPU labels, which it only reads when ClassCountHook says.
    from types import SimpleNamespace

    from mmseg_arb.engine import ClassCountHook
    label_guard.reads_are_free = lambda device: False
    model = torch.nn.ModuleDict(dict(head=ARBLoss()))
    runner = SimpleNamespace(
        model=model,
        hooks=[],
        iter=0,
        train_dataloader=SimpleNamespace(dataset=None))
    hook = ClassCountHook(interval=3)
    hook.before_train(runner)
    events = []
    for it in range(5):
        runner.iter = it
        label = labels(it + rank)
        if rank == 1 and it in (1, 4):  # bad labels on rank 1 only
            label[0, 0, :2] = torch.tensor([C + 4, -2])
        hook.before_train_iter(runner, it)
        model['head'](torch.randn(2, C, 8, 8), label)
        try:
            hook.after_train_iter(runner, it)
        except LabelRangeError as e:
            events.append((it, str(e)))
            model['head'].estimator.label_guard.bad_labels.zero_()
    try:  # iteration 4 comes after the last interval: the end reads it
        hook.after_train(runner)
    except LabelRangeError as e:
        events.append(('end', str(e)))
    torch.save(events, os.path.join(out_dir, f'{rank}.pt'))


@pytest.mark.slow
def test_deferred_bad_labels_raise_on_every_rank_at_the_same_iteration(
        tmp_path):
    run_ranks(_deferred_worker, str(tmp_path))
    events = [torch.load(tmp_path / f'{r}.pt') for r in range(2)]
    for rank, rank_events in enumerate(events):
        assert [when for when, _ in rank_events] == [2, 'end']
        for _, message in rank_events:
            assert message.startswith('2 label pixel(s) are outside [0, 6)')
            assert 'in the labels of head' in message
            if rank == 1:
                assert f'as low as -2 and as high as {C + 4}' in message
            else:
                assert 'none on this rank' in message
