"""Benchmark the class counting and ARB-Loss against their baselines.

Prints tables (and writes JSON with ``--json``); every figure is a ratio to a
baseline measured in the same run:

* ``count``: ``class_histogram`` (what the count estimator calls each step:
  the CUDA kernel on GPU) against
  ``torch.bincount(label[label != ignore])`` and
  ``torch.unique(..., return_counts=True)``, for 8x512x512 and 8x1024x1024
  int64 labels and C = 19 and 150, with the achieved bandwidth against the
  device's copy bandwidth (a label-sized device-to-device copy, timed here).
* ``loss``: forward+backward time and peak memory of ``ARBLoss`` (count +
  log-count shift + loss) and of the paper's formula as written (``naive``,
  the (pixels x classes) matrix of ``n_j / n_y`` materialised) against
  mmseg's ``CrossEntropyLoss`` on the same logits.
* ``train`` (needs mmseg): a full DeepLabV3+ R-50 training iteration with
  ARB-Loss against the same iteration with CE (same weights and batch,
  timed in turns; on GPU also peak memory). Where mmcv has no compiled ops
  (``mmcv-lite``), ``--stub-mmcv-ops`` lets mmseg import; the model uses
  none of them.

Timings are medians of repeated runs after warm-up (CUDA events on GPU).
Peak memory is the growth over the inputs during forward+backward:
``torch.cuda.max_memory_allocated`` on GPU; on CPU the peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs``) of a child process in
which glibc ``mmap``s every large block, so that freed memory leaves the RSS
(timings are taken in this process, with the normal allocator).

Usage::

    python tools/benchmark.py --sections loss       # CPU, 2x150x128x128
    python tools/benchmark.py --device cuda --shape 8 150 512 512 \
        --dtype float16 --json bench.json
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch

# glibc returns blocks above this size to the OS on free, which makes the
# resident set a faithful measure of live tensors.
MMAP_THRESHOLD = '65536'
SECTIONS = ('count', 'loss', 'train')


def naive_arb_loss(logits: torch.Tensor, label: torch.Tensor,
                   counts: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """-log(e^{z_y} / sum_j (n_j / n_y) e^{z_j}), mean over all pixels."""
    valid = label != ignore_index
    safe = torch.where(valid, label, 0)
    z = logits.float()
    ratio = counts.float()[None, :, None, None] / \
        counts.float()[safe][:, None]              # (N, C, H, W) weights
    denom = (ratio * z.exp()).sum(1)
    z_y = z.gather(1, safe[:, None])[:, 0]
    loss = -(z_y.exp() / denom).log()
    return torch.where(valid, loss, 0.0).sum() / label.numel()


def long_tailed_labels(shape: List[int], num_classes: int, device: str,
                       ignore_frac: float = 0.1, seed: int = 0):
    """int64 labels, class k drawn with probability ~ 1/(k+1), 10% ignored."""
    g = torch.Generator().manual_seed(seed)
    probs = 1.0 / torch.arange(1, num_classes + 1, dtype=torch.float64)
    n = 1
    for d in shape:
        n *= d
    label = torch.multinomial(probs, n, replacement=True, generator=g)
    label = label.view(shape)
    label[torch.rand(shape, generator=g) < ignore_frac] = 255
    return label.to(device)


def _once(fn: Callable, device: str) -> float:
    if device == 'cuda':
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed_interleaved(fns: Dict[str, Callable], device: str, repeats: int,
                      warmup: int) -> Dict[str, float]:
    """Median seconds of each ``fn()``, CUDA events on GPU. The functions
    take turns, so that each sees the same allocator and cache state."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_once(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}


def timed(fn: Callable, device: str, repeats: int, warmup: int) -> float:
    """Median seconds of ``fn()``."""
    return timed_interleaved({'fn': fn}, device, repeats, warmup)['fn']


