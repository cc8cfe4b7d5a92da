"""``mmseg-arb check``: the kernels of this machine against the PyTorch path
and float64, one PASS / FAIL line per check (see
:mod:`mmseg_arb.ops.self_check`)."""
import argparse
from typing import List

from ..ops import self_check
from .command import Command


def run_check(args: argparse.Namespace, argv: List[str]) -> int:
    print(self_check.machine(), flush=True)
    failed = 0
    for result in self_check.run_checks():
        print(result.line(), flush=True)
        failed += not result.passed
    print(f'{failed} check(s) failed' if failed else 'all checks passed')
    return 1 if failed else 0


COMMAND = Command(
    'check', 'check the CUDA kernels (or, without a GPU, the '
    'PyTorch path) of this machine against float64 and fp32 '
    'cross-entropy', lambda parser: None, run_check)
