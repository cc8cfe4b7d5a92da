import json
import math

import pytest
import torch
from mmseg.models.losses import CrossEntropyLoss
from reference import naive_arb_loss, naive_counts

from mmseg_arb.counting import LabelRangeError
from mmseg_arb.models.losses import ARBLoss, arb_loss, log_count_shift

C = 7


def make_batch(seed=0,
               n=2,
               c=C,
               h=6,
               w=5,
               classes=None,
               ignore_frac=0.2,
               scale=3.0):
    """Random logits and labels; ``classes`` restricts the labels used so
    that the others are absent."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g, dtype=torch.float64) * scale
    classes = torch.tensor(classes if classes is not None else range(c))
    label = classes[torch.randint(len(classes), (n, h, w), generator=g)]
    label[torch.rand(n, h, w, generator=g) < ignore_frac] = 255
    return logits.requires_grad_(), label


@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_batch_mode_matches_naive_formula_with_absent_classes(avg_non_ignore):
    logits, label = make_batch(classes=[0, 2, 3, 6])
    loss = ARBLoss(avg_non_ignore=avg_non_ignore)(logits, label)
    counts = naive_counts(label, C)
    assert (counts == 0).sum() == 3  # classes 1, 4, 5 are absent
    expected = naive_arb_loss(
        logits, label, counts, avg_non_ignore=avg_non_ignore)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-9)


def test_absent_classes_get_no_gradient():
    logits, label = make_batch(classes=[0, 2, 3, 6], ignore_frac=0.0)
    ARBLoss()(logits, label).backward()
    assert torch.all(logits.grad[:, [1, 4, 5]] == 0)
    assert torch.all(logits.grad[:, [0, 2, 3, 6]].abs().sum((0, 2, 3)) > 0)


def test_cumulative_mode_uses_running_totals():
    loss_fn = ARBLoss(count_mode='cumulative')
    (l1, y1), (l2, y2) = make_batch(seed=1), make_batch(seed=2, classes=[1])
    loss_fn(l1, y1)
    loss = loss_fn(l2, y2)
    counts = naive_counts(y1, C) + naive_counts(y2, C)
    torch.testing.assert_close(loss, naive_arb_loss(l2, y2, counts))
    torch.testing.assert_close(loss_fn.estimator.counts,
                               torch.as_tensor(counts))


def test_ema_mode_blends_batches_with_momentum():
    m = 0.3
    loss_fn = ARBLoss(count_mode='ema', momentum=m)
    (l1, y1), (l2, y2) = make_batch(seed=3), make_batch(seed=4)
    loss_fn(l1, y1)
    loss = loss_fn(l2, y2)
    counts = (1 - m) * m * naive_counts(y1, C) + m * naive_counts(y2, C)
    torch.testing.assert_close(loss, naive_arb_loss(l2, y2, counts))


def test_prior_mode_from_list_and_json_file(tmp_path):
    prior = [100.0, 5.0, 40.0, 1.0, 70.0, 2.0, 9.0]
    logits, label = make_batch(seed=5)
    expected = naive_arb_loss(logits, label, prior)
    torch.testing.assert_close(
        ARBLoss(count_mode='prior', class_counts=prior)(logits, label),
        expected)
    path = tmp_path / 'stats.json'
    path.write_text(
        json.dumps({
            'counts': prior,
            'class_names': list('abcdefg')
        }))
    torch.testing.assert_close(
        ARBLoss(count_mode='prior', class_counts=str(path))(logits, label),
        expected)


def test_classification_shaped_input():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(32, C, generator=g, dtype=torch.float64)
    label = torch.randint(C, (32, ), generator=g)
    label[:3] = 255
    loss = ARBLoss()(logits, label)
    expected = naive_arb_loss(logits, label, naive_counts(label, C))
    torch.testing.assert_close(loss, expected)


def test_equal_counts_reduce_to_mmseg_cross_entropy():
    logits, label = make_batch(seed=7, ignore_frac=0.3)
    prior = [50.0] * C
    for avg_non_ignore in (False, True):
        arb = ARBLoss(
            count_mode='prior',
            class_counts=prior,
            avg_non_ignore=avg_non_ignore)(logits, label)
        ce = CrossEntropyLoss(avg_non_ignore=avg_non_ignore)(
            logits, label, ignore_index=255)
        torch.testing.assert_close(arb, ce)


def test_class_weight_matches_mmseg_where_mmseg_works_and_handles_ignore():
    weights = [0.5, 1.0, 2.0, 1.5, 0.2, 3.0, 1.0]
    logits, label = make_batch(seed=8, ignore_frac=0.0)
    prior = [10.0] * C
    arb = ARBLoss(
        count_mode='prior', class_counts=prior, class_weight=weights)(logits,
                                                                      label)
    ce = CrossEntropyLoss(class_weight=weights)(logits, label)
    torch.testing.assert_close(arb, ce)
    # With ignored pixels (where mmseg's own weighted mean crashes).
    logits, label = make_batch(seed=9, ignore_frac=0.3)
    for avg_non_ignore in (False, True):
        loss = ARBLoss(
            class_weight=weights, avg_non_ignore=avg_non_ignore)(logits, label)
        expected = naive_arb_loss(
            logits,
            label,
            naive_counts(label, C),
            avg_non_ignore=avg_non_ignore,
            class_weight=weights)
        torch.testing.assert_close(loss, expected)


def test_reductions_sample_weight_loss_weight_and_override():
    logits, label = make_batch(seed=10)
    counts = torch.as_tensor(naive_counts(label, C))
    per_pixel = ARBLoss(reduction='none')(logits, label)
    assert per_pixel.shape == label.shape
    assert torch.all(per_pixel[label == 255] == 0)
    loss_fn = ARBLoss(loss_weight=2.5)
    torch.testing.assert_close(
        loss_fn(logits, label, reduction_override='sum'),
        2.5 * per_pixel.sum())
    torch.testing.assert_close(
        loss_fn(logits, label), 2.5 * per_pixel.sum() / label.numel())
    weight = torch.rand(label.shape, dtype=torch.float64)
    torch.testing.assert_close(
        loss_fn(logits, label, weight=weight, avg_factor=10.0),
        2.5 * (per_pixel * weight).sum() / 10.0)
    torch.testing.assert_close(
        arb_loss(logits, label, counts, reduction='none'), per_pixel)


def test_gradient_matches_finite_differences():
    logits, label = make_batch(seed=11, n=1, h=3, w=2)
    counts = torch.as_tensor(naive_counts(label, C))
    assert torch.autograd.gradcheck(
        lambda z: arb_loss(z, label, counts, class_weight=None), (logits, ))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_logits_of_large_magnitude(dtype):
    logits, label = make_batch(seed=12, scale=300.0)
    low = logits.detach().to(dtype).requires_grad_()
    loss = ARBLoss()(low, label)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(low.grad.float()).all()
    assert low.grad.dtype == dtype
    expected = naive_arb_loss(low.detach().double(), label,
                              naive_counts(label, C))
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-3)


def test_huge_logits_stay_finite():
    logits, label = make_batch(seed=13, scale=1e4)
    logits = logits.detach().float().requires_grad_()
    loss = ARBLoss(avg_non_ignore=True)(logits, label)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize('mode', ['batch', 'cumulative', 'ema'])
@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_all_ignored_batch_gives_zero_loss_and_zero_gradients(
        mode, avg_non_ignore):
    logits, _ = make_batch(seed=14)
    label = torch.full((2, 6, 5), 255)
    loss = ARBLoss(
        count_mode=mode, avg_non_ignore=avg_non_ignore)(logits, label)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(logits.grad == 0)


def assert_same_call(eager, compiled, eager_call, compiled_call):
    """Loss, logits gradient and counts of a compiled ARBLoss call equal the
    eager one's (each call given as its loss and its logits)."""
    (expected, z), (loss, z_compiled) = eager_call, compiled_call
    expected.backward()
    loss.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(z_compiled.grad, z.grad)
    torch.testing.assert_close(compiled.estimator.counts,
                               eager.estimator.counts)


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['batch', 'ema'])
def test_torch_compile_gives_the_eager_loss_gradients_and_counts(mode):
    # mmengine's runner can wrap the model in torch.compile (compile=True);
    # the state update and the label check must survive that.
    torch._dynamo.reset()
    eager, compiled = ARBLoss(count_mode=mode), ARBLoss(count_mode=mode)
    compiled_fn = torch.compile(compiled, backend='aot_eager')
    for seed in range(3):
        logits, label = make_batch(seed=seed, c=19, h=16, w=16)
        z = logits.detach().float().requires_grad_()
        z_compiled = z.detach().clone().requires_grad_()
        expected, loss = eager(z, label), compiled_fn(z_compiled, label)
        assert_same_call(eager, compiled, (expected, z), (loss, z_compiled))
    label[0, 0, 0] = 42
    with pytest.raises(LabelRangeError, match='42'):
        compiled_fn(z_compiled, label)
    torch._dynamo.reset()


