"""GPU tests of the CUDA kernels against the PyTorch path (skipped on CPU)."""
import pytest
import torch

from mmseg_arb.counting import LabelRangeError, log_count_shift, prepare_counts
from mmseg_arb.models.losses import ARBLoss, arb_loss
from mmseg_arb.models.losses.arb_loss import _shifted_loss
from mmseg_arb.ops import (class_histogram, class_histogram_pytorch, cuda_ext,
                           cuda_ops_status, first_use, load_cuda_ops)
from mmseg_arb.ops.library import SCHEMAS

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA GPU')


@pytest.fixture(scope='module', autouse=True)
def cuda_ops():
    assert load_cuda_ops(), cuda_ops_status()


def long_tailed_labels(shape, num_classes, dtype=torch.int64, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = 1.0 / torch.arange(1, num_classes + 1, dtype=torch.float64)
    n = int(torch.tensor(shape).prod())
    label = torch.multinomial(probs, n, replacement=True, generator=g)
    label = label.view(shape)
    label[torch.rand(shape, generator=g) < 0.1] = 255 if num_classes < 255 \
        else -1
    return label.to(dtype).cuda()


# Named ids: tools/gpu_check.sh selects these tests with -k (e.g. 'int64').
@pytest.mark.parametrize(
    'dtype', [torch.int64, torch.int32, torch.uint8],
    ids=['int64', 'int32', 'uint8'])
# 8, 8, 8, 2 and 1 shared histograms per block, then global atomics.
@pytest.mark.parametrize('num_classes', [19, 150, 1024, 6000, 12287, 20000])
def test_count_kernel_matches_pytorch(dtype, num_classes):
    if dtype == torch.uint8 and num_classes > 255:
        pytest.skip('uint8 labels hold at most 256 values')
    ignore = 255 if num_classes < 255 else -1
    label = long_tailed_labels((3, 97, 131), num_classes, dtype)
    label.view(-1)[:5] = torch.tensor([0, 1, 2, 3, 4], dtype=dtype)
    if dtype != torch.uint8:
        label.view(-1)[7] = num_classes + 3  # out of range
        label.view(-1)[9] = -7 if ignore != -1 else -8
    # An unaligned view exercises the scalar head and tail.
    for view in (label, label.view(-1)[3:-5]):
        hist = class_histogram(view, num_classes, ignore)
        assert torch.equal(hist,
                           class_histogram_pytorch(view, num_classes, ignore))


@pytest.mark.parametrize('mode', ['batch', 'cumulative', 'ema', 'prior'])
@pytest.mark.parametrize('update', [True, False])
@pytest.mark.parametrize('fresh', [True, False])
def test_prepare_kernel_matches_pytorch(mode, update, fresh):
    label = long_tailed_labels((2, 64, 64), 150)
    label[0, 0, :3] = torch.tensor([160, -4, 151])
    hist = class_histogram(label, 150, 255)
    counts = torch.rand(150, dtype=torch.float64, device='cuda') * 100
    if fresh:  # nothing accumulated yet: outside a step, use the batch
        counts.zero_()
    want_counts = counts.cpu()
    weight = torch.rand(150, device='cuda') + 0.5
    for smoothing, tau, power in ((0.0, 1.0, 0.0), (0.5, 0.7, 0.5), (0.0, 0.0,
                                                                     1.0)):
        want = prepare_counts(hist.cpu(), want_counts, mode, 0.1, smoothing,
                              tau, power, 50.0, update, weight.cpu(), fresh, 4)
        got = prepare_counts(hist, counts, mode, 0.1, smoothing, tau, power,
                             50.0, update, weight, fresh, 4)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=0)
        torch.testing.assert_close(counts.cpu(), want_counts)


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5),
                                       (torch.float16, 2e-3),
                                       (torch.bfloat16, 1e-2)])
