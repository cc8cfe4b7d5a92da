"""Which GPU architectures the CUDA kernels are built for.

Shared by ``setup.py`` (the build at install) and
:mod:`mmseg_arb.ops.cuda_ext` (the JIT build): both drop the entries of a
``TORCH_CUDA_ARCH_LIST`` older than the kernels support, whose ``#error``
would otherwise fail the whole build, and say which. This module imports
nothing from the package (nor torch): ``setup.py`` loads it by its path,
before the package is installed.
"""
import re
from typing import Iterable, List, Optional, Tuple

# __match_any_sync and independent thread scheduling: Volta and newer. Older
# GPUs use the PyTorch path (cuda_ext says so at run time).
MIN_ARCH = (7, 0)
# What the build prints about the architectures it leaves out.
OLD_ARCHS = ('(they need 7.0, Volta, or newer); ARB-Loss uses its PyTorch '
             'path on such GPUs')


def _arch_version(arch: str) -> str:
    """'sm_86' or 'compute_90a' -> '8.6' or '9.0a'."""
    digits, suffix = re.fullmatch(r'[a-z]+_(\d+)([a-z]?)', arch).groups()
    return f'{digits[:-1]}.{digits[-1]}{suffix}'


def _arch_tuple(version: str) -> Tuple[int, int]:
    major, minor = re.match(r'(\d+)\.(\d+)', version).groups()
    return int(major), int(minor)


def supported_archs(arch_list: str) -> Tuple[str, List[str]]:
    """Split a ``TORCH_CUDA_ARCH_LIST`` ('6.1;7.0;8.6+PTX', or with spaces)
    into the entries the kernels support (compute capability >= 7.0), as
    one string, and the list of those they do not (torch's names
    included: 'Pascal' goes, 'Ampere' stays)."""
    kept, dropped = [], []
    for entry in re.split(r'[;\s]+', arch_list.strip()):
        if not entry:
            continue
        if re.match(r'\d+\.\d+', entry):
            old = _arch_tuple(entry) < MIN_ARCH
        else:  # torch's names: Kepler, Maxwell and Pascal are all < 7.0
            old = entry.split('+')[0] in ('Kepler', 'Maxwell', 'Pascal')
        (dropped if old else kept).append(entry)
    return ';'.join(kept), dropped


def default_cuda_arch_list(torch_archs: str, nvcc_archs: str) -> str:
    """``TORCH_CUDA_ARCH_LIST`` for a build that sees no GPU (torch's own
    choice then fails): the architectures the installed torch was built for
    (``torch._C._cuda_getArchFlags()``, e.g. 'sm_75 sm_80 sm_90') that nvcc
    can compile (``nvcc --list-gpu-arch``) and the kernels support (compute
    capability 7.0 and newer), with PTX of the newest for later GPUs."""
    compilable = {_arch_version(a) for a in nvcc_archs.split()}
    wanted = [
        _arch_version(a) for a in torch_archs.split() if a.startswith('sm_')
    ]
    arches = [
        a for a in wanted if a in compilable and _arch_tuple(a) >= MIN_ARCH
    ]
    if not arches:
        raise RuntimeError(
            f'no CUDA architecture of compute capability 7.0 or newer that '
            f'both torch ({torch_archs!r}) and nvcc ({nvcc_archs!r}) '
            f'support: set TORCH_CUDA_ARCH_LIST, e.g. "8.0;9.0"')
    return ';'.join(arches) + '+PTX'


def cuda_arch_list(
        requested: Optional[str],
        visible: Iterable[str],
        torch_archs: str = '',
        nvcc_archs: str = '') -> Tuple[Optional[str], Optional[str]]:
    """The ``TORCH_CUDA_ARCH_LIST`` of the build and the line that says why,
    or ``(None, line)`` if no architecture is left to build for.

    Args:
        requested: The user's ``TORCH_CUDA_ARCH_LIST``, or None.
        visible: Compute capabilities of the visible GPUs ('8.6').
        torch_archs, nvcc_archs: What torch was built for and what nvcc
            compiles; used when neither of the above says anything.
    """
    visible = set(visible)
    if requested is None and not visible:
        arch_list = default_cuda_arch_list(torch_archs, nvcc_archs)
        line = (f'mmseg-arb: no GPU visible, building the CUDA kernels for '
                f'TORCH_CUDA_ARCH_LIST={arch_list} (set it to build for '
                f'fewer)')
        _, dropped = supported_archs(' '.join(
            _arch_version(a) for a in torch_archs.split()
            if a.startswith('sm_')))
        if dropped:
            line += f'; not for {", ".join(dropped)} {OLD_ARCHS}'
        return arch_list, line
    arch_list, dropped = supported_archs(
        requested if requested is not None else ';'.join(sorted(visible)))
    line = None
    if dropped:
        line = (f'mmseg-arb: not building the CUDA kernels for compute '
                f'capability {", ".join(dropped)} {OLD_ARCHS}')
    return arch_list or None, line