@pytest.mark.parametrize('dtype', [torch.int32, torch.uint8, torch.int64])
def test_integer_label_dtypes(dtype):
    logits, label = make_batch(seed=15)
    torch.testing.assert_close(ARBLoss()(logits, label.to(dtype)),
                               ARBLoss()(logits, label))


def test_log_count_shift_drops_zero_counts():
    shift = log_count_shift(torch.tensor([0.0, 1.0, 10.0]))
    assert shift.dtype == torch.float32
    assert shift[0] < -1e29
    torch.testing.assert_close(shift[1:], torch.tensor([0.0, math.log(10.0)]))


def test_smoothing_adds_a_pseudo_count():
    logits, label = make_batch(seed=16, classes=[0, 1])
    loss = ARBLoss(smoothing=2.0)(logits, label)
    expected = naive_arb_loss(logits, label, naive_counts(label, C) + 2.0)
    torch.testing.assert_close(loss, expected)


# Bad input: each one a clear error naming the problem.


def test_error_float_labels():
    logits, label = make_batch()
    with pytest.raises(TypeError, match='integer'):
        ARBLoss()(logits, label.float())


def test_error_shape_mismatch():
    logits, label = make_batch()
    with pytest.raises(ValueError, match='does not match logits'):
        ARBLoss()(logits, label[:, :3])
    with pytest.raises(ValueError, match='squeeze'):
        ARBLoss()(logits, label[:, None])


