"""Benchmark the class counting and ARB-Loss against their baselines.

Every figure is a ratio to a baseline measured in the same run, or a limit
measured in it; each section lives in its own module of
``tools/benchmarks/``:

* ``count`` (``benchmarks/count.py``): the class histogram against
  ``torch.bincount`` and ``torch.unique``;
* ``loss`` (``benchmarks/loss.py``): one ARBLoss call forward + backward
  against mmseg's CrossEntropyLoss, ``F.cross_entropy``, compiled
  cross-entropy and the naive formula; on GPU with launches, host time and
  the bandwidth limit;
* ``train`` (``benchmarks/train.py``): a DeepLabV3+ R-50 training iteration
  with ARB against CE.

Usage::

    python tools/benchmark.py --sections loss       # CPU, 2x150x128x128
    python tools/benchmark.py --device cuda --shape 8 150 512 512 \\
        --dtype bfloat16 --json bench.json
"""
import argparse
import json
import os.path as osp
import platform
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmarks import count, loss, train  # noqa: E402

SECTIONS = {'count': count, 'loss': loss, 'train': train}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument(
        '--sections',
        nargs='+',
        choices=list(SECTIONS),
        help='default: all on cuda; count and loss on cpu')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=4,
        default=[2, 150, 128, 128],
        metavar=('N', 'C', 'H', 'W'),
        help='logits of the loss section')
    parser.add_argument(
        '--dtype',
        default='float32',
        choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--skip-naive', action='store_true')
    parser.add_argument(
        '--compiled',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='include torch.compile\'d '
        'cross-entropy (default: on cuda only; on a CPU '
        'its compile takes minutes)')
    parser.add_argument(
        '--train-shape',
        type=int,
        nargs=3,
        default=[4, 512, 512],
        metavar=('N', 'H', 'W'),
        help='input batch of the train section (default: '
        "the 4xb4 config's per-GPU batch)")
    parser.add_argument(
        '--stub-mmcv-ops',
        action='store_true',
        help='import mmseg even where mmcv has no compiled '
        'ops (mmcv-lite): the CE baseline and the train '
        'section then use mmseg itself')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--memory-probe', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sections is None:
        args.sections = list(SECTIONS) if args.device == 'cuda' else \
            ['count', 'loss']
    if args.compiled is None:
        args.compiled = args.device == 'cuda'
    return args


def main() -> None:
    args = parse_args()
    stubbed = args.stub_mmcv_ops and train.stub_missing_mmcv_ops()
    import mmseg_arb  # noqa: F401
    if args.memory_probe:  # a child of measure.cpu_peak_in_child
        step = loss.steps(args)[args.memory_probe]
        step()  # warm-up
        print(loss.peak_bytes(step, 'cpu'))
        return
    from mmseg_arb.ops import cuda_ops_status, load_cuda_ops
    if stubbed:
        print('mmcv has no compiled ops here: mmcv.ops stubbed (neither '
              "mmseg's CrossEntropyLoss nor DeepLabV3+ R-50 uses them)")
    if args.device == 'cuda':
        load_cuda_ops()
    report = {
        'device':
        args.device,
        'device_name': (torch.cuda.get_device_name() if args.device == 'cuda'
                        else platform.processor() or platform.machine()),
        'torch':
        torch.__version__,
        'threads':
        torch.get_num_threads(),
        'cuda_ops':
        cuda_ops_status(),
        'repeats':
        args.repeats,
    }
    print(f"{report['device_name']} ({args.device}), torch {report['torch']},"
          f" {report['threads']} threads, CUDA ops: {report['cuda_ops']}")
    for name in args.sections:
        part = SECTIONS[name].run(args)
        if part is not None:
            report.update(part)
            SECTIONS[name].show(part)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
