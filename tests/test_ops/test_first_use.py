"""The first-use guard, on the kernels themselves (the host emulator serves
CPU tensors here as the GPU would): right kernels are used with no word,
wrong ones are dropped for the PyTorch path with one warning naming
``mmseg-arb check``, once per device and dtype, and the switch turns it
off."""
import emulated_ops
import pytest
import torch

from mmseg_arb.models.losses import ARBLoss
from mmseg_arb.ops import cuda_ext, first_use

pytestmark = emulated_ops.needs_nvcc
LOSS_OPS = {'mmseg_arb::arb_loss_forward', 'mmseg_arb::arb_loss_backward'}


@pytest.fixture
def warnings(monkeypatch):
    """A fresh guard; its warnings are collected."""
    monkeypatch.setattr(first_use, '_verdicts', {})
    lines = []
    monkeypatch.setattr(cuda_ext, '_log', lines.append)
    return lines


@pytest.fixture
def kernels(emu, monkeypatch):
    """``kernels(wrong='')``: the kernels serve CPU tensors, on the
    emulator, one of them wrong if named."""
    libraries = []

    def use(wrong=''):
        monkeypatch.setattr(cuda_ext, '_kernels_serve', lambda t: True)
        libraries.append(emulated_ops.register(emu, wrong))

    yield use
    for library in libraries:
        library._destroy()


def training(steps=2, dtype=torch.float32):
    """Losses, gradients and the loss ops each step dispatched, of an
    ARBLoss with count-driven weights."""
    loss_fn = ARBLoss(
        count_mode='cumulative',
        num_classes=19,
        weight_power=0.5,
        dist_sync=False,
        avg_non_ignore=True)
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        logits = (torch.randn(2, 19, 16, 8, generator=gen) * 5).to(dtype)
        logits.requires_grad_()
        label = torch.randint(0, 19, (2, 16, 8), generator=gen)
        label[:, ::5] = 255
        with torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            loss = loss_fn(logits, label)
            loss.backward()
        ops = {e.key for e in prof.key_averages()} & LOSS_OPS
        out.append((loss.detach(), logits.grad, ops))
    return out


def pytorch_path(dtype=torch.float32):
    return training(dtype=dtype)  # before `kernels`: no kernel serves CPU


def assert_same(steps, want):
    for (loss, grad, _), (want_loss, want_grad, _) in zip(steps, want):
        torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-7)


def test_right_kernels_are_used_without_a_word(kernels, warnings):
    want = pytorch_path()
    kernels()
    steps = training()
    assert [ops for _, _, ops in steps] == [LOSS_OPS, LOSS_OPS]
    assert warnings == []
    assert first_use._verdicts == {(torch.device('cpu'), torch.float32): True}
    assert_same(steps, want)


@pytest.mark.parametrize('wrong', ['arb_loss_forward', 'arb_loss_backward'])
def test_wrong_kernels_give_way_to_the_pytorch_path_with_one_warning(
        kernels, warnings, wrong):
    want = pytorch_path()
    kernels(wrong)
    steps = training(steps=3)
    # The probe's own calls in the first step, then none.
    assert [ops for _, _, ops in steps[1:]] == [set(), set()]
    assert_same(steps, want)
    assert len(warnings) == 1
    what = 'gradient' if wrong == 'arb_loss_backward' else 'loss'
    assert 'disagree with float64 cross-entropy on cpu for float32' in \
        warnings[0] and f'none {what} of a 2x19x16x8 probe' in warnings[0]
    assert 'Run `mmseg-arb check`' in warnings[0]
    assert 'MMSEG_ARB_FIRST_USE_CHECK=0 turns this check off' in warnings[0]


def test_the_switch_turns_the_guard_off(kernels, warnings, monkeypatch):
    want = pytorch_path()
    monkeypatch.setenv('MMSEG_ARB_FIRST_USE_CHECK', '0')
    kernels('arb_loss_forward')
    steps = training()
    assert [ops for _, _, ops in steps] == [LOSS_OPS, LOSS_OPS]
    assert warnings == [] and first_use._verdicts == {}
    for (loss, _, _), (want_loss, _, _) in zip(steps, want):  # unguarded
        torch.testing.assert_close(loss, want_loss * 1.01)


def test_each_device_and_dtype_is_probed_once(kernels, warnings, monkeypatch):
    kernels()
    probed = []
    probe = first_use._probe
    monkeypatch.setattr(
        first_use, '_probe', lambda device, dtype: probed.append(
            (device, dtype)) or probe(device, dtype))
    training(dtype=torch.float32)
    training(dtype=torch.bfloat16)
    training(dtype=torch.float32)
    cpu = torch.device('cpu')
    assert probed == [(cpu, torch.float32), (cpu, torch.bfloat16)]
    assert warnings == []