@pytest.mark.parametrize('bad', [C, 200, -1])
def test_error_label_out_of_range(bad):
    logits, label = make_batch()
    label[0, 0, 0] = bad
    with pytest.raises(LabelRangeError, match=rf'\[0, {C}\).*\[{bad}\]'):
        ARBLoss()(logits, label)


def test_error_prior_length_differs_from_classes():
    logits, label = make_batch()
    with pytest.raises(ValueError, match='7 classes.*5'):
        ARBLoss(count_mode='prior', class_counts=[1.0] * 5)(logits, label)


@pytest.mark.parametrize('prior,match', [
    ([1.0, -2.0, 3.0], 'negative'),
    ([1.0, float('nan'), 3.0], 'NaN'),
    ([1.0, 0.0, 3.0], 'infinite loss'),
])
def test_error_bad_prior(prior, match):
    with pytest.raises(ValueError, match=match):
        ARBLoss(count_mode='prior', class_counts=prior)


def test_zero_prior_allowed_with_smoothing():
    ARBLoss(count_mode='prior', class_counts=[1.0, 0.0, 3.0], smoothing=1.0)


@pytest.mark.parametrize('kwargs,match', [
    (dict(count_mode='median'), 'count_mode'),
    (dict(count_mode='prior'), 'class_counts'),
    (dict(class_counts=[1.0, 2.0]), 'class_counts'),
    (dict(use_sigmoid=True), 'use_sigmoid'),
    (dict(use_mask=True), 'use_mask'),
    (dict(loss_name='arb'), "start with 'loss_'"),
    (dict(reduction='avg'), 'reduction'),
    (dict(count_mode='ema', momentum=0.0), 'momentum'),
])
def test_error_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ARBLoss(**kwargs)