# 32x16: vector loads of 4 (fp32) or 8 (16-bit) pixels; 33x17: one pixel
# per thread; (N, C) input.
@pytest.mark.parametrize('spatial', [(32, 16), (33, 17), ()])
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('weighted', [False, True])
def test_fused_loss_matches_cpu_path(dtype, tol, spatial, reduction, weighted):
    g = torch.Generator().manual_seed(1)
    n = 2 if spatial else 300
    logits = (torch.randn(n, 19, *spatial, generator=g) * 20).to(dtype)
    label = torch.randint(19, (n, *spatial), generator=g)
    label.view(-1)[:40] = 255
    label.view(-1)[45] = 40  # out of range: no loss, no gradient
    counts = torch.bincount(label[label < 19], minlength=19).double()
    counts[4] = 0  # an absent class drops out
    label[label == 4] = 255
    shift = log_count_shift(counts)
    cw = torch.rand(19, generator=g) + 0.5 if weighted else None
    pixel_weight = torch.rand(label.shape, generator=g) if weighted else None
    keep = label.clone()
    keep.view(-1)[45] = 255  # the CPU path checks nothing: ignore it there

    def loss_of(z, y, device):
        return _shifted_loss(
            z,
            y,
            shift.to(device),
            None if pixel_weight is None else pixel_weight.to(device),
            None if cw is None else cw.to(device),
            reduction,
            None,
            255,
            avg_non_ignore=weighted,
            loss_weight=0.4)

    # Leaves of their own: for fp32, logits.float() is logits itself, and a
    # .cuda() copy of a tensor that requires grad would not be a leaf.
    z_cpu = logits.float().clone().requires_grad_()
    ref = loss_of(z_cpu, keep, 'cpu')
    grad_out = torch.rand(ref.shape, generator=g)
    ref.backward(grad_out)

    z_gpu = logits.cuda().requires_grad_()
    assert z_gpu.is_leaf
    out = loss_of(z_gpu, label.cuda(), 'cuda')
    out.backward(grad_out.cuda())
    torch.testing.assert_close(out.cpu(), ref.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(
        z_gpu.grad.float().cpu(), z_cpu.grad, rtol=tol, atol=tol)
    assert z_gpu.grad.dtype == dtype


@pytest.mark.parametrize('dtype',
                         [torch.float32, torch.float16, torch.bfloat16])
# 769 x 769 (mmseg's Cityscapes crops): no vector path, one pixel a thread.
@pytest.mark.parametrize('spatial', [(64, 64), (769, 7)])
def test_fused_loss_is_as_exact_as_float32_cross_entropy(dtype, spatial):
    """Against float64, per pixel (reduction='none'), logits x20 and shifts
    from counts 1e5 : 1 and absent classes: errors within 3x (+1e-6) of
    fp32 cross-entropy computed by PyTorch on the same GPU, in the same
    run; no loss below zero. (The host emulator checks the same logic; on
    the GPU exp2f is the hardware's approximation.)"""
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(2, 19, *spatial, generator=g) * 20).to(dtype)
    label = torch.randint(19, (2, *spatial), generator=g)
    counts = torch.randint(1, 10**5, (19, ), generator=g).double()
    counts[4] = 0
    label[label == 4] = 255
    shift = log_count_shift(counts)
    z = logits.cuda().requires_grad_()
    loss = arb_loss(z, label.cuda(), counts.cuda(), reduction='none')
    ones = torch.ones_like(loss)
    loss.backward(ones)
    x64 = logits.double() + shift.double()[None, :, None, None]
    logp = torch.log_softmax(x64, 1)
    valid = label != 255
    target = torch.where(valid, label, 0)
    truth = -logp.gather(1, target[:, None])[:, 0] * valid
    truth_grad = (logp.exp() - torch.nn.functional.one_hot(target, 19).movedim(
        -1, 1)) * valid[:, None]
    z32 = logits.float().cuda().requires_grad_()
    fp32 = torch.nn.functional.cross_entropy(
        z32 + shift.cuda()[None, :, None, None],
        label.cuda(),
        ignore_index=255,
        reduction='none')
    fp32.backward(ones)
    assert (loss >= 0).all()
    loss_err = (loss.double().cpu() - truth).abs().max().item()
    fp32_err = (fp32.detach().double().cpu() - truth).abs().max().item()
    grad_err = (z.grad.double().cpu() - truth_grad).abs().max().item()
    fp32_grad_err = (z32.grad.to(dtype).double().cpu() -
                     truth_grad).abs().max().item()
    assert loss_err <= 3 * fp32_err + 1e-6, (loss_err, fp32_err)
    assert grad_err <= 3 * fp32_grad_err + 1e-6, (grad_err, fp32_grad_err)