def timed_graph(fn: Callable, repeats: int, calls: int = 20
                ) -> Optional[float]:
    """Median GPU seconds of one ``fn()`` replayed from a CUDA graph of
    ``calls`` back-to-back calls: the device time alone, without the
    Python and launch overhead that a single eager call adds. None if
    ``fn`` cannot be captured (e.g. it synchronises)."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
    except RuntimeError as e:
        print(f'  (no CUDA graph: {str(e).splitlines()[0]})')
        return None
    graph.replay()
    return statistics.median(
        _once(graph.replay, 'cuda') for _ in range(repeats)) / calls


def _cpu_status(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


def peak_bytes(fn: Callable, device: str) -> int:
    """Memory growth over the current level while ``fn()`` runs (on CPU:
    only meaningful under ``MALLOC_MMAP_THRESHOLD_``, see :func:`cpu_peak`).
    """
    if device == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = _cpu_status('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak RSS (VmHWM) to the current RSS
    fn()
    return _cpu_status('VmHWM') - base


# ----------------------------------------------------------------- count


def bench_count(args: argparse.Namespace) -> Dict:
    from mmseg_arb.ops import class_histogram
    # 8M-element unique() takes seconds on a CPU: fewer repeats there.
    repeats = args.repeats if args.device == 'cuda' else min(args.repeats, 3)
    results = []
    for shape in ([8, 512, 512], [8, 1024, 1024]):
        copy_src = long_tailed_labels(shape, 19, args.device)
        copy_dst = torch.empty_like(copy_src)
        nbytes = copy_src.numel() * copy_src.element_size()

        def copy():
            copy_dst.copy_(copy_src)

        t_copy = timed(copy, args.device, repeats, args.warmup)
        if args.device == 'cuda':  # device time, as for the kernel below
            t_copy = timed_graph(copy, repeats) or t_copy
        copy_bw = 2 * nbytes / t_copy  # read + write
        for num_classes in (19, 150):
            label = long_tailed_labels(shape, num_classes, args.device)
            methods = {
                'class_histogram':
                lambda: class_histogram(label, num_classes, 255),
                'bincount':
                lambda: torch.bincount(label[label != 255],
                                       minlength=num_classes),
                'unique':
                lambda: torch.unique(label[label != 255],
                                     return_counts=True),
            }
            times = timed_interleaved(methods, args.device, repeats, 1)
            # Bandwidth from device time (a graph replay) where possible;
            # the speed-ups compare the eager calls a training step makes.
            t_kernel = (timed_graph(methods['class_histogram'], repeats)
                        if args.device == 'cuda' else None)
            t_bw = t_kernel or times['class_histogram']
            results.append({
                'shape': shape,
                'num_classes': num_classes,
                'times_s': times,
                'device_time_s': t_kernel,
                'speedup_vs_bincount':
                times['bincount'] / times['class_histogram'],
                'speedup_vs_unique':
                times['unique'] / times['class_histogram'],
                'bandwidth_GBps': nbytes / t_bw / 1e9,
                'copy_bandwidth_GBps': copy_bw / 1e9,
                'fraction_of_copy_bandwidth': nbytes / t_bw / copy_bw,
            })
    return {'count': results}


def print_count(rows: List[Dict]) -> None:
    print('\nclass counting, int64 labels (10% ignored), median ms per call '
          '(eager); GB/s from device time (CUDA graph) on GPU')
    print(f"{'labels':<16}{'C':>5}{'count':>9}{'device':>9}{'bincount':>10}"
          f"{'unique':>9}{'x bincnt':>10}{'x unique':>10}{'GB/s':>8}"
          f"{'of copy':>9}")
    for r in rows:
        t = r['times_s']
        device = r['device_time_s']
        print(f"{'x'.join(map(str, r['shape'])):<16}{r['num_classes']:>5}"
              f"{t['class_histogram'] * 1e3:>9.3f}"
              f"{device * 1e3 if device else float('nan'):>9.3f}"
              f"{t['bincount'] * 1e3:>10.3f}"
              f"{t['unique'] * 1e3:>9.3f}{r['speedup_vs_bincount']:>10.2f}"
              f"{r['speedup_vs_unique']:>10.2f}{r['bandwidth_GBps']:>8.1f}"
              f"{r['fraction_of_copy_bandwidth']:>9.0%}")


# ------------------------------------------------------------------ loss


def mmseg_ce_or_equivalent() -> Callable:
    """mmseg's CrossEntropyLoss (default settings), or, where mmseg cannot
    be imported (a bare GPU machine without mmcv), the same computation:
    ``F.cross_entropy(reduction='none')`` summed over ``numel + eps``."""
    try:
        from mmseg.models.losses import CrossEntropyLoss
    except ImportError:
        import torch.nn.functional as F
        eps = torch.finfo(torch.float32).eps
        print('baseline: mmseg not importable, using its computation '
              '(F.cross_entropy + sum / numel)')
        return lambda z, y, ignore_index: F.cross_entropy(
            z, y, reduction='none', ignore_index=ignore_index).sum() / (
                y.numel() + eps)
    with warnings.catch_warnings():  # CE's note on its avg_non_ignore default
        warnings.simplefilter('ignore')
        return CrossEntropyLoss()


def build_losses(ignore_index: int) -> Dict[str, Callable]:
    from mmseg_arb.models.losses import ARBLoss
    from mmseg_arb.ops import class_histogram

    ce = mmseg_ce_or_equivalent()
    arb = ARBLoss()

    def naive(logits, label):
        counts = class_histogram(label, logits.shape[1],
                                 ignore_index)[:logits.shape[1]]
        return naive_arb_loss(logits, label, counts, ignore_index)

    return {
        'CrossEntropyLoss': lambda z, y: ce(z, y, ignore_index=ignore_index),
        'ARBLoss': lambda z, y: arb.to(z.device)(z, y,
                                                 ignore_index=ignore_index),
        'naive': naive,
    }


def loss_steps(args: argparse.Namespace) -> Dict[str, Callable]:
    """A forward+backward closure per loss, on the same inputs."""
    dtype = getattr(torch, args.dtype)
    n, c, h, w = args.shape
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(args.shape, generator=g).to(args.device, dtype)
    label = long_tailed_labels([n, h, w], c, args.device)
    steps = {}
    for name, fn in build_losses(255).items():
        if name == 'naive' and args.skip_naive:
            continue

        def step(fn=fn):
            z = logits.detach().requires_grad_()
            fn(z, label).backward()

        steps[name] = step
    return steps


def cpu_peak(name: str) -> int:
    """Peak bytes of one CPU step of loss ``name``, measured in a child
    process whose glibc returns freed blocks to the OS at once."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
    out = subprocess.run(
        [sys.executable] + sys.argv + ['--memory-probe', name],
        env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def bench_loss(args: argparse.Namespace) -> Dict:
    steps = loss_steps(args)
    times = timed_interleaved(steps, args.device, args.repeats, args.warmup)
    results = {}
    for name, step in steps.items():
        results[name] = {
            'time_s': times[name],
            'peak_bytes': peak_bytes(step, args.device)
            if args.device == 'cuda' else cpu_peak(name),
        }
    base = results['CrossEntropyLoss']
    for r in results.values():
        r['time_ratio'] = r['time_s'] / base['time_s']
        # None where the baseline's growth is below what can be measured.
        r['memory_ratio'] = (r['peak_bytes'] / base['peak_bytes']
                             if base['peak_bytes'] > 0 else None)
    return {'loss': results, 'loss_shape': args.shape,
            'loss_dtype': args.dtype}


def print_loss(report: Dict) -> None:
    print(f"\nloss fwd+bwd, logits {'x'.join(map(str, report['loss_shape']))}"
          f" {report['loss_dtype']}, median times, peak = growth over inputs")
    print(f"{'loss':<18}{'time ms':>10}{'peak MiB':>11}"
          f"{'time/CE':>10}{'mem/CE':>9}")
    for name, r in report['loss'].items():
        print(f"{name:<18}{r['time_s'] * 1e3:>10.2f}"
              f"{r['peak_bytes'] / 2**20:>11.1f}"
              f"{r['time_ratio']:>10.2f}{_ratio(r['memory_ratio']):>9}")
    arb = report['loss']['ARBLoss']
    naive = report['loss'].get('naive')
    print(f"ARB/CE time ratio {arb['time_ratio']:.2f}, memory ratio "
          f"{_ratio(arb['memory_ratio'])}" +
          (f"; naive/CE time ratio {naive['time_ratio']:.2f}, memory ratio "
           f"{_ratio(naive['memory_ratio'])}" if naive else ''))


def _ratio(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{value:.2f}'


# ----------------------------------------------------------------- train


def stub_missing_mmcv_ops() -> bool:
    """Let mmseg import where mmcv has no compiled ops (``mmcv-lite``, e.g.
    carried to a bare GPU machine): ``mmcv.ops`` becomes a module whose every
    name is a placeholder class that raises when called. The model timed
    here uses none of them, so a placeholder that is ever reached fails the
    run instead of changing what is measured. True if stubbed."""
    try:
        import mmcv
    except ImportError:
        return False  # no mmcv at all: nothing to help
    try:
        import mmcv.ops  # noqa: F401
        return False
    except ImportError:
        pass
    import types

    def placeholder(name: str) -> type:
        def refuse(cls, *args, **kwargs):
            raise RuntimeError(f'mmcv.ops.{name} was reached, but this mmcv '
                               f'has no compiled ops (stubbed by benchmark)')
        return type(name, (), {'__new__': refuse})

    def missing(name: str) -> type:
        if name.startswith('__'):
            raise AttributeError(name)
        return placeholder(name)

    ops = types.ModuleType('mmcv.ops', 'placeholders (no compiled ops)')
    ops.__getattr__ = missing
    sys.modules['mmcv.ops'] = ops
    mmcv.ops = ops
    return True


def _deeplabv3plus(cfg_path: str, use_arb: bool, device: str):
    """DeepLabV3+ R-50 from mmseg's config, BN instead of SyncBN, no
    pretrained weights; with ARB-Loss in both heads if ``use_arb``."""
    from mmengine.config import Config
    from mmseg.registry import MODELS

    from mmseg_arb.utils.switch_config import switch_to_arb
    model_cfg = Config.fromfile(cfg_path).model.to_dict()
    model_cfg['pretrained'] = None
    for part in ('backbone', 'decode_head', 'auxiliary_head'):
        model_cfg[part]['norm_cfg'] = dict(type='BN', requires_grad=True)
    if use_arb:
        model_cfg = switch_to_arb(model_cfg)
    return MODELS.build(model_cfg).to(device).train()


def bench_train(args: argparse.Namespace) -> Optional[Dict]:
    """One DeepLabV3+ R-50 training iteration (fwd, bwd, SGD step), ARB
    against CE: same weights, same batch, timed in turns."""
    try:
        import mmseg
        from mmengine.registry import init_default_scope
        import mmseg.models  # noqa: F401  needs mmcv.ops
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
    except ImportError as e:
        print(f'train section skipped ({type(e).__name__}: {e}); with '
              f'mmcv-lite, add --stub-mmcv-ops')
        return None
    init_default_scope('mmseg')
    cfg_path = os.path.join(
        os.path.dirname(mmseg.__file__), '.mim', 'configs', 'deeplabv3plus',
        'deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py')
    n, h, w = args.train_shape
    torch.manual_seed(0)
    with warnings.catch_warnings():  # CE's note on its avg_non_ignore default
        warnings.simplefilter('ignore')
        ce = _deeplabv3plus(cfg_path, False, args.device)
        arb = _deeplabv3plus(cfg_path, True, args.device)
    missing, unexpected = arb.load_state_dict(ce.state_dict(), strict=False)
    assert not unexpected and all('estimator' in k for k in missing), \
        (missing, unexpected)
    inputs = torch.randn(n, 3, h, w, device=args.device)
    samples = []
    for i in range(n):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=long_tailed_labels([1, h, w], 150, args.device, seed=i))
        sample.set_metainfo(dict(img_shape=(h, w), pad_shape=(h, w)))
        samples.append(sample)

    def make_step(model):
        optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            optim.zero_grad(set_to_none=True)
            losses = model.loss(inputs, samples)
            sum(v for k, v in losses.items() if 'loss' in k).backward()
            optim.step()

        return step

    steps = {'CrossEntropyLoss': make_step(ce), 'ARBLoss': make_step(arb)}
    times = timed_interleaved(steps, args.device, args.repeats, args.warmup)
    report = {'times_s': times, 'shape': [n, 3, h, w],
              'time_ratio': times['ARBLoss'] / times['CrossEntropyLoss']}
    if args.device == 'cuda':
        peaks = {name: peak_bytes(step, 'cuda')
                 for name, step in steps.items()}
        report['peak_bytes'] = peaks
        report['memory_ratio'] = peaks['ARBLoss'] / peaks['CrossEntropyLoss']
    return {'train': report}


def print_train(report: Dict) -> None:
    r = report['train']
    t = r['times_s']
    print(f"\nDeepLabV3+ R-50 training iteration (fwd, bwd, SGD), input "
          f"{'x'.join(map(str, r['shape']))}, 150 classes, median times")
    print(f"CE {t['CrossEntropyLoss'] * 1e3:.1f} ms, ARB "
          f"{t['ARBLoss'] * 1e3:.1f} ms, ARB/CE time "
          f"{r['time_ratio']:.3f}" +
          (f", peak memory ARB/CE {r['memory_ratio']:.3f}"
           if 'memory_ratio' in r else ''))


# ------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--sections', nargs='+', choices=SECTIONS,
                        help='default: all on cuda; count and loss on cpu')
    parser.add_argument('--shape', type=int, nargs=4,
                        default=[2, 150, 128, 128],
                        metavar=('N', 'C', 'H', 'W'),
                        help='logits of the loss section')
    parser.add_argument('--dtype', default='float32',
                        choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--skip-naive', action='store_true')
    parser.add_argument('--train-shape', type=int, nargs=3,
                        default=[4, 512, 512], metavar=('N', 'H', 'W'),
                        help='input batch of the train section (default: '
                        "the 4xb4 config's per-GPU batch)")
    parser.add_argument('--stub-mmcv-ops', action='store_true',
                        help='import mmseg even where mmcv has no compiled '
                        'ops (mmcv-lite): the CE baseline and the train '
                        'section then use mmseg itself')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--memory-probe', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sections is None:
        args.sections = list(SECTIONS) if args.device == 'cuda' else \
            ['count', 'loss']
    return args


def main() -> None:
    args = parse_args()
    stubbed = args.stub_mmcv_ops and stub_missing_mmcv_ops()
    import mmseg_arb  # noqa: F401
    if args.memory_probe:  # child of cpu_peak(): one measurement, printed
        step = loss_steps(args)[args.memory_probe]
        step()  # warm-up
        print(peak_bytes(step, 'cpu'))
        return
    from mmseg_arb.ops import cuda_ops_status, load_cuda_ops
    if stubbed:
        print('mmcv has no compiled ops here: mmcv.ops stubbed (neither '
              "mmseg's CrossEntropyLoss nor DeepLabV3+ R-50 uses them)")
    if args.device == 'cuda':
        load_cuda_ops()
    report = {
        'device': args.device,
        'device_name': (torch.cuda.get_device_name() if args.device == 'cuda'
                        else platform.processor() or platform.machine()),
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'cuda_ops': cuda_ops_status(),
        'repeats': args.repeats,
    }
    print(f"{report['device_name']} ({args.device}), torch {report['torch']},"
          f" {report['threads']} threads, CUDA ops: {report['cuda_ops']}")
    printers = {'count': print_count, 'loss': print_loss,
                'train': print_train}
    for section in args.sections:
        part = {'count': bench_count, 'loss': bench_loss,
                'train': bench_train}[section](args)
        if part is None:
            continue
        report.update(part)
        printers[section](part['count'] if section == 'count' else part)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
