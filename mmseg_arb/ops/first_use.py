"""The first-use guard: the fused loss checks itself before it serves.

The first time logits of a (device, dtype) reach the fused kernels in a
process, :func:`fused_loss_verified` runs them on a small probe against
float64 and fp32 cross-entropy, as ``mmseg-arb check`` does
(:func:`~mmseg_arb.ops.self_check.compare_loss`): eight small fused calls,
their references and a few host reads, once. Kernels that disagree (a
miscompiled build, a driver or hardware fault) are not used for that device
and dtype: one warning names ``mmseg-arb check``, and the loss takes the
PyTorch path there for the rest of the process.
``MMSEG_ARB_FIRST_USE_CHECK=0`` turns the guard off. While
``torch.compile`` traces, a CUDA graph captures or inference mode is on, no
probe can run: the verdict so far holds, and an unverified pair is checked
at its next call outside them.
"""
import os
from typing import Dict, Tuple

import torch

from . import cuda_ext, self_check

ENV = 'MMSEG_ARB_FIRST_USE_CHECK'
# A vector-path and an odd (one pixel a thread) probe; weighted (uint8
# labels, an ignore_index they cannot hold, bad labels) and not.
PROBES = (((2, 19, 16, 8), False), ((1, 19, 5, 7), True))
REDUCTIONS = ('none', 'mean')
# Logits of 10: past the range where any rounding could hide a lost term.
SCALE = 10.0

_verdicts: Dict[Tuple[torch.device, torch.dtype], bool] = {}


def _probe(device: torch.device, dtype: torch.dtype) -> str:
    """What disagrees on ``device`` for ``dtype``; empty if nothing."""
    with torch.autocast(device.type, enabled=False):
        for seed, (shape, weighted) in enumerate(PROBES):
            probe = self_check.make_loss_probe(shape, dtype, SCALE, weighted,
                                               device, seed)
            for reduction in REDUCTIONS:
                for c in self_check.compare_loss(probe, self_check.fused_loss,
                                                 reduction):
                    if not c.passed:
                        return (f'{c.what} of a {"x".join(map(str, shape))} '
                                f'probe: error {c.error:.2g}, fp32 '
                                f'cross-entropy\'s {c.yardstick:.2g}')
    return ''


def fused_loss_verified(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the fused loss may serve logits of ``dtype`` on ``device``:
    checked at the first call of the pair, then remembered."""
    key = (device, dtype)
    verdict = _verdicts.get(key)
    if verdict is not None:
        return verdict
    if os.environ.get(ENV, '1') == '0':
        return True
    if torch.compiler.is_compiling() or \
            torch.is_inference_mode_enabled() or (
                device.type == 'cuda'
                and torch.cuda.is_current_stream_capturing()):
        return True  # unverified: no probe (no autograd) can run here
    # The probe's host reads are deliberate: not reported under
    # torch.cuda.set_sync_debug_mode.
    sync_mode = torch.cuda.get_sync_debug_mode() \
        if device.type == 'cuda' else 0
    try:
        if sync_mode:
            torch.cuda.set_sync_debug_mode(0)
        problem = _probe(device, dtype)
    except Exception as e:  # a kernel that raises has not passed either
        problem = f'{type(e).__name__}: {e}'.splitlines()[0]
    finally:
        if sync_mode:
            torch.cuda.set_sync_debug_mode(sync_mode)
    _verdicts[key] = not problem
    if problem:
        cuda_ext._log(
            f'mmseg_arb: the fused ARB-Loss kernels disagree with float64 '
            f'cross-entropy on {device} for {str(dtype)[6:]} logits '
            f'({problem}); ARB-Loss uses the PyTorch path for them in this '
            f'process. Run `mmseg-arb check` and report its output. '
            f'({ENV}=0 turns this check off.)')
    return not problem
