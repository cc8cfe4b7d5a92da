"""How a kernel's results are checked: the tolerance, and a wrong kernel
(on the host emulator) failing the loss and count checks."""
import emulated_ops
import pytest
import torch

from mmseg_arb.ops import self_check

CPU = torch.device('cpu')


def test_within_scales_with_the_yardstick():
    truth = torch.tensor([1.0, -2.0, 100.0], dtype=torch.float64)
    yardstick = truth + torch.tensor([0, 1e-4, 0], dtype=torch.float64)
    ok, err, ref = self_check.within(truth + 2e-4, truth, yardstick)
    assert ok and err == pytest.approx(2e-4) and ref == pytest.approx(1e-4)
    assert not self_check.within(truth + 5e-4, truth, yardstick)[0]
    # An exact yardstick leaves the floor: a few float32 ulps of the truth.
    assert self_check.within(truth + 5e-5, truth, truth)[0]
    assert not self_check.within(truth + 2e-4, truth, truth)[0]
    assert not self_check.within(truth * float('nan'), truth, yardstick)[0]


# ------------------------------------- the kernel checks, on the emulator


@emulated_ops.needs_nvcc
@pytest.mark.parametrize(
    'wrong', ['class_histogram', 'arb_loss_forward', 'arb_loss_backward'])
def test_a_wrong_kernel_fails_its_check(kernels, wrong):
    kernels(wrong)
    if wrong == 'class_histogram':
        result = self_check.check_histogram(
            CPU, 'count kernel', torch.ops.mmseg_arb.class_histogram)
        assert 'entries [1] differ' in result.detail  # class 0's count
    else:
        result = self_check.check_loss(CPU, torch.float32, 100.0, 'fused loss',
                                       self_check.fused_loss)
        what = 'gradient' if wrong == 'arb_loss_backward' else 'loss'
        assert f'none {what} error' in result.detail
    assert not result.passed and result.line().startswith('FAIL')
