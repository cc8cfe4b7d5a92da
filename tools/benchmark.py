"""Benchmark ARB-Loss against mmseg's CrossEntropyLoss and the naive formula.

Prints a table (and writes JSON with ``--json``) of forward+backward time and
peak memory, each as a ratio to mmseg's ``CrossEntropyLoss`` measured in the
same run on the same logits:

* ``ARBLoss``: this package (count + log-count shift + loss).
* ``naive``: the paper's formula as written, with the (pixels x classes)
  matrix of ``n_j / n_y`` weights materialised.

Timings are medians of repeated runs after warm-up (CUDA events on GPU).
Peak memory is the growth over the inputs during forward+backward:
``torch.cuda.max_memory_allocated`` on GPU; on CPU the process's peak
resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) with glibc
told to ``mmap`` every large block, so that freed memory leaves the RSS.

Usage::

    python tools/benchmark.py                       # CPU, 2x150x128x128
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
from typing import Callable, Dict, List

import torch

# glibc returns blocks above this size to the OS on free, which makes the
# resident set a faithful measure of live tensors.
MMAP_THRESHOLD = '65536'


def naive_arb_loss(logits: torch.Tensor, label: torch.Tensor,
                   counts: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """-log(e^{z_y} / sum_j (n_j / n_y) e^{z_j}), mean over valid pixels."""
    valid = label != ignore_index
    safe = torch.where(valid, label, 0)
    z = logits.float()
    ratio = counts.float()[None, :, None, None] / \
        counts.float()[safe][:, None]              # (N, C, H, W) weights
    denom = (ratio * z.exp()).sum(1)
    z_y = z.gather(1, safe[:, None])[:, 0]
    loss = -(z_y.exp() / denom).log()
    return torch.where(valid, loss, 0.0).sum() / valid.sum()


def make_inputs(shape: List[int], dtype: torch.dtype, device: str,
                ignore_frac: float = 0.1, seed: int = 0):
    n, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    # A long-tailed label map: class k drawn with probability ~ 1/(k+1).
    probs = 1.0 / torch.arange(1, c + 1, dtype=torch.float64)
    label = torch.multinomial(probs, n * h * w, replacement=True,
                              generator=g).view(n, h, w)
    label[torch.rand(n, h, w, generator=g) < ignore_frac] = 255
    return logits, label.to(device)


def build_losses(ignore_index: int) -> Dict[str, Callable]:
    from mmseg.models.losses import CrossEntropyLoss

    from mmseg_arb.models.losses import ARBLoss
    from mmseg_arb.ops import count_classes

    with warnings.catch_warnings():  # CE's note on its avg_non_ignore default
        warnings.simplefilter('ignore')
        ce = CrossEntropyLoss()
    arb = ARBLoss()

    def naive(logits, label):
        counts, _ = count_classes(label, logits.shape[1], ignore_index)
        return naive_arb_loss(logits, label, counts, ignore_index)

    return {
        'CrossEntropyLoss': lambda z, y: ce(z, y, ignore_index=ignore_index),
        'ARBLoss': lambda z, y: arb(z, y, ignore_index=ignore_index),
        'naive': naive,
    }


def _cpu_status(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


def measure(fn: Callable, logits: torch.Tensor, label: torch.Tensor,
            repeats: int, warmup: int) -> Dict[str, float]:
    """Median fwd+bwd seconds and peak extra bytes of one call of ``fn``."""
    cuda = logits.device.type == 'cuda'

    def step():
        z = logits.detach().requires_grad_()
        fn(z, label).backward()
        return z

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = (torch.cuda.Event(enable_timing=True)
                          for _ in range(2))
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _cpu_status('VmRSS')
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset the peak RSS (VmHWM) to the current RSS
        step()
        peak = _cpu_status('VmHWM') - base
    return {'time_s': statistics.median(times), 'peak_bytes': peak}


def run(args: argparse.Namespace) -> Dict:
    import mmseg_arb  # noqa: F401
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    logits, label = make_inputs(args.shape, dtype, args.device)
    results = {}
    for name, fn in build_losses(args.ignore_index).items():
        if name == 'naive' and args.skip_naive:
            continue
        results[name] = measure(fn, logits, label, args.repeats, args.warmup)
    base = results['CrossEntropyLoss']
    for r in results.values():
        r['time_ratio'] = r['time_s'] / base['time_s']
        r['memory_ratio'] = r['peak_bytes'] / base['peak_bytes']
    device_name = (torch.cuda.get_device_name() if args.device == 'cuda'
                   else platform.processor() or platform.machine())
    return {
        'device': args.device,
        'device_name': device_name,
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'shape': args.shape,
        'dtype': args.dtype,
        'repeats': args.repeats,
        'loss': results,
    }


def print_table(report: Dict) -> None:
    print(f"\nloss fwd+bwd, logits {'x'.join(map(str, report['shape']))} "
          f"{report['dtype']} on {report['device']} "
          f"({report['device_name']}, torch {report['torch']}, "
          f"{report['threads']} threads), median of {report['repeats']}")
    print(f"{'loss':<18}{'time ms':>10}{'peak MiB':>11}"
          f"{'time/CE':>10}{'mem/CE':>9}")
    for name, r in report['loss'].items():
        print(f"{name:<18}{r['time_s'] * 1e3:>10.2f}"
              f"{r['peak_bytes'] / 2**20:>11.1f}"
              f"{r['time_ratio']:>10.2f}{r['memory_ratio']:>9.2f}")
    arb = report['loss']['ARBLoss']
    print(f"\nARB/CE time ratio {arb['time_ratio']:.2f}, "
          f"memory ratio {arb['memory_ratio']:.2f}"
          + (f", naive/CE time ratio "
             f"{report['loss']['naive']['time_ratio']:.2f}"
             if 'naive' in report['loss'] else ''))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--shape', type=int, nargs=4,
                        default=[2, 150, 128, 128], metavar=('N', 'C', 'H', 'W'))
    parser.add_argument('--dtype', default='float32',
                        choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--ignore-index', type=int, default=255)
    parser.add_argument('--skip-naive', action='store_true')
    parser.add_argument('--json', help='also write the results here')
    return parser.parse_args()


def main() -> None:
    # The CPU memory measure needs the allocator setting from process start.
    if os.environ.get('MALLOC_MMAP_THRESHOLD_') != MMAP_THRESHOLD:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
        sys.exit(subprocess.call([sys.executable] + sys.argv, env=env))
    args = parse_args()
    report = run(args)
    print_table(report)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