def test_fused_loss_backward_of_an_expanded_gradient():
    # loss(reduction='none').sum().backward() hands the kernel a gradient
    # expanded from a scalar (all strides 0): read as one value, no copy.
    logits = torch.randn(2, 19, 16, 16, device='cuda', requires_grad=True)
    label = long_tailed_labels((2, 16, 16), 19)
    shift = torch.randn(19, device='cuda')
    per_pixel = _shifted_loss(logits, label, shift, None, None, 'none', None,
                              255, False)
    (3.0 * per_pixel.sum()).backward()
    reference = logits.detach().requires_grad_()
    (3.0 * _shifted_loss(reference, label, shift, None, None, 'sum', None, 255,
                         False)).backward()
    torch.testing.assert_close(logits.grad, reference.grad)


@pytest.mark.parametrize('mode', ['batch', 'cumulative', 'ema'])
@pytest.mark.parametrize('weight_power', [0.0, 0.5])
def test_gpu_loss_matches_cpu_loss_module(mode, weight_power):
    logits = torch.randn(2, 150, 64, 64, dtype=torch.float64)
    label = long_tailed_labels((2, 64, 64), 150).cpu()
    cpu = ARBLoss(count_mode=mode, weight_power=weight_power)
    gpu = ARBLoss(count_mode=mode, weight_power=weight_power).cuda()
    for _ in range(2):
        a = cpu(logits.float(), label)
        b = gpu(logits.float().cuda(), label.cuda())
    torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gpu.estimator.counts.cpu(),
                               cpu.estimator.counts)


