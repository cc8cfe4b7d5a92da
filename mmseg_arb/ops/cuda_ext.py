"""Loading the CUDA kernels: built at install, else JIT-compiled, else none.

The operators themselves are defined in :mod:`mmseg_arb.ops.library`; the
extension adds their CUDA kernels. Order of attempts, the first time a CUDA
tensor reaches an op:

1. ``mmseg_arb._ext``, built by ``pip install`` when a CUDA toolkit and a
   CUDA-enabled torch were present (``MMSEG_ARB_WITH_CUDA=1`` forces the
   build, ``=0`` skips it).
2. A JIT build with ``torch.utils.cpp_extension.load``, cached by torch in
   ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), so
   only the first run on a machine pays the compile (about a minute). As
   at install (:mod:`~mmseg_arb.ops.cuda_arch`), it targets the visible
   GPUs or ``TORCH_CUDA_ARCH_LIST`` without the architectures older than
   7.0, and one line names those it leaves out.
3. Neither possible (no toolkit, a compile error, ``MMSEG_ARB_CUDA=0``):
   the PyTorch implementations are used and one line says so.
"""
import importlib
import logging
import os
import os.path as osp
from typing import Optional

import torch
from torch import Tensor

from .cuda_arch import MIN_ARCH, cuda_arch_list
from .library import has_cuda_kernels

CSRC = osp.join(osp.dirname(__file__), 'csrc')
SOURCES = [osp.join(CSRC, 'binding.cpp'), osp.join(CSRC, 'arb_kernels.cu')]

_state = {'tried': False, 'loaded': False, 'reason': 'not tried yet'}


def _log(message: str) -> None:
    try:
        from mmengine.logging import print_log
        print_log(message, logger='current', level=logging.WARNING)
    except ImportError:  # pragma: no cover - mmengine is a dependency
        logging.getLogger(__name__).warning(message)


def _jit_build() -> None:
    from torch.utils.cpp_extension import CUDA_HOME, load
    if CUDA_HOME is None:
        raise RuntimeError('no CUDA toolkit found (set CUDA_HOME)')
    requested = os.environ.get('TORCH_CUDA_ARCH_LIST')
    # As setup.py: the visible GPUs, or the user's list, without the
    # architectures whose #error would fail the build for all of them.
    arch_list, line = cuda_arch_list(
        requested, {
            '{}.{}'.format(*torch.cuda.get_device_capability(i))
            for i in range(torch.cuda.device_count())
        })
    if line:
        _log(line)
    if arch_list is None:
        raise RuntimeError(
            'no visible GPU has compute capability 7.0 or newer'
            if requested is None else
            f'TORCH_CUDA_ARCH_LIST={requested!r} names no architecture of '
            f'compute capability 7.0 or newer: add one (e.g. "8.0") or '
            f'unset it')
    os.environ['TORCH_CUDA_ARCH_LIST'] = arch_list
    try:
        load(
            name='mmseg_arb_cuda',
            sources=SOURCES,
            extra_cflags=['-O3'],
            extra_cuda_cflags=['-O3', '-std=c++17'],
            is_python_module=False,
            verbose=os.environ.get('MMSEG_ARB_VERBOSE_BUILD') == '1')
    finally:  # the user's variable is theirs
        if requested is None:
            os.environ.pop('TORCH_CUDA_ARCH_LIST', None)
        else:
            os.environ['TORCH_CUDA_ARCH_LIST'] = requested


def load_cuda_ops() -> bool:
    """Make ``torch.ops.mmseg_arb.*`` available; True on success.

    Tried once per process; the outcome is remembered (see
    :func:`cuda_ops_status`).
    """
    if _state['tried']:
        return _state['loaded']
    _state['tried'] = True
    reason: Optional[str] = None
    if os.environ.get('MMSEG_ARB_CUDA', '1') == '0':
        reason = 'disabled by MMSEG_ARB_CUDA=0'
    elif not torch.cuda.is_available():
        reason = 'torch has no CUDA device'
    else:
        try:
            importlib.import_module('mmseg_arb._ext')  # built at install
            _state['reason'] = 'built at install (mmseg_arb._ext)'
        except Exception as e:  # not built, or built for another torch
            installed = '' if isinstance(e, ModuleNotFoundError) else \
                f'mmseg_arb._ext: {type(e).__name__}: {e}; '
            try:
                _jit_build()
                _state['reason'] = f'{installed}JIT-compiled'
            except Exception as e:  # a failed compile must not stop training
                reason = (f'{installed}JIT build failed: '
                          f'{type(e).__name__}: {e}')
    if reason is None and not has_cuda_kernels():
        reason = 'the extension loaded but registered no CUDA kernels'
    if reason is not None:
        _state['reason'] = reason
        _log(f'mmseg_arb: CUDA kernels unavailable ({reason.splitlines()[0]}'
             f'); counting and ARB-Loss use the PyTorch path.')
        return False
    _state['loaded'] = True
    return True


# Whether each CUDA device (by index) is new enough for the kernels.
_device_is_supported: dict = {}


def _device_supported(index: int) -> bool:
    """Whether CUDA device ``index`` is new enough; an older one is said
    once and served by the PyTorch path."""
    if index not in _device_is_supported:
        capability = torch.cuda.get_device_capability(index)
        _device_is_supported[index] = capability >= MIN_ARCH
        if not _device_is_supported[index]:
            _log(f'mmseg_arb: {torch.cuda.get_device_name(index)} (cuda:'
                 f'{index}) has compute capability {capability[0]}.'
                 f'{capability[1]}; the CUDA kernels need 7.0 (Volta) or '
                 f'newer, so ARB-Loss uses the PyTorch path on it.')
    return _device_is_supported[index]


def _kernels_serve(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a CUDA tensor on a GPU the kernels support,
    and the kernels are loaded."""
    return tensor.is_cuda and _device_supported(tensor.device.index or 0) \
        and load_cuda_ops()


def cuda_ops_apply(tensor: Tensor) -> bool:
    """Whether ops on ``tensor`` run on the CUDA kernels: the kernels serve
    its device and, for logits (floating point), the fused loss passed its
    first-use check on that device and dtype
    (:mod:`~mmseg_arb.ops.first_use`). (The one switch between the kernels
    and the PyTorch path; the tests turn it on for ``meta`` tensors.)"""
    if not _kernels_serve(tensor):
        return False
    if tensor.dtype.is_floating_point:
        # Here, not at the top: the guard checks through the ops' modules,
        # which import this one.
        from .first_use import fused_loss_verified
        return fused_loss_verified(tensor.device, tensor.dtype)
    return True


def cuda_ops_status() -> str:
    """Where the CUDA ops come from, or why they are not used."""
    return _state['reason']
