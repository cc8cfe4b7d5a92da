"""``count``: what the estimator calls each step, ``class_histogram`` (the
CUDA kernel on GPU), against ``torch.bincount(label[label != ignore])`` and
``torch.unique(..., return_counts=True)``, for 8x512x512 and 16x512x1024
int64 labels and C = 19 and 150; on GPU with the device time of a CUDA
graph replay, its bandwidth, and the limit a label-sized copy sets."""
from typing import Dict, List

import torch

from .measure import (long_tailed_labels, medians, timed_graph,
                      timed_interleaved)

SHAPES = ([8, 512, 512], [16, 512, 1024])


def run(args) -> Dict:
    from mmseg_arb.ops import class_histogram

    # unique() of millions of labels takes seconds on a CPU: few repeats.
    repeats = args.repeats if args.device == 'cuda' else min(args.repeats, 3)
    rows = []
    for shape in SHAPES:
        source = long_tailed_labels(shape, 19, args.device)
        target = torch.empty_like(source)
        nbytes = source.numel() * source.element_size()

        def copy():
            target.copy_(source)

        t_copy = medians(
            timed_interleaved({'copy': copy}, args.device, repeats, 1))['copy']
        if args.device == 'cuda':  # device time, as for the kernel
            t_copy = timed_graph(copy, repeats) or t_copy
        # The kernel reads the labels once: a copy reads and writes them.
        limit = t_copy / 2
        for num_classes in (19, 150):
            label = long_tailed_labels(shape, num_classes, args.device)
            methods = {
                'class_histogram':
                lambda: class_histogram(label, num_classes, 255),
                'bincount':
                lambda: torch.bincount(
                    label[label != 255], minlength=num_classes),
                'unique':
                lambda: torch.unique(label[label != 255], return_counts=True),
            }
            times = medians(
                timed_interleaved(methods, args.device, repeats, 1))
            device = (
                timed_graph(methods['class_histogram'], repeats)
                if args.device == 'cuda' else None)
            kernel = device or times['class_histogram']
            rows.append({
                'shape':
                shape,
                'num_classes':
                num_classes,
                'times_s':
                times,
                'device_time_s':
                device,
                'limit_s':
                limit,
                'speedup_vs_bincount':
                times['bincount'] / times['class_histogram'],
                'speedup_vs_unique':
                times['unique'] / times['class_histogram'],
                'bandwidth_GBps':
                nbytes / kernel / 1e9,
            })
    return {'count': rows}


def show(report: Dict) -> None:
    rows: List[Dict] = report['count']
    print('\nclass counting, int64 labels (10% ignored), median ms per eager '
          'call; device time from a CUDA graph on GPU; limit: reading the '
          'labels at the copy bandwidth measured here')
    print(f"{'labels':<14}{'C':>5}{'count':>9}{'device':>9}{'limit':>8}"
          f"{'bincount':>10}{'unique':>9}{'x bincnt':>10}{'x unique':>10}"
          f"{'GB/s':>8}")
    for r in rows:
        t = r['times_s']
        device = r['device_time_s']
        print(f"{'x'.join(map(str, r['shape'])):<14}{r['num_classes']:>5}"
              f"{t['class_histogram'] * 1e3:>9.3f}"
              f"{device * 1e3 if device else float('nan'):>9.3f}"
              f"{r['limit_s'] * 1e3:>8.3f}{t['bincount'] * 1e3:>10.3f}"
              f"{t['unique'] * 1e3:>9.3f}{r['speedup_vs_bincount']:>10.2f}"
              f"{r['speedup_vs_unique']:>10.2f}{r['bandwidth_GBps']:>8.1f}")
