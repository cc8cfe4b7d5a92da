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

The label guard's deferred path runs here too (it only accumulates on the
device); its reads happen at logging steps, outside the step. The one
exception is explicit: the fused loss's first-use check reads its verdict
once per device and dtype of a process, at the first fused call.

The CUDA-op path also compiles here: ``torch.compile`` traces the whole
ARBLoss call through the ops' fake implementations, forward and backward,
so a schema or tracing regression of an op fails CI without a GPU.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmseg_arb.counting import prepare_counts
from mmseg_arb.models.losses import ARBLoss, arb_loss
from mmseg_arb.ops import class_histogram, cuda_ext, first_use

META = torch.device('meta')
COUNT_OPS = {'mmseg_arb::class_histogram', 'mmseg_arb::prepare_counts'}
LOSS_OPS = {'mmseg_arb::arb_loss_forward', 'mmseg_arb::arb_loss_backward'}


@pytest.fixture(params=['pytorch', 'cuda_ops'])
def uses_ops(request, monkeypatch) -> bool:
    """The path under test: True where it must call the mmseg_arb ops."""
    if request.param == 'cuda_ops':
        monkeypatch.setattr(cuda_ext, 'cuda_ops_apply', lambda t: True)
    return request.param == 'cuda_ops'


def called_ops(fn) -> set:
    """The mmseg_arb operators that ``fn()`` calls."""
    with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {
        e.key
        for e in prof.key_averages() if e.key.startswith('mmseg_arb::')
    }


def test_the_meta_device_catches_host_reads():
    # Guards this test's premise for the installed torch.
    x = torch.ones(3, device=META)
    for read in (lambda: x.sum().item(), lambda: bool(x.sum() > 0),
                 lambda: x[x > 0], lambda: torch.nonzero(x),
                 lambda: torch.bincount(x.long())):
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


@pytest.mark.parametrize('dtype', [torch.int64, torch.int32, torch.uint8])
@pytest.mark.parametrize('mode', ['batch', 'cumulative', 'ema', 'prior'])
@pytest.mark.parametrize('update', [True, False])
def test_counting_and_prepare(dtype, mode, update, uses_ops):
    label = torch.empty(2, 17, 23, dtype=dtype, device=META)
    counts = torch.zeros(19, dtype=torch.float64, device=META)

    def step():
        hist = class_histogram(label, 19, 255)
        assert hist.shape == (23, ) and hist.dtype == torch.int64
        assert hist.device == META
        prepared = prepare_counts(
            hist,
            counts,
            mode,
            momentum=0.1,
            smoothing=0.5,
            tau=0.7,
            weight_power=0.5,
            update=update,
            class_weight=torch.empty(19, device=META),
            ranks=2)
        assert prepared.shape == (39, )
        assert prepared.dtype == torch.float32

    assert called_ops(step) == (COUNT_OPS if uses_ops else set())


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_functional_loss_and_backward(dtype, weighted, avg_non_ignore,
                                      uses_ops):
    logits = torch.empty(
        2, 19, 8, 8, dtype=dtype, device=META, requires_grad=True)
    label = torch.empty(2, 8, 8, dtype=torch.int64, device=META)

    def step():
        loss = arb_loss(
            logits,
            label,
            torch.empty(19, dtype=torch.float64, device=META),
            weight=torch.empty(2, 8, 8, device=META) if weighted else None,
            class_weight=torch.empty(19, device=META) if weighted else None,
            avg_non_ignore=avg_non_ignore)
        loss.backward()
        assert loss.shape == () and logits.grad.shape == logits.shape
        assert logits.grad.dtype == dtype

    assert called_ops(step) == (LOSS_OPS if uses_ops else set())


@pytest.mark.parametrize('mode', ['batch', 'cumulative', 'ema', 'prior'])
def test_module_training_steps_and_sampler_calls(mode, uses_ops):
    loss_fn = make_loss(mode)
    logits = torch.empty(2, 19, 8, 8, device=META, requires_grad=True)
    label = torch.empty(2, 8, 8, dtype=torch.int64, device=META)

    def steps():
        # Training steps and a sampler's ranking call (an evaluation call,
        # outside the training loop, checks its labels at once by design).
        for _ in range(2):
            loss_fn(logits, label).backward()
        with torch.no_grad():  # e.g. an OHEM sampler ranking pixels
            loss_fn(logits, label, reduction_override='none')

    expected = COUNT_OPS | LOSS_OPS if uses_ops else set()
    assert called_ops(steps) == expected
    assert loss_fn.estimator.counts.device == META
    # The deferred label check accumulated on the device, read nothing.
    assert loss_fn.estimator.label_guard.bad_labels.device == META


def make_loss(mode, **kwargs):
    prior = dict(class_counts=[float(i + 1) for i in range(19)]) \
        if mode == 'prior' else {}
    return ARBLoss(
        count_mode=mode,
        num_classes=19,
        dist_sync=False,
        avg_non_ignore=True,
        **prior,
        **kwargs).to(META)


