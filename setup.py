"""Install mmseg-arb.

mmcv is deliberately not in ``install_requires``: mmcv 2.1.x with compiled ops
is a source build that pip would attempt in an isolated environment without
torch. Install it first (``tools/setup_env.sh`` does, or follow
OpenMMLab's mmcv instructions for your CUDA/torch pair).

The CUDA kernels (``mmseg_arb/ops/csrc``) are compiled here when torch sees a
GPU and a CUDA toolkit is found; ``MMSEG_ARB_WITH_CUDA=1`` (or mmcv's
``FORCE_CUDA=1``) forces the build, e.g. on a GPU-less build node, and
``MMSEG_ARB_WITH_CUDA=0`` skips it. Use ``pip install --no-build-isolation``
so that the build sees your torch. Without a build the kernels are
JIT-compiled on first GPU use (see ``mmseg_arb/ops/cuda_ext.py``).
"""
import os
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    scope: dict = {}
    with open(osp.join('mmseg_arb', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


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
    if CUDA_HOME is None:
        raise RuntimeError('MMSEG_ARB_WITH_CUDA=1 but no CUDA toolkit found')
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


setup(
    name='mmseg-arb',
    version=read_version(),
    description='ARB-Loss (Attraction-Repulsion-Balanced Loss) for '
    'MMSegmentation',
    long_description=open('README.md').read() if osp.exists('README.md')
    else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.8',
    packages=find_packages(include=['mmseg_arb', 'mmseg_arb.*']),
    include_package_data=True,
    install_requires=[
        'torch>=2.1',
        'mmengine>=0.10.4,<1.0',
        'mmsegmentation>=1.2.2,<1.3',
        'ftfy',
        'regex',
    ],
    extras_require={'tests': ['pytest']},
    license='Apache-2.0',
    zip_safe=False,
    **cuda_build_options(),
)
