"""Install mmseg-arb.

mmcv is deliberately not in ``install_requires``: mmcv 2.1.x with compiled ops
is a source build that pip would attempt in an isolated environment without
torch. Install it first (``tools/setup_env.sh`` does, or follow
OpenMMLab's mmcv instructions for your CUDA/torch pair).
"""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    scope: dict = {}
    with open(osp.join('mmseg_arb', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


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
)