def test_error_class_weight_length():
    logits, label = make_batch()
    with pytest.raises(ValueError, match='class_weight'):
        ARBLoss(class_weight=[1.0, 2.0])(logits, label)


def test_ce_keys_from_an_overridden_config_are_accepted():
    ARBLoss(use_sigmoid=False, use_mask=False, loss_weight=1.0)


def test_call_interface_of_mmseg_losses():
    logits, label = make_batch(seed=17)
    loss_fn = ARBLoss()
    # mmseg's weight_reduce_loss refuses a mean denominator for a sum.
    with pytest.raises(ValueError, match='avg_factor can not be used'):
        loss_fn(logits, label, avg_factor=10.0, reduction_override='sum')
    # Extra keyword arguments are accepted, as mmseg's losses accept them.
    torch.testing.assert_close(
        loss_fn(logits, label, seg_weight=None), loss_fn(logits, label))


def test_changing_number_of_classes_is_an_error():
    loss_fn = ARBLoss(count_mode='cumulative')
    loss_fn(*make_batch())
    logits, label = make_batch(c=5, classes=[0, 1])
    with pytest.raises(ValueError, match='5 classes'):
        loss_fn(logits, label)


def test_registry_build_through_custom_imports():
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings
    from mmseg.registry import MODELS
    cfg = Config(
        dict(
            custom_imports=dict(
                imports=['mmseg_arb'], allow_failed_imports=False),
            loss=dict(
                type='ARBLoss',
                count_mode='ema',
                momentum=0.1,
                loss_weight=0.4)))
    import_modules_from_strings(**cfg.custom_imports)
    loss_fn = MODELS.build(cfg.loss)
    assert isinstance(loss_fn, ARBLoss)
    assert loss_fn.loss_name == 'loss_arb'
    assert loss_fn.estimator.count_mode == 'ema'


def test_inside_an_mmseg_decode_head():
    from mmengine.structures import PixelData
    from mmseg.models.decode_heads import FCNHead
    from mmseg.structures import SegDataSample
    head = FCNHead(
        in_channels=4,
        channels=8,
        num_convs=1,
        num_classes=C,
        loss_decode=[
            dict(type='ARBLoss', count_mode='cumulative'),
            dict(type='CrossEntropyLoss', loss_weight=0.5)
        ])
    feats = [torch.randn(2, 4, 8, 8)]
    samples = []
    for i in range(2):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(C, (1, 16,
                                   16)).index_fill_(1, torch.tensor([0]), 255))
        samples.append(sample)
    losses = head.loss(feats, samples, train_cfg=None)
    assert set(losses) == {'loss_arb', 'loss_ce', 'acc_seg'}
    losses['loss_arb'].backward()
    assert torch.isfinite(head.conv_seg.weight.grad).all()
    arb = head.loss_decode[0]
    assert int(arb.estimator.counts.sum()) == 2 * 15 * 16


def _ohem_head(loss_decode, **sampler):
    from mmseg.models.decode_heads import FCNHead
    return FCNHead(
        in_channels=4,
        channels=8,
        num_convs=1,
        num_classes=C,
        loss_decode=loss_decode,
        sampler=dict(type='OHEMPixelSampler', **sampler))


def _samples(n=2, size=16, ignored_rows=0, seed=0):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n):
        sample = SegDataSample()
        data = torch.randint(C, (1, size, size), generator=g)
        data[:, :ignored_rows] = 255
        sample.gt_sem_seg = PixelData(data=data)
        samples.append(sample)
    return samples


