import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import free_port
from reference import naive_arb_loss, naive_counts

from mmseg_arb.counting import ClassCountEstimator, LabelRangeError
from mmseg_arb.models.losses import ARBLoss
from mmseg_arb.ops import count_classes

C = 6


def labels(seed, shape=(2, 8, 8), classes=C):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(classes, shape, generator=g)
    label[torch.rand(shape, generator=g) < 0.25] = 255
    return label


def test_count_classes_matches_naive_and_reports_invalid():
    label = labels(0)
    label[0, 0, :3] = torch.tensor([C, 17, -4])
    counts, num_invalid = count_classes(label, C, 255)
    assert counts.dtype == torch.int64
    assert counts.tolist() == naive_counts(label, C).tolist()
    assert int(num_invalid) == 3


def test_count_classes_ignore_index_inside_range_masks_that_class():
    label = torch.tensor([0, 1, 1, 2, 2, 2])
    counts, num_invalid = count_classes(label, 3, ignore_index=2)
    assert counts.tolist() == [1, 2, 0] and int(num_invalid) == 0


@pytest.mark.parametrize('mode', ['cumulative', 'ema', 'batch'])
def test_state_dict_round_trip_restores_counts_and_continues(mode):
    a = ClassCountEstimator(mode=mode, momentum=0.2)
    for seed in range(3):
        a(labels(seed), C)
    state = a.state_dict()
    assert set(state) == {'counts', 'num_updates'}
    # A fresh, lazily sized estimator (as at resume, before any batch).
    b = ClassCountEstimator(mode=mode, momentum=0.2)
    assert b.num_classes is None
    b.load_state_dict(state)
    assert b.num_classes == C and int(b.num_updates) == 3
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
    est = ClassCountEstimator(mode='cumulative')
    est.eval()
    # Nothing accumulated yet: the batch is the estimate.
    out = est(labels(2), C)
    assert out.tolist() == naive_counts(labels(2), C).tolist()
    est.train()
    est(labels(3), C)
    est.eval()
    out = est(labels(4), C)
    assert out.tolist() == naive_counts(labels(3), C).tolist()
    assert int(est.num_updates) == 1


def test_no_python_loop_over_classes_scales_to_many_classes():
    label = torch.randint(1024, (4, 64, 64))
    counts, _ = count_classes(label, 1024, 255)
    assert int(counts.sum()) == label.numel() - int((label == 255).sum())



def _dist_worker(rank, world_size, port, mode, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    try:
        loss_fn = ARBLoss(count_mode=mode)
        results = []
        for step in range(2):
            # Each rank sees different labels, rank 1 only some classes.
            label = labels(10 * step + rank, classes=C if rank == 0 else 2)
            logits = torch.randn(2, C, 8, 8, dtype=torch.float64,
                                 generator=torch.Generator().manual_seed(
                                     100 * step + rank))
            loss = loss_fn(logits, label)
            results.append((logits, label, loss.detach(),
                            loss_fn.estimator.counts.clone()))
        bad = labels(99)
        if rank == 1:
            bad[0, 0, 0] = C + 3  # only rank 1 has a bad label
        try:
            loss_fn(torch.randn(2, C, 8, 8), bad)
            raised = False
        except LabelRangeError:
            raised = True
        torch.save((results, raised), os.path.join(out_dir, f'{rank}.pt'))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('mode', ['batch', 'cumulative'])
def test_two_ranks_use_the_summed_counts(tmp_path, mode):
    world_size = 2
    mp.spawn(_dist_worker, args=(world_size, free_port(), mode,
                                 str(tmp_path)), nprocs=world_size)
    out = [torch.load(tmp_path / f'{r}.pt') for r in range(world_size)]
    total = torch.zeros(C, dtype=torch.float64)
    for step in range(2):
        batch = sum(
            torch.as_tensor(naive_counts(out[r][0][step][1], C))
            for r in range(world_size))
        total = batch if mode == 'batch' else total + batch
        for r in range(world_size):
            logits, label, loss, counts = out[r][0][step]
            torch.testing.assert_close(counts, total)
            torch.testing.assert_close(
                loss, naive_arb_loss(logits, label, total))
    # A bad label on one rank stops every rank (no rank left hanging).
    assert out[0][1] and out[1][1]
