"""Install mmseg-arb.

mmcv is deliberately not in ``install_requires``: mmcv 2.1.x with compiled ops
is a source build that pip would attempt in an isolated environment without
torch. Install it first (``tools/setup_env.sh`` does, or follow
OpenMMLab's mmcv instructions for your CUDA/torch pair).

The CUDA kernels (``mmseg_arb/ops/csrc``) are compiled here when torch sees a
GPU and a CUDA toolkit is found; ``MMSEG_ARB_WITH_CUDA=1`` (or mmcv's
``FORCE_CUDA=1``) forces the build, e.g. on a GPU-less build node, and
``MMSEG_ARB_WITH_CUDA=0`` skips it. The build targets the visible GPUs, or
``TORCH_CUDA_ARCH_LIST``; on a node without a GPU, by default, every
architecture the installed torch was built for that nvcc can compile. GPUs
older than compute capability 7.0 (Volta) are left out, with one line
saying so; they use the PyTorch path. Use
``pip install --no-build-isolation`` so that the build sees your torch.
Without a build the kernels are JIT-compiled on first GPU use (see
``mmseg_arb/ops/cuda_ext.py``).
"""
import importlib.util
import os
import os.path as osp
import shutil
import subprocess
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


def read_version() -> str:
    scope: dict = {}
    with open(osp.join('mmseg_arb', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def _load_cuda_arch():
    """``mmseg_arb/ops/cuda_arch.py``, loaded by its path: the package
    cannot be imported before it is installed, and the JIT build shares
    these rules."""
    path = osp.join(
        osp.dirname(osp.abspath(__file__)), 'mmseg_arb', 'ops', 'cuda_arch.py')
    spec = importlib.util.spec_from_file_location('_mmseg_arb_cuda_arch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_cuda_arch = _load_cuda_arch()
default_cuda_arch_list = _cuda_arch.default_cuda_arch_list
cuda_arch_list = _cuda_arch.cuda_arch_list


def _set_arch_list(torch, cuda_home: str) -> bool:
    """Set ``TORCH_CUDA_ARCH_LIST`` for the build; False if no architecture
    is left to build for."""
    requested = os.getenv('TORCH_CUDA_ARCH_LIST')
    visible = {
        '{}.{}'.format(*torch.cuda.get_device_capability(i))
        for i in range(torch.cuda.device_count())
    } if torch.cuda.is_available() else set()
    torch_archs = nvcc_archs = ''
    if requested is None and not visible:
        torch_archs = torch._C._cuda_getArchFlags()
        nvcc_archs = subprocess.run(
            [osp.join(cuda_home, 'bin', 'nvcc'), '--list-gpu-arch'],
            capture_output=True,
            text=True,
            check=True).stdout
    arch_list, line = cuda_arch_list(requested, visible, torch_archs,
                                     nvcc_archs)
    if line:
        print(line)
    if arch_list is None:
        return False
    os.environ['TORCH_CUDA_ARCH_LIST'] = arch_list
    return True


class BuildPyWithConfigs(build_py):
    """``build_py`` that also puts the top-level ``configs/`` into the built
    package as ``mmseg_arb/.mim/configs``, OpenMMLab's layout, so that a
    wheel or a non-editable install carries them (``mmseg-arb list``).

    The copy goes to the build directory only, never into the source tree,
    and replaces any earlier copy there, so a config deleted from
    ``configs/`` does not linger in the next wheel. An editable install
    needs no copy: the package finds ``configs/`` beside it.
    """

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False) or not osp.isdir('configs'):
            return
        target = osp.join(self.build_lib, 'mmseg_arb', '.mim', 'configs')
        if osp.isdir(target):
            shutil.rmtree(target)
        shutil.copytree(
            'configs',
            target,
            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


def cuda_build_options() -> dict:
    """``ext_modules`` and ``cmdclass`` of the CUDA extension, if built."""
    flag = os.getenv('MMSEG_ARB_WITH_CUDA',
                     '1' if os.getenv('FORCE_CUDA') == '1' else 'auto')
    if flag == '0':
        return {}
    try:
        import torch
        from torch.utils.cpp_extension import (CUDA_HOME, BuildExtension,
                                               CUDAExtension)
    except ImportError:
        if flag == '1':
            raise
        return {}
    if flag == 'auto' and not (torch.cuda.is_available() and CUDA_HOME):
        return {}
    if torch.version.cuda is None:
        raise RuntimeError(f'MMSEG_ARB_WITH_CUDA=1 but torch '
                           f'{torch.__version__} is a CPU build: install a '
                           f'CUDA build of torch first')
    if CUDA_HOME is None:
        raise RuntimeError('MMSEG_ARB_WITH_CUDA=1 but no CUDA toolkit found')
    if not _set_arch_list(torch, CUDA_HOME):
        if flag == '1':
            raise RuntimeError('MMSEG_ARB_WITH_CUDA=1 but no GPU '
                               'architecture to build for is 7.0 or newer')
        return {}
    csrc = osp.join('mmseg_arb', 'ops', 'csrc')
    extension = CUDAExtension(
        'mmseg_arb._ext',
        sources=[
            osp.join(csrc, 'binding.cpp'),
            osp.join(csrc, 'arb_kernels.cu')
        ],
        extra_compile_args={
            'cxx': ['-O3'],
            'nvcc': ['-O3', '-std=c++17']
        })
    return {
        'ext_modules': [extension],
        'cmdclass': {
            'build_ext': BuildExtension
        }
    }


if __name__ == '__main__':  # as pip and setuptools run it; tests import it
    cuda = cuda_build_options()
    setup(
        name='mmseg-arb',
        version=read_version(),
        description='ARB-Loss (Attraction-Repulsion-Balanced Loss) for '
        'MMSegmentation',
        long_description=open('README.md').read()
        if osp.exists('README.md') else '',
        long_description_content_type='text/markdown',
        python_requires='>=3.8',
        packages=find_packages(include=['mmseg_arb', 'mmseg_arb.*']),
        include_package_data=True,
        install_requires=[
            'torch>=2.1',
            'mmengine>=0.10.4,<1.0',
            'mmsegmentation>=1.2.2,<1.3',
            # mmengine 0.10 imports pkg_resources, which setuptools 81
            # removed; torch 2.13 asks for >= 77.
            'setuptools>=77,<81',
            'tqdm',
            'ftfy',
            'regex',
        ],
        extras_require={
            # Cityscapes evaluation and test-server files (mmseg's
            # CityscapesMetric).
            'cityscapes': ['cityscapesscripts>=2.2'],
            'tests': ['pytest'],
        },
        entry_points={'console_scripts': ['mmseg-arb=mmseg_arb.cli:main']},
        license='Apache-2.0',
        zip_safe=False,
        ext_modules=cuda.get('ext_modules', []),
        cmdclass={
            'build_py': BuildPyWithConfigs,
            **cuda.get('cmdclass', {})
        },
    )