# 'thresh': mmseg's sampler ranks by the softmax and never calls the loss; a
# guard that the state still moves exactly once with it.
@pytest.mark.parametrize(
    'sampler',
    [dict(min_kept=100), dict(thresh=0.7, min_kept=100)],
    ids=['loss-ranked', 'thresh'])
@pytest.mark.parametrize('mode', ['cumulative', 'ema'])
def test_ohem_sampler_does_not_count_the_batch_twice(sampler, mode):
    # mmseg's OHEMPixelSampler (min_kept alone) ranks pixels by calling the
    # loss under no_grad before the loss runs: only the training call may
    # fold the batch into the state.
    head = _ohem_head(
        dict(type='ARBLoss', count_mode=mode, momentum=0.5), **sampler)
    feats = [torch.randn(2, 4, 8, 8)]
    samples = _samples()  # 2 x 16 x 16 = 512 labelled pixels
    losses = head.loss(feats, samples, train_cfg=None)
    losses['loss_arb'].backward()
    estimator = head.loss_decode.estimator
    labels = torch.stack([s.gt_sem_seg.data[0] for s in samples])
    batch = torch.as_tensor(naive_counts(labels, C))
    expected = batch if mode == 'cumulative' else 0.5 * batch
    torch.testing.assert_close(estimator.counts, expected)
    assert int(
        estimator.counts.sum()) == (512 if mode == 'cumulative' else 256)


def test_calls_outside_a_training_step_leave_the_state_alone():
    loss_fn = ARBLoss(count_mode='cumulative')
    logits, label = make_batch(seed=18)
    loss_fn(logits, label)
    after_step = loss_fn.estimator.counts.clone()
    with torch.no_grad():
        loss_fn(logits, label, reduction_override='none')
    loss_fn.eval()
    loss_fn(logits, label)
    torch.testing.assert_close(loss_fn.estimator.counts, after_step)


def test_heads_share_one_count_per_step(monkeypatch):
    # Decode and auxiliary heads, and the OHEM sampler of the decode head,
    # see the same labels in a step: one histogram (and, distributed, one
    # all_reduce) for all of them; each loss keeps its own state.
    from mmseg.models.decode_heads import FCNHead

    from mmseg_arb.counting import begin_step, end_step, step_histogram
    calls = []
    original = step_histogram.__globals__['class_histogram']
    monkeypatch.setitem(step_histogram.__globals__, 'class_histogram',
                        lambda *a: calls.append(a) or original(*a))
    decode = _ohem_head(
        dict(type='ARBLoss', count_mode='cumulative'), min_kept=100)
    aux = FCNHead(
        in_channels=4,
        channels=8,
        num_convs=1,
        num_classes=C,
        loss_decode=dict(
            type='ARBLoss', count_mode='ema', momentum=0.5, loss_weight=0.4))
    feats = [torch.randn(2, 4, 8, 8)]
    samples = _samples(ignored_rows=3)
    labels = torch.stack([s.gt_sem_seg.data[0] for s in samples])
    batch = torch.as_tensor(naive_counts(labels, C))
    for step in range(2):
        begin_step()
        try:
            loss = decode.loss(feats, samples, None)['loss_arb'] + \
                aux.loss(feats, samples, None)['loss_arb']
        finally:
            end_step()
        loss.backward()
        assert len(calls) == step + 1
    torch.testing.assert_close(decode.loss_decode.estimator.counts, 2 * batch)
    torch.testing.assert_close(aux.loss_decode.estimator.counts, 0.75 * batch)
    decode.loss(feats, samples, None)  # outside a step: each call counts
    assert len(calls) == 4


def test_a_loss_not_moved_to_the_labels_device():
    # Plain PyTorch use: ARBLoss() called on device tensors without .to().
    meta = torch.device('meta')
    logits = torch.empty(2, C, 4, 4, device=meta)
    label = torch.empty(2, 4, 4, dtype=torch.int64, device=meta)
    loss_fn = ARBLoss(count_mode='cumulative')
    loss_fn(logits, label)  # nothing learnt yet: the state follows
    assert loss_fn.estimator.counts.device == meta
    assert loss_fn.estimator.label_guard.bad_labels.device == meta
    prior = ARBLoss(count_mode='prior', class_counts=[1.0] * C)
    with pytest.raises(RuntimeError, match='move the loss with the model'):
        prior(logits, label)