@pytest.mark.parametrize('mode', ['batch', 'cumulative', 'ema', 'prior'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('weight_power', [0.0, 0.5])
def test_the_cuda_op_path_compiles_as_one_graph(mode, dtype, weight_power,
                                                monkeypatch):
    # fullgraph=True: any graph break fails; aot_eager also functionalises
    # the in-place count update and traces the backward through
    # AOTAutograd, where an op argument named like one of the wrappers'
    # own (e.g. `mode`) or a schema that lies about aliasing fails.
    # With ClassCountHook reading the label guard (as in the mmengine
    # Runner), a training step has no Python-side state at all.
    monkeypatch.setattr(cuda_ext, 'cuda_ops_apply', lambda t: True)
    torch._dynamo.reset()
    loss_fn = make_loss(mode, loss_weight=0.4, weight_power=weight_power)
    loss_fn.estimator.label_guard.read_by_hook = True
    compiled = torch.compile(loss_fn, fullgraph=True, backend='aot_eager')
    logits = torch.empty(
        2, 19, 8, 8, dtype=dtype, device=META, requires_grad=True)
    label = torch.empty(2, 8, 8, dtype=torch.int64, device=META)

    def step():
        loss = compiled(logits, label)
        loss.backward()
        assert loss.shape == () and logits.grad.dtype == dtype

    assert called_ops(step) == COUNT_OPS | LOSS_OPS
    torch._dynamo.reset()


class _Dispatched(TorchDispatchMode):
    """Records the operators that reach the device backend."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('mode', ['batch', 'ema', 'prior'])
@pytest.mark.parametrize('weight_power', [0.0, 0.5])
def test_a_training_call_is_four_ops_of_ours(mode, weight_power, monkeypatch):
    # The launch budget of a call (count, prepare, loss, backward) on the
    # kernels' path, guarded here where it is decided: in the Python that
    # dispatches. Each op below is one launch but the histogram (a zero
    # fill, the pixel total, then the kernel) and the reduced forward (the
    # kernel, then its one-block reduction): 7 launches of ours, plus the
    # label guard's two
    # element-wise updates of its totals (a training step's) and autograd's
    # seed of the backward (ones_like), which cross-entropy pays too.
    monkeypatch.setattr(cuda_ext, 'cuda_ops_apply', lambda t: True)
    # Count-driven class weights, and the mean's denominator over all
    # ranks that goes with them, come from the same prepare op: no launch
    # more.
    loss_fn = make_loss(mode, weight_power=weight_power)
    loss_fn.estimator.label_guard.read_by_hook = True
    logits = torch.empty(2, 19, 8, 8, device=META, requires_grad=True)
    label = torch.empty(2, 8, 8, dtype=torch.int64, device=META)
    with _Dispatched() as dispatched:
        loss_fn(logits, label).backward()
    views = {
        'aten.slice', 'aten.view', 'aten.select', 'aten.detach', 'aten.unbind'
    }
    assert [op for op in dispatched.ops if op not in views] == [
        'mmseg_arb.class_histogram', 'mmseg_arb.prepare_counts', 'aten.add_',
        'aten.clamp_', 'mmseg_arb.arb_loss_forward', 'aten.ones_like',
        'mmseg_arb.arb_loss_backward'
    ]


def test_the_first_use_check_is_the_one_host_read_once_per_dtype(monkeypatch):
    # The fused loss's first-use check (ops/first_use.py) reads its
    # verdict back to the host: at the first fused call of each device and
    # dtype of a process, then never. Its probe cannot run on meta and is
    # replaced here; the steps around it read nothing.
    monkeypatch.setattr(cuda_ext, '_kernels_serve', lambda t: True)
    monkeypatch.setattr(first_use, '_verdicts', {})
    probed = []
    monkeypatch.setattr(
        first_use, '_probe', lambda device, dtype: probed.append(
            (device, dtype)) or '')
    loss_fn = make_loss('cumulative')
    label = torch.empty(2, 8, 8, dtype=torch.int64, device=META)

    def steps():
        for dtype in (torch.float32, torch.float32, torch.bfloat16,
                      torch.float32):
            logits = torch.empty(
                2, 19, 8, 8, dtype=dtype, device=META, requires_grad=True)
            loss_fn(logits, label).backward()

    assert called_ops(steps) == COUNT_OPS | LOSS_OPS
    assert probed == [(META, torch.float32), (META, torch.bfloat16)]


def test_the_guarded_switch_compiles_as_one_graph(monkeypatch):
    # Under torch.compile no probe can run: a verdict holds, an unverified
    # pair waits for an eager call, and neither breaks the graph.
    monkeypatch.setattr(cuda_ext, '_kernels_serve', lambda t: True)
    monkeypatch.setattr(first_use, '_verdicts', {(META, torch.float32): True})

    def no_probe(device, dtype):
        raise AssertionError('probed while tracing')

    monkeypatch.setattr(first_use, '_probe', no_probe)
    torch._dynamo.reset()
    loss_fn = make_loss('batch')
    loss_fn.estimator.label_guard.read_by_hook = True
    compiled = torch.compile(loss_fn, fullgraph=True, backend='aot_eager')
    label = torch.empty(2, 8, 8, dtype=torch.int64, device=META)
    for dtype in (torch.float32, torch.bfloat16):
        logits = torch.empty(
            2, 19, 8, 8, dtype=dtype, device=META, requires_grad=True)
        assert called_ops(lambda: compiled(logits, label).backward()) == \
            COUNT_OPS | LOSS_OPS
    torch._dynamo.reset()
