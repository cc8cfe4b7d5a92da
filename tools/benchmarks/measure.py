"""Timing and memory measurement shared by the benchmark sections.

Timings are medians of repeated runs after warm-up (CUDA events on GPU),
interleaved so that each contender sees the same allocator and cache state.
Peak memory is the growth over the inputs: ``torch.cuda.max_memory_allocated``
on GPU; on CPU the peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``) of a child process in which glibc ``mmap``s every
large block, so that freed memory leaves the RSS.
"""
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

# glibc returns blocks above this size to the OS on free, which makes the
# resident set a faithful measure of live tensors.
MMAP_THRESHOLD = '65536'


def long_tailed_labels(shape: List[int],
                       num_classes: int,
                       device: str,
                       ignore_frac: float = 0.1,
                       seed: int = 0):
    """int64 labels, class k drawn with probability ~ 1/(k+1), a fraction
    ``ignore_frac`` set to 255."""
    g = torch.Generator().manual_seed(seed)
    probs = 1.0 / torch.arange(1, num_classes + 1, dtype=torch.float64)
    n = 1
    for d in shape:
        n *= d
    label = torch.multinomial(probs, n, replacement=True, generator=g)
    label = label.view(shape)
    label[torch.rand(shape, generator=g) < ignore_frac] = 255
    return label.to(device)


def once(fn: Callable, device: str) -> float:
    """Seconds of one ``fn()``: GPU time between CUDA events on GPU."""
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
                      warmup: int) -> Dict[str, List[float]]:
    """Seconds of each ``fn()`` over ``repeats`` turns, the functions
    taking turns."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(once(fn, device))
    return times


def medians(times: Dict[str, List[float]]) -> Dict[str, float]:
    return {name: statistics.median(t) for name, t in times.items()}


def paired_ratio(times: Dict[str, List[float]], name: str, base: str) -> float:
    """Median over the turns of ``name``'s time over ``base``'s in the same
    turn: robust to a machine whose speed drifts during the run."""
    return statistics.median(a / b for a, b in zip(times[name], times[base]))


def timed_graph(fn: Callable,
                repeats: int,
                calls: int = 20) -> Optional[float]:
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
        once(graph.replay, 'cuda') for _ in range(repeats)) / calls


def host_seconds(fn: Callable, device: str, calls: int = 50) -> float:
    """Median host seconds to issue one ``fn()`` (on GPU: its launch cost,
    the device queue drained before each call so that nothing waits)."""
    samples = []
    for _ in range(calls):
        if device == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def device_activities(fn: Callable) -> int:
    """What the GPU ran for one ``fn()`` (profiler): kernels, memsets and
    copies, each a launch the host paid for."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA)


def _cpu_status(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


def peak_bytes(fn: Callable, device: str) -> int:
    """Memory growth over the current level while ``fn()`` runs (on CPU:
    only meaningful under ``MALLOC_MMAP_THRESHOLD_``, see
    :func:`cpu_peak_in_child`)."""
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


def cpu_peak_in_child(name: str) -> int:
    """Peak bytes of one CPU step of contender ``name``, measured by this
    benchmark re-run as a child (``--memory-probe``) whose glibc returns
    freed blocks to the OS at once."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
    out = subprocess.run(
        [sys.executable] + sys.argv + ['--memory-probe', name],
        env=env,
        capture_output=True,
        text=True,
        check=True)
    return int(out.stdout.strip().splitlines()[-1])