# 'pytorch': the path of GPUs where the extension is not loaded.
@pytest.mark.parametrize('backend', ['cuda_ops', 'pytorch'])
@pytest.mark.parametrize('mode', ['batch', 'cumulative', 'ema', 'prior'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_no_host_sync_in_count_loss_and_backward(mode, dtype, backend,
                                                 monkeypatch):
    if backend == 'pytorch':
        monkeypatch.setattr(cuda_ext, '_state', {
            'tried': True,
            'loaded': False,
            'reason': 'off for this test'
        })
    kwargs = dict(class_counts=[float(i + 1) for i in range(150)]) \
        if mode == 'prior' else {}
    loss_fn = ARBLoss(count_mode=mode, avg_non_ignore=True, **kwargs).cuda()
    label = long_tailed_labels((2, 128, 128), 150)
    logits = torch.randn(
        2, 150, 128, 128, device='cuda', dtype=dtype, requires_grad=True)
    # Warm-up: allocations, first launch, and the fused loss's first-use
    # check (ops/first_use.py), its one host read, on the first call of a
    # device and dtype only.
    loss_fn(logits, label).backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for _ in range(3):
            loss_fn(logits, label).backward()
    finally:
        torch.cuda.set_sync_debug_mode('default')
    torch.cuda.synchronize()


@pytest.mark.parametrize('mode', ['batch', 'cumulative', 'ema', 'prior'])
@pytest.mark.parametrize('hooked', [False, True])
def test_compiled_loss_matches_eager_with_the_cuda_ops(mode, hooked):
    # mmengine's compile=True: forward + backward of a compiled ARBLoss give
    # the eager loss, gradients and counts, through the CUDA ops (the
    # profiler sees them), with and without ClassCountHook's steps.
    from mmseg_arb.counting import begin_step, end_step
    torch._dynamo.reset()
    kwargs = dict(class_counts=[float(i + 1) for i in range(150)]) \
        if mode == 'prior' else {}
    eager = ARBLoss(count_mode=mode, **kwargs).cuda()
    compiled = ARBLoss(count_mode=mode, **kwargs).cuda()
    compiled.estimator.label_guard.read_by_hook = hooked
    compiled_fn = torch.compile(compiled)
    for seed in range(3):
        label = long_tailed_labels((2, 128, 128), 150, seed=seed)
        z = torch.randn(2, 150, 128, 128, device='cuda', requires_grad=True)
        z_compiled = z.detach().clone().requires_grad_()
        expected = eager(z, label)
        if hooked:
            begin_step()
        with torch.profiler.profile() as prof:
            loss = compiled_fn(z_compiled, label)
            loss.backward()
        if hooked:
            end_step()
        expected.backward()
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            z_compiled.grad, z.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compiled.estimator.counts,
                                   eager.estimator.counts)
        ops = {
            e.key
            for e in prof.key_averages() if e.key.startswith('mmseg_arb::')
        }
        assert {
            'mmseg_arb::class_histogram', 'mmseg_arb::arb_loss_forward',
            'mmseg_arb::arb_loss_backward'
        } <= ops
    torch._dynamo.reset()


def test_bad_gpu_labels_are_read_at_the_interval_and_named():
    # Without ClassCountHook the guard reads its device total itself, every
    # `interval` training steps; the message names this rank's extremes.
    loss_fn = ARBLoss().cuda()
    guard = loss_fn.estimator.label_guard
    label = long_tailed_labels((2, 32, 32), 19)
    label[0, 0, :2] = torch.tensor([77, -3])
    logits = torch.randn(2, 19, 32, 32, device='cuda')
    for _ in range(guard.interval - 1):
        loss_fn(logits, label)
    assert int(guard.bad_labels[0]) == 2 * (guard.interval - 1)
    with pytest.raises(
            LabelRangeError, match='as low as -3 and as high as 77'):
        loss_fn(logits, label)
    sync = ARBLoss(label_check='sync').cuda()
    with pytest.raises(LabelRangeError, match=r'\[-3, 77\]'):
        sync(logits, label)


def test_arb_loss_on_gpu_needs_no_estimator():
    logits = torch.randn(4, 19, device='cuda', requires_grad=True)
    label = torch.tensor([0, 1, 1, 255], device='cuda')
    counts = torch.tensor([1.0, 2.0] + [0.0] * 17, device='cuda')
    loss = arb_loss(logits, label, counts, avg_non_ignore=True)
    loss.backward()
    assert torch.isfinite(loss) and torch.all(logits.grad[:, 2:] == 0)


def test_count_kernel_replays_in_a_cuda_graph():
    # The benchmark measures the kernel's device time this way, and
    # graph-captured training steps (e.g. torch.compile's reduce-overhead
    # mode) need the op to be capturable: no sync, no host-side state.
    label = long_tailed_labels((4, 256, 256), 150)
    class_histogram(label, 150, 255)  # warm-up: SM count, allocator
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        hist = class_histogram(label, 150, 255)
    label.copy_(long_tailed_labels((4, 256, 256), 150, seed=1))
    graph.replay()
    assert torch.equal(hist, class_histogram_pytorch(label, 150, 255))


@pytest.mark.parametrize('mode', ['batch', 'cumulative', 'ema', 'prior'])
@pytest.mark.parametrize('weight_power', [0.0, 0.5])
def test_a_whole_loss_call_replays_in_a_cuda_graph(mode, weight_power):
    # Count, state update, loss and backward captured once and replayed on
    # new labels and logits: no sync, no host-side state in the way (e.g.
    # torch.compile's reduce-overhead mode, or a captured training step).
    kwargs = dict(class_counts=[float(i + 1) for i in range(150)]) \
        if mode == 'prior' else {}
    kwargs['weight_power'] = weight_power
    graphed = ARBLoss(count_mode=mode, **kwargs).cuda()
    eager = ARBLoss(count_mode=mode, **kwargs).cuda()
    for loss_fn in (graphed, eager):
        loss_fn.estimator.label_guard.read_by_hook = True
    label = long_tailed_labels((2, 64, 64), 150)
    logits = torch.randn(2, 150, 64, 64, device='cuda', requires_grad=True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the capture
        graphed(logits, label).backward()
    torch.cuda.current_stream().wait_stream(stream)
    eager(logits.detach(), label)  # the same state so far
    graph = torch.cuda.CUDAGraph()
    logits.grad = None
    with torch.cuda.graph(graph):
        loss = graphed(logits, label)
        loss.backward()
    for seed in (1, 2):
        label.copy_(long_tailed_labels((2, 64, 64), 150, seed=seed))
        with torch.no_grad():
            logits.normal_()
        graph.replay()
        reference = logits.detach().clone().requires_grad_()
        expected = eager(reference, label)
        expected.backward()
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            logits.grad, reference.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(graphed.estimator.counts,
                                   eager.estimator.counts)


def test_ops_agree_with_their_fake_implementations():
    # torch.library.opcheck runs each op for real and against its fake
    # (torch.compile) implementation, and checks the schema's mutation and
    # aliasing claims and the autograd registration.
    label = long_tailed_labels((2, 33, 17), 19)
    logits = torch.randn(2, 19, 33, 17, device='cuda')
    shift = torch.randn(19, device='cuda')
    weight = torch.rand(19, device='cuda')
    pixel_weight = torch.rand(2, 33, 17, device='cuda')
    _, softmax_stats, scale = torch.ops.mmseg_arb.arb_loss_forward(
        logits, label, shift, weight, None, 255, 'mean', 1.0, False)
    cases = {
        'class_histogram': [(label, 19, 255), (label.to(torch.uint8), 7, 3)],
        'prepare_counts':
        [(class_histogram(label, 19, 255),
          torch.rand(19, dtype=torch.float64,
                     device='cuda'), weight if update else None, mode, 0.1,
          0.5, 0.7, power, 100.0, update, not update, 2)
         for mode in ('batch', 'cumulative', 'ema', 'prior')
         for update in (True, False) for power in (0.0, 0.5)],
        'arb_loss_forward':
        [(logits, label, shift, None, None, 255, 'mean', 1.0, False),
         (logits.half(), label.int(), shift, weight, pixel_weight, 255, 'none',
          0.4, True),
         (logits, label, shift, weight, None, 255, 'mean', 0.4, False,
          torch.rand((), device='cuda') + 100)],
        'arb_loss_backward': [(torch.rand((), device='cuda'), logits, label,
                               shift, weight, None, softmax_stats, scale, 255),
                              (torch.rand(label.shape,
                                          device='cuda'), logits, label, shift,
                               None, pixel_weight, softmax_stats, scale, 255)],
    }
    assert set(cases) == set(SCHEMAS)
    for name, calls in cases.items():
        for args in calls:
            torch.library.opcheck(getattr(torch.ops.mmseg_arb, name), args)


def test_the_first_use_check_passes_on_this_gpu(monkeypatch):
    # Each dtype's first fused call on the GPU is checked once against
    # float64; right kernels keep serving.
    monkeypatch.setattr(first_use, '_verdicts', {})
    warnings = []
    monkeypatch.setattr(cuda_ext, '_log', warnings.append)
    label = long_tailed_labels((2, 33, 17), 19)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        logits = torch.randn(2, 19, 33, 17, device='cuda', dtype=dtype)
        assert cuda_ext.cuda_ops_apply(logits)
        arb_loss(logits.requires_grad_(), label,
                 torch.ones(19, dtype=torch.float64)).backward()
    device = torch.device('cuda', torch.cuda.current_device())
    assert first_use._verdicts == {
        (device, dtype): True
        for dtype in (torch.float32, torch.float16, torch.bfloat16)
    }
    assert warnings == []