@pytest.mark.slow
def test_compiled_loss_inside_counting_steps_matches_eager():
    # With ClassCountHook the step's shared histogram is a graph break;
    # the compiled call must still give the eager loss, gradient, counts.
    from mmseg_arb.counting import begin_step, end_step
    torch._dynamo.reset()
    eager, compiled = (
        ARBLoss(count_mode='ema', momentum=0.3) for _ in range(2))
    compiled.estimator.label_guard.read_by_hook = True
    compiled_fn = torch.compile(compiled, backend='aot_eager')
    for seed in range(3):
        logits, label = make_batch(seed=seed, c=19, h=16, w=16)
        z = logits.detach().float().requires_grad_()
        z_compiled = z.detach().clone().requires_grad_()
        expected = eager(z, label)
        begin_step()
        try:
            loss = compiled_fn(z_compiled, label)
        finally:
            end_step()
        assert_same_call(eager, compiled, (expected, z), (loss, z_compiled))
    torch._dynamo.reset()


def test_losses_with_their_own_label_maps_opt_out_of_step_sharing():
    from mmseg_arb.counting import begin_step, end_step
    _, labels = make_batch(seed=19)
    _, pseudo = make_batch(seed=20, classes=[0, 1])
    logits = torch.randn(2, C, 6, 5)
    shared, own = ARBLoss(count_mode='cumulative'), ARBLoss(
        count_mode='cumulative', share_step_counts=False)
    begin_step()
    try:
        shared(logits, labels)
        own(logits, pseudo)  # same shape, other labels
    finally:
        end_step()
    assert own.estimator.counts.tolist() == naive_counts(pseudo, C).tolist()


def test_bad_labels_on_a_device_outside_training_steps(monkeypatch):
    # As on a GPU (reads deferred): an evaluation call checks at once; a
    # sampler's no_grad ranking call in a training step adds nothing (the
    # step's own call counts the same labels).
    from mmseg_arb.counting import label_guard
    monkeypatch.setattr(label_guard, 'reads_are_free', lambda device: False)
    logits, label = make_batch(seed=21)
    label[0, 0, 0] = 9
    loss_fn = ARBLoss()
    with torch.no_grad():
        loss_fn(logits, label, reduction_override='none')
    assert loss_fn.estimator.label_guard.bad_labels.tolist() == [0, 0, 0]
    loss_fn(logits, label)
    assert loss_fn.estimator.label_guard.bad_labels.tolist() == [1, 9, 0]
    loss_fn.eval()
    with pytest.raises(LabelRangeError, match=r'\[9\]'):
        loss_fn(logits, label)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_counts_stay_exact_float64_in_a_half_precision_model(dtype):
    # model.half() / .to(torch.bfloat16) cast every floating buffer: the
    # counts must stay float64 (fp16 overflows at 65504 pixels: count inf,
    # shift inf, loss NaN; bf16 rounds counts above 256).
    from mmseg.models.decode_heads import FCNHead
    head = FCNHead(
        in_channels=4,
        channels=8,
        num_convs=1,
        num_classes=C,
        loss_decode=dict(type='ARBLoss', count_mode='cumulative'))
    head.to(dtype)
    estimator = head.loss_decode.estimator
    assert estimator.counts.dtype == torch.float64
    feats = [torch.randn(2, 4, 32, 32, dtype=dtype)]
    counted = torch.zeros(C, dtype=torch.float64)
    for step in range(3):  # 3 x 2 x 128 x 128 = 98304 pixels > 65504
        samples = _samples(n=2, size=128, seed=step)
        losses = head.loss(feats, samples, train_cfg=None)
        assert torch.isfinite(losses['loss_arb']).all()
        losses['loss_arb'].backward()
        labels = torch.stack([s.gt_sem_seg.data[0] for s in samples])
        counted += torch.as_tensor(naive_counts(labels, C))
    assert estimator.counts.dtype == torch.float64
    assert torch.equal(estimator.counts, counted)
    assert counted.sum() > 65504
    # Its checkpoint carries the exact counts into a float32 model.
    fresh = FCNHead(
        in_channels=4,
        channels=8,
        num_convs=1,
        num_classes=C,
        loss_decode=dict(type='ARBLoss', count_mode='cumulative'))
    fresh.load_state_dict(head.state_dict())
    assert torch.equal(fresh.loss_decode.estimator.counts, counted)


