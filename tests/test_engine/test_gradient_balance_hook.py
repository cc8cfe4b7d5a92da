from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.decode_heads import FCNHead
from mmseg.structures import SegDataSample
from torch.utils._python_dispatch import TorchDispatchMode

import mmseg_arb  # noqa: F401
from mmseg_arb.engine.hooks import (GradientBalanceHook,
                                    attraction_repulsion_norms)

C = 5


def tiny_head():
    torch.manual_seed(0)
    return FCNHead(
        in_channels=4,
        channels=4,
        num_convs=0,
        concat_input=False,
        dropout_ratio=0.0,
        num_classes=C,
        loss_decode=dict(type='ARBLoss'))


def batch():
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 4, 5, 6, generator=g)]
    samples = []
    for _ in range(2):
        label = torch.randint(C, (1, 20, 24), generator=g)
        label[:, :2] = 255
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return feats, samples


def reference_norms(head, feats, samples):
    """Attraction / repulsion by autograd on a linear surrogate."""
    label = torch.stack([s.gt_sem_seg.data for s in samples])[:, 0]
    logits = F.interpolate(
        head.forward(feats),
        size=label.shape[-2:],
        mode='bilinear',
        align_corners=head.align_corners)
    loss = head.loss_decode(logits, label, ignore_index=255)
    (grad, ) = torch.autograd.grad(loss, logits, retain_graph=True)
    valid = label != 255
    own = F.one_hot(torch.where(valid, label, 0), C).permute(0, 3, 1, 2)
    own = own.bool() & valid[:, None]
    other = ~own & valid[:, None]
    out = []
    for mask in (own, other):
        (g_w, ) = torch.autograd.grad(
            (grad * mask * logits).sum(),
            head.conv_seg.weight,
            retain_graph=True)
        out.append(g_w.flatten(1).norm(dim=1).double())
    return out


def fake_runner(head, iteration):
    return SimpleNamespace(
        model=SimpleNamespace(decode_head=head),
        iter=iteration,
        rank=0,
        message_hub=mock.MagicMock(),
        visualizer=mock.MagicMock(),
        train_dataloader=SimpleNamespace(
            dataset=SimpleNamespace(metainfo=dict(classes=tuple('abcde')))))


def test_hook_norms_match_autograd_and_cost_nothing_off_interval(tmp_path):
    head = tiny_head()
    feats, samples = batch()
    hook = GradientBalanceHook(interval=2)

    # Iteration 1 of 2: not measured, no module hooks attached.
    runner = fake_runner(head, iteration=0)
    hook.before_train_iter(runner, 0)
    assert not head.conv_seg._forward_hooks
    head.loss(feats, samples, train_cfg=None)['loss_arb'].backward()
    hook.after_train_iter(runner, 0)
    assert hook.history == []

    runner = fake_runner(head, iteration=1)
    hook.before_train_iter(runner, 1)
    head.zero_grad()
    head.loss(feats, samples, train_cfg=None)['loss_arb'].backward()
    hook.after_train_iter(runner, 1)
    assert not head.conv_seg._forward_hooks  # detached again
    attraction = hook.history[-1]['attraction']
    repulsion = hook.history[-1]['repulsion']

    ref_att, ref_rep = reference_norms(head, feats, samples)
    np.testing.assert_allclose(attraction, ref_att.numpy(), rtol=1e-6)
    np.testing.assert_allclose(repulsion, ref_rep.numpy(), rtol=1e-6)
    # attraction + repulsion rebuild the full gradient of the classifier
    assert np.all(attraction > 0) and np.all(repulsion > 0)
    runner.message_hub.update_scalar.assert_any_call(
        'train/grad_balance', float(np.median(attraction / repulsion)))

    runner.work_dir = str(tmp_path)
    hook.after_train(runner)
    assert (tmp_path / 'gradient_balance.png').stat().st_size > 0
    assert (tmp_path / 'gradient_balance.json').exists()


class _LargeOutputs(TorchDispatchMode):
    """The storages of op outputs with at least ``numel`` elements."""

    def __init__(self, numel):
        super().__init__()
        self.numel = numel
        self.storages = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out, ):
            if isinstance(t, torch.Tensor) and t.numel() >= self.numel:
                self.storages.add(t.untyped_storage().data_ptr())
        return out


def test_measuring_takes_one_logits_sized_buffer():
    # No (N, C, H, W) one-hot, no copies for each part: one float32 buffer
    # beside the gradient autograd holds anyway.
    g = torch.Generator().manual_seed(2)
    grad = torch.randn(2, 150, 64, 64, generator=g)
    label = torch.randint(150, (2, 64, 64), generator=g)
    label[:, :3] = 255
    features = torch.randn(2, 32, 16, 16, generator=g)
    with _LargeOutputs(grad.numel()) as large:
        attraction_repulsion_norms(grad, label, features, False)
    assert len(large.storages - {grad.untyped_storage().data_ptr()}) == 1


def test_labels_of_any_integer_dtype_give_the_same_norms():
    """The valid pixels are the loss's (``label_masks``): with uint8 labels
    and more classes than 255 every label is a class, and an ignore index
    uint8 cannot hold ignores nothing, not 255."""
    g = torch.Generator().manual_seed(2)
    num_classes = 300
    label = torch.randint(256, (2, 6, 8), generator=g)
    grad = torch.randn(2, num_classes, 6, 8, generator=g)
    features = torch.randn(2, 3, 3, 4, generator=g)
    for ignore_index in (255, -1):
        expected = attraction_repulsion_norms(grad, label, features, False,
                                              ignore_index)
        narrow = attraction_repulsion_norms(grad, label.to(torch.uint8),
                                            features, False, ignore_index)
        for wide, small in zip(expected, narrow):
            torch.testing.assert_close(small, wide)
