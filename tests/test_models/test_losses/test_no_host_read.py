"""Count + loss + backward never read device data on the host, on either
path: the PyTorch one and the CUDA-op one.

On a GPU such a read (``.item()``, ``bool(tensor)``, ``nonzero``, boolean
indexing, ``bincount``, ...) stalls the training loop until the device has
caught up. The GPU tests check the whole step under
``torch.cuda.set_sync_debug_mode('error')``; here the same computation runs
on the ``meta`` device, which has shapes but no data, so any such read
raises. A read that creeps into the PyTorch path (the one GPUs use when the
CUDA extension is not loaded) therefore fails CI on a CPU machine. The
CUDA-op path runs here too: switched on for ``meta`` tensors, it calls
``torch.ops.mmseg_arb.*``, whose fake implementations give shapes without
data, so the Python around the kernels is held to the same rule.

The label guard is left out: its GPU path (a pinned copy read when its
CUDA event has completed) is CUDA-only and tested on a GPU, and on other
devices it checks the labels at once by design.
"""
import pytest
import torch

from mmseg_arb.models.losses import ARBLoss, arb_loss
from mmseg_arb.ops import count_classes, cuda_ext, update_count_state_

META = torch.device('meta')
COUNT_OPS = {'mmseg_arb::class_histogram', 'mmseg_arb::update_counts'}
LOSS_OPS = {'mmseg_arb::arb_loss_forward', 'mmseg_arb::arb_loss_backward'}


@pytest.fixture(params=['pytorch', 'cuda_ops'])
def uses_ops(request, monkeypatch) -> bool:
    """The path under test: True where it must call the mmseg_arb ops."""
    if request.param == 'cuda_ops':
        monkeypatch.setattr(cuda_ext, 'cuda_ops_apply', lambda t: True)
    return request.param == 'cuda_ops'


def called_ops(fn) -> set:
    """The mmseg_arb operators that ``fn()`` calls."""
    with torch.profiler.profile(activities=[
            torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()
            if e.key.startswith('mmseg_arb::')}


def test_the_meta_device_catches_host_reads():
    # Guards this test's premise for the installed torch.
    x = torch.ones(3, device=META)
    for read in (lambda: x.sum().item(), lambda: bool(x.sum() > 0),
                 lambda: x[x > 0], lambda: torch.nonzero(x),
                 lambda: torch.bincount(x.long())):
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


@pytest.mark.parametrize('dtype', [torch.int64, torch.int32, torch.uint8])
@pytest.mark.parametrize('mode', ['replace', 'accumulate', 'moving_average'])
def test_counting_and_state_update(dtype, mode, uses_ops):
    label = torch.empty(2, 17, 23, dtype=dtype, device=META)
    state = torch.zeros(19, dtype=torch.float64, device=META)

    def step():
        counts, invalid = count_classes(label, 19, 255)
        assert counts.shape == (19, ) and counts.dtype == torch.int64
        assert invalid.shape == () and invalid.device == META
        update_count_state_(state, counts, mode, momentum=0.1)

    assert called_ops(step) == (COUNT_OPS if uses_ops else set())


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_functional_loss_and_backward(dtype, weighted, avg_non_ignore,
                                      uses_ops):
    logits = torch.empty(2, 19, 8, 8, dtype=dtype, device=META,
                         requires_grad=True)
    label = torch.empty(2, 8, 8, dtype=torch.int64, device=META)

    def step():
        loss = arb_loss(
            logits, label, torch.empty(19, dtype=torch.float64, device=META),
            weight=torch.empty(2, 8, 8, device=META) if weighted else None,
            class_weight=torch.empty(19, device=META) if weighted else None,
            avg_non_ignore=avg_non_ignore)
        loss.backward()
        assert loss.shape == () and logits.grad.shape == logits.shape
        assert logits.grad.dtype == dtype

    assert called_ops(step) == (LOSS_OPS if uses_ops else set())


@pytest.mark.parametrize('mode', ['batch', 'cumulative', 'ema', 'prior'])
def test_module_step_train_and_eval(mode, uses_ops, monkeypatch):
    kwargs = dict(class_counts=[float(i + 1) for i in range(19)]) \
        if mode == 'prior' else {}
    loss_fn = ARBLoss(count_mode=mode, num_classes=19, dist_sync=False,
                      avg_non_ignore=True, **kwargs).to(META)
    observed = []
    monkeypatch.setattr(loss_fn.estimator.label_guard, 'observe',
                        lambda num_invalid, *args: observed.append(
                            num_invalid.device))
    logits = torch.empty(2, 19, 8, 8, device=META, requires_grad=True)
    label = torch.empty(2, 8, 8, dtype=torch.int64, device=META)

    def steps():
        for _ in range(2):
            loss_fn(logits, label).backward()
        loss_fn.eval()
        loss_fn(logits, label)

    expected = COUNT_OPS | LOSS_OPS if uses_ops else set()
    if mode == 'prior':  # a fixed state: nothing to update
        expected.discard('mmseg_arb::update_counts')
    assert called_ops(steps) == expected
    assert observed == [META] * 3
    assert loss_fn.estimator.counts.device == META