def test_a_pixel_weight_that_requires_grad_gets_its_gradient(monkeypatch):
    # The fused backward returns no gradient for `weight`: such a call must
    # take the PyTorch path even where the kernels apply.
    from mmseg_arb.ops import cuda_ext
    monkeypatch.setattr(cuda_ext, 'cuda_ops_apply', lambda t: True)
    logits = torch.randn(2, C, 4, 4, requires_grad=True)
    label = torch.randint(C, (2, 4, 4))
    weight = torch.rand(2, 4, 4, requires_grad=True)
    counts = torch.arange(1, C + 1, dtype=torch.float64)
    loss = arb_loss(logits, label, counts, weight=weight)
    loss.backward()
    per_pixel = torch.nn.functional.cross_entropy(
        logits.detach().double() + counts.log()[None, :, None, None],
        label,
        reduction='none')
    torch.testing.assert_close(
        weight.grad.double(), per_pixel / label.numel(), rtol=1e-5, atol=1e-7)


def learned_class_weight():
    return torch.nn.Parameter(torch.linspace(0.5, 2.0, C))


@pytest.mark.parametrize('path', ['pytorch', 'cuda_ops'])
@pytest.mark.parametrize(
    'caller', ['arb_loss', 'arb_loss p=0.5', 'ARBLoss', 'ARBLoss p=0.5', 'op'])
def test_class_weight_that_requires_grad_is_an_error(path, caller,
                                                     monkeypatch):
    # The PyTorch path used to give such a weight no gradient (and its
    # denominator one), silently; the fused path raised, telling the user
    # to call what they had called. Every path and caller now refuses it
    # and says what to do. The kernels' path runs on the meta device.
    from mmseg_arb.ops import cuda_ext, fused_arb_loss
    from mmseg_arb.ops.shifted_cross_entropy import shifted_cross_entropy
    device = 'cpu'
    if path == 'cuda_ops':
        monkeypatch.setattr(cuda_ext, 'cuda_ops_apply', lambda t: True)
        device = 'meta'
    logits, label = make_batch()
    logits = logits.detach().float().to(device).requires_grad_()
    label = label.to(device)
    weight = learned_class_weight()
    if device == 'meta':
        weight = torch.nn.Parameter(weight.detach().to(device))
    counts = torch.arange(1.0, C + 1, device=device)
    power = 0.5 if 'p=0.5' in caller else 0.0
    if caller.startswith('arb_loss'):

        def call():
            return arb_loss(
                logits, label, counts, class_weight=weight, weight_power=power)
    elif caller.startswith('ARBLoss'):
        loss_fn = ARBLoss(
            weight_power=power, class_weight=[1.0] * C).to(device)
        loss_fn.class_weight = weight

        def call():
            return loss_fn(logits, label)
    elif path == 'pytorch':

        def call():
            return shifted_cross_entropy(logits, label, torch.zeros(C), weight,
                                         255)
    else:

        def call():
            return fused_arb_loss(logits, label, torch.zeros(C, device=device),
                                  weight)

    with pytest.raises(
            ValueError,
            match=r'class_weight requires grad.*'
            r'class_weight\.detach\(\)'):
        call()
    with torch.no_grad():  # e.g. evaluation: no gradient asked for
        call()
