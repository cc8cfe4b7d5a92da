"""Loading the CUDA kernels: built at install, else JIT-compiled, else none.

The operators themselves are defined in :mod:`mmseg_arb.ops.library`; the
extension adds their CUDA kernels. Order of attempts, the first time a CUDA
tensor reaches an op:

1. ``mmseg_arb._ext``, built by ``pip install`` when a CUDA toolkit and a
   CUDA-enabled torch were present (``MMSEG_ARB_WITH_CUDA=1`` forces the
   build, ``=0`` skips it).
2. A JIT build with ``torch.utils.cpp_extension.load``, cached by torch in
   ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), so
   only the first run on a machine pays the compile (about a minute).
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
    supported = sorted({
        '{}.{}'.format(*torch.cuda.get_device_capability(i))
        for i in range(torch.cuda.device_count())
        if torch.cuda.get_device_capability(i) >= MIN_CAPABILITY
    })
    if requested is None and supported:
        # torch would build for every visible GPU, an old one included,
        # which would fail the build for all of them.
        os.environ['TORCH_CUDA_ARCH_LIST'] = ';'.join(supported)
    try:
        load(
            name='mmseg_arb_cuda',
            sources=SOURCES,
            extra_cflags=['-O3'],
            extra_cuda_cflags=['-O3', '-std=c++17'],
            is_python_module=False,
            verbose=os.environ.get('MMSEG_ARB_VERBOSE_BUILD') == '1')
    finally:
        if requested is None:
            os.environ.pop('TORCH_CUDA_ARCH_LIST', None)


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


# Compute capability the kernels need (__match_any_sync, independent
# thread scheduling); setup.py builds for no older GPU.
MIN_CAPABILITY = (7, 0)
_old_devices: dict = {}


def _device_supported(index: int) -> bool:
    """Whether CUDA device ``index`` is new enough; an older one is said
    once and served by the PyTorch path."""
    if index not in _old_devices:
        capability = torch.cuda.get_device_capability(index)
        _old_devices[index] = capability < MIN_CAPABILITY
        if _old_devices[index]:
            _log(f'mmseg_arb: {torch.cuda.get_device_name(index)} (cuda:'
                 f'{index}) has compute capability {capability[0]}.'
                 f'{capability[1]}; the CUDA kernels need 7.0 (Volta) or '
                 f'newer, so ARB-Loss uses the PyTorch path on it.')
    return not _old_devices[index]


def cuda_ops_apply(tensor: Tensor) -> bool:
    """Whether ops on ``tensor`` run on the CUDA kernels: it is a CUDA
    tensor on a GPU they support and the kernels are loaded. (The one
    switch between the kernels and the PyTorch path; the tests turn it on
    for ``meta`` tensors.)"""
    return tensor.is_cuda and _device_supported(tensor.device.index or 0) \
        and load_cuda_ops()


def cuda_ops_status() -> str:
    """Where the CUDA ops come from, or why they are not used."""
    return _state['reason']
